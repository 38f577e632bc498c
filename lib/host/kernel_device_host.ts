/**
 * The kernel's {@linkcode DeviceHost}: iommufd objects over one IOAS, the relay's batches through
 * {@linkcode KernelBackend}.
 *
 * @module
 */
import { type Format, FORMAT_SPECS } from "../compile/formats.ts";
import { SmmuOpcode } from "../compile/smmuv3.ts";
import { type HwInfo, Hwpt, type Ioas, type Iommufd } from "../kernel/iommufd.ts";
import type { DirtyBitmap } from "../kernel/dirty.ts";
import type { NestedTable } from "../request/request.ts";
import { Errno } from "../uapi/errno.ts";
import {
  HwptAllocFlags,
  HwptDataType,
  IommuHwptArmSmmuv3,
  IommuHwptVtdS1,
  selftestHwptData,
  VtdS1Flags,
} from "../uapi/mod.ts";
import type { DeviceHost, DevicePort, HostObject, HostVdevice } from "./device_host.ts";
import { KernelBackend } from "./kernel.ts";

const F = HwptAllocFlags.values;

/** The SMMUv3 probe: CMD_TLBI_NH_VA, ASID 0, page 0, LEAF. */
const SMMUV3_PROBE = Uint8Array.from({ length: 16 }, (_, i) => (i === 0 ? SmmuOpcode.TLBI_NH_VA : i === 8 ? 1 : 0));

/** The host data of a stage-1 table: `iommu_hwpt_vtd_s1`, `iommu_hwpt_arm_smmuv3` or `iommu_hwpt_selftest`. */
export function hwptData(table: NestedTable): { type: number; bytes: Uint8Array } {
  switch (table.format) {
    case "selftest":
      return selftestHwptData(table.iotlb);
    case "vtd-s1": {
      const f = VtdS1Flags.values;
      const flags = (table.sre ? f.IOMMU_VTD_S1_SRE : 0) | (table.eafe ? f.IOMMU_VTD_S1_EAFE : 0) |
        (table.wpe ? f.IOMMU_VTD_S1_WPE : 0);
      const b = IommuHwptVtdS1.buffer().setU64("flags", flags).setU64("pgtbl_addr", table.tableAddress)
        .set("addr_width", table.addressWidth);
      return { type: HwptDataType.values.IOMMU_HWPT_DATA_VTD_S1, bytes: b.bytes };
    }
    case "smmuv3": {
      const b = IommuHwptArmSmmuv3.buffer().setAt("ste", 0, table.ste[0]).setAt("ste", 1, table.ste[1]);
      return { type: HwptDataType.values.IOMMU_HWPT_DATA_ARM_SMMUV3, bytes: b.bytes };
    }
  }
}

/**
 * Device-layer calls as iommufd ioctls.
 *
 * @example
 * ```ts ignore
 * using iommufd = Iommufd.open(shim);
 * using ioas = iommufd.allocIoas();
 * const host = new KernelDeviceHost(iommufd, ioas);
 * using guest = new GuestIommu(host);
 * ```
 */
export class KernelDeviceHost implements DeviceHost {
  /** The backend invalidations go through: `IOMMU_HWPT_INVALIDATE` on the same iommufd. */
  readonly backend: KernelBackend;

  /** Allocate on `iommufd`; nesting parents are made over `ioas`, the VMM's guest-RAM address space. */
  constructor(readonly iommufd: Iommufd, readonly ioas: Ioas) {
    this.backend = new KernelBackend(iommufd);
  }

  get ioasId(): number {
    return this.ioas.id;
  }

  hwInfo(port: DevicePort): HwInfo {
    return this.iommufd.getHwInfo(port.devId);
  }

  allocParent(port: DevicePort, pasid: boolean, dirtyTracking = false): HostObject {
    const flags = F.IOMMU_HWPT_ALLOC_NEST_PARENT | (pasid ? F.IOMMU_HWPT_ALLOC_PASID : 0) |
      (dirtyTracking ? F.IOMMU_HWPT_ALLOC_DIRTY_TRACKING : 0);
    return this.iommufd.allocHwpt({ devId: port.devId, ptId: this.ioas.id, flags });
  }

  setDirtyTracking(parent: HostObject, enable: boolean): void {
    if (!(parent instanceof Hwpt)) throw new TypeError(`object ${parent.id} is not a HWPT of this host`);
    parent.setDirtyTracking(enable);
  }

  readDirty(parent: HostObject, into: DirtyBitmap, clear: boolean): void {
    if (!(parent instanceof Hwpt)) throw new TypeError(`object ${parent.id} is not a HWPT of this host`);
    parent.readDirty(into, { clear, into });
  }

  allocViommu(port: DevicePort, parentId: number, type: number): HostObject {
    return this.iommufd.allocViommu({ type, devId: port.devId, hwptId: parentId });
  }

  allocVdevice(viommuId: number, port: DevicePort, virtId: number): HostVdevice {
    return this.iommufd.allocVdevice(viommuId, port.devId, virtId);
  }

  allocNested(port: DevicePort, ptId: number, table: NestedTable, pasid: boolean): HostObject {
    return this.iommufd.allocHwpt({
      devId: port.devId,
      ptId,
      flags: pasid ? F.IOMMU_HWPT_ALLOC_PASID : 0,
      data: hwptData(table),
    });
  }

  forbidReadOnlyMappings(reason: string): void {
    this.ioas.forbidReadOnly(reason);
  }

  /**
   * The zero-entry probe — except on SMMUv3, whose driver copies a vIOMMU's batch whole and refuses an empty one
   * (EINVAL, Linux 7.3 arm-smmu-v3): there the probe is one command that asks for nothing a guest relies on,
   * TLBI_NH_VA of page 0 of ASID 0 (at worst one TLB refill).
   */
  probeInvalidation(id: number, format: Format): number {
    const spec = FORMAT_SPECS[format];
    if (spec.dataType === undefined) return Errno.values.EOPNOTSUPP;
    const [entries, count] = format === "smmuv3" ? [SMMUV3_PROBE, 1] : [new Uint8Array(0), 0];
    const r = this.iommufd.invalidateRaw(id, spec.dataType, entries, spec.entryLength, count);
    return r < 0 ? -r : 0;
  }
}
