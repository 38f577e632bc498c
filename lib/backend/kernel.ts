/**
 * The kernel backend: batches go out as `IOMMU_HWPT_INVALIDATE` on an iommufd, to a nested HWPT (VT-d, selftest)
 * or a vIOMMU (SMMUv3), by object id. One argument struct is reused; nothing is allocated per call.
 *
 * @module
 */
import { IOCTL_WITH_POINTER } from "../../ffi/native.ts";
import type { Iommufd } from "../kernel/iommufd.ts";
import { IOMMU_HWPT_INVALIDATE, IommuHwptInvalidate } from "../uapi/mod.ts";
import { SELFTEST_DATA_TYPE, SELFTEST_VIOMMU_DATA_TYPE } from "../compile/selftest.ts";
import { SMMUV3_DATA_TYPE } from "../compile/smmuv3.ts";
import { VTD_DATA_TYPE } from "../compile/vtd.ts";
import { type Backend, ENTRY_LENGTH, type Format, type InvalidateStatus } from "./backend.ts";

/** `data_type` of each format. */
export const DATA_TYPE: Readonly<Record<Exclude<Format, "shadow">, number>> = {
  "vtd-s1": VTD_DATA_TYPE,
  smmuv3: SMMUV3_DATA_TYPE,
  selftest: SELFTEST_DATA_TYPE,
  "selftest-viommu": SELFTEST_VIOMMU_DATA_TYPE,
};

const F = IommuHwptInvalidate.fields;

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
  readonly #args = IommuHwptInvalidate.buffer();
  /** ioctls issued. */
  calls = 0;

  constructor(readonly iommufd: Iommufd) {}

  invalidate(targetId: number, format: Format, entries: Uint8Array, count: number, status: InvalidateStatus): void {
    if (format === "shadow") {
      // Shadow targets are served by lib/shadow's backend, never by IOMMU_HWPT_INVALIDATE.
      status.errno = 95; // EOPNOTSUPP
      status.handled = 0;
      return;
    }
    const v = this.#args.view;
    v.setUint32(F.hwpt_id.offset, targetId, true);
    v.setUint32(F.data_type.offset, DATA_TYPE[format], true);
    v.setUint32(F.entry_len.offset, ENTRY_LENGTH[format], true);
    v.setUint32(F.entry_num.offset, count, true);
    const r = this.iommufd.shim[IOCTL_WITH_POINTER](
      this.iommufd.fd,
      IOMMU_HWPT_INVALIDATE.request,
      this.#args.bytes,
      F.data_uptr.offset,
      entries,
    );
    this.calls++;
    status.errno = r < 0 ? -r : 0;
    status.handled = v.getUint32(F.entry_num.offset, true);
  }
}
