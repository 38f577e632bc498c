/**
 * Shadow mode's host on the kernel: page-granular `IOMMU_IOAS_MAP` (fixed IOVA) of the VMM's guest RAM buffer and
 * `IOMMU_IOAS_UNMAP`, errors as `-errno`.
 *
 * @module
 */
import { KernelError } from "../kernel/errors.ts";
import type { Ioas } from "../kernel/iommufd.ts";
import type { ShadowIoasPort } from "./domain.ts";

/** An IOAS mapping pages of `ram` (the guest's RAM as the VMM holds it: page-aligned, guest-physical 0 at 0). */
export class KernelShadowIoas implements ShadowIoasPort {
  /** ioctls made. */
  calls = 0;
  /** Map subarrays of `ram` into `ioas`. */
  constructor(readonly ioas: Ioas, readonly ram: Uint8Array) {}

  /** `IOMMU_IOAS_MAP` of the guest pages at a fixed IOVA; `-EFAULT` for pages beyond `ram`, `-errno` for a kernel refusal. */
  map(firstPage: number, pages: number, gpaPage: number, read: boolean, write: boolean): number {
    this.calls++;
    if ((gpaPage + pages) * 4096 > this.ram.byteLength) return -14; // EFAULT: not guest RAM
    try {
      this.ioas.map(this.ram.subarray(gpaPage * 4096, (gpaPage + pages) * 4096), {
        iova: BigInt(firstPage) * 4096n, // exact: a guest IOVA may lie above 2^53
        readable: read,
        writable: write,
      });
      return 0;
    } catch (e) {
      if (e instanceof KernelError) return -e.errno;
      throw e;
    }
  }

  /** `IOMMU_IOAS_UNMAP` of the range: 0 or `-errno`. */
  unmap(firstPage: number, pages: number): number {
    this.calls++;
    try {
      this.ioas.unmap(BigInt(firstPage) * 4096n, BigInt(pages) * 4096n);
      return 0;
    } catch (e) {
      if (e instanceof KernelError) return -e.errno;
      throw e;
    }
  }
}
