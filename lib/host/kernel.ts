/**
 * The kernel backend: batches go out as `IOMMU_HWPT_INVALIDATE` on an iommufd, to a nested HWPT (VT-d, selftest)
 * or a vIOMMU (SMMUv3), by object id. One argument struct is reused; nothing is allocated per call.
 *
 * @module
 */
import type { Iommufd } from "../kernel/iommufd.ts";
import { Errno } from "../uapi/errno.ts";
import { FORMAT_SPECS } from "../compile/formats.ts";
import type { Backend, Format, InvalidateStatus } from "./backend.ts";

/**
 * Sends batches to the kernel.
 *
 * @example
 * ```ts ignore
 * import { KernelBackend } from "./kernel.ts";
 * const backend = new KernelBackend(iommufd);
 * const status = { errno: 0, handled: 0 };
 * backend.invalidate(nestedHwptId, "selftest", entries, 1, status);
 * ```
 */
export class KernelBackend implements Backend {
  /** ioctls issued. */
  calls = 0;

  /** A backend that sends every batch as one `IOMMU_HWPT_INVALIDATE` on `iommufd`. */
  constructor(readonly iommufd: Iommufd) {}

  invalidate(targetId: number, format: Format, entries: Uint8Array, count: number, status: InvalidateStatus): void {
    const spec = FORMAT_SPECS[format];
    if (spec.dataType === undefined) {
      // User-space formats (shadow) are served by lib/shadow's backend, never by IOMMU_HWPT_INVALIDATE.
      status.errno = Errno.values.EOPNOTSUPP;
      status.handled = 0;
      return;
    }
    const r = this.iommufd.invalidateRaw(targetId, spec.dataType, entries, spec.entryLength, count);
    this.calls++;
    status.errno = r < 0 ? -r : 0; // never -0: a heap number on the hot path, and not deepEqual to 0
    status.handled = this.iommufd.invalidateHandled;
  }
}
