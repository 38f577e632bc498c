/**
 * What a device's IOMMU offers, decoded once from `IOMMU_GET_HW_INFO` into named fields (VT-d CAP/ECAP, SMMUv3
 * IDRs, the selftest register), plus the PASID width and iommufd capabilities.
 *
 * @module
 */
import type { HwInfo } from "../kernel/iommufd.ts";
import {
  HwCapabilities,
  HwInfoType,
  IommuHwInfoArmSmmuv3,
  IommuHwInfoVtd,
  IommuTestHwInfo,
  MockConstants,
} from "../uapi/mod.ts";

/** Decoded VT-d registers (`drivers/iommu/intel/iommu.h` cap_* / ecap_*). */
export interface VtdCapabilities {
  readonly kind: "vtd";
  readonly cap: bigint;
  readonly ecap: bigint;
  /** Maximum guest address width (cap.MGAW + 1). */
  readonly mgaw: number;
  /** Supported second-stage AGAWs (cap.SAGAW). */
  readonly sagaw: number;
  /** Caching mode (cap.CM): the IOMMU caches not-present entries. */
  readonly cachingMode: boolean;
  /** First-stage 1 GiB pages and 5-level paging. */
  readonly fl1gp: boolean;
  readonly fl5lp: boolean;
  /** Max address mask value for page-selective invalidation (cap.MAMV). */
  readonly mamv: number;
  /** Nested translation (ecap.NEST). */
  readonly nest: boolean;
  /** PASID support and width (ecap.PASID, ecap.PSS + 1). */
  readonly pasid: boolean;
  readonly pasidBits: number;
  /** Page requests (ecap.PRS), device TLB (ecap.DT), queued invalidation (ecap.QI). */
  readonly prs: boolean;
  readonly deviceTlb: boolean;
  readonly queuedInvalidation: boolean;
  /** Scalable mode, first- and second-stage translation support. */
  readonly smts: boolean;
  readonly flts: boolean;
  readonly slts: boolean;
  /**
   * `IOMMU_HW_INFO_VTD_ERRATA_772415_SPR17`: read-only mappings must not reach a nesting parent (Sapphire Rapids
   * erratum 772415), so the guest-physical IOAS takes none while a nesting parent is over it.
   */
  readonly erratum772415: boolean;
}

/** Decoded SMMUv3 ID registers (`arm-smmu-v3.h` IDR*). */
export interface SmmuCapabilities {
  readonly kind: "smmuv3";
  readonly idr: readonly number[];
  /** Stage 1 and stage 2 translation. */
  readonly s1p: boolean;
  readonly s2p: boolean;
  /** ATS, PRI, 16-bit ASIDs. */
  readonly ats: boolean;
  readonly pri: boolean;
  readonly asid16: boolean;
  /** Substream id (PASID) bits (IDR1.SSIDSIZE). */
  readonly ssidBits: number;
  /** Range invalidation (IDR3.RIL). */
  readonly ril: boolean;
  /**
   * `IOMMU_HW_INFO_ARM_SMMUV3_ERRATA_REPEAT_TLBI_CFGI` (Tegra264): "user space must issue TLBI/CFGI+SYNC commands
   * twice", so the relay sends every TLBI and CFGI batch a second time after the first returned.
   */
  readonly repeatTlbiCfgi: boolean;
}

/** The selftest mock IOMMU. */
export interface SelftestCapabilities {
  readonly kind: "selftest";
  readonly testReg: number;
}

/** Anything else: the raw data. */
export interface OtherCapabilities {
  readonly kind: "other";
  readonly type: number;
  readonly data: Uint8Array;
}

/** A device's IOMMU, decoded. */
export interface DeviceCapabilities {
  readonly iommu: VtdCapabilities | SmmuCapabilities | SelftestCapabilities | OtherCapabilities;
  /** PASID width iommufd reports (0 = no PASID). */
  readonly maxPasidLog2: number;
  /** `enum iommufd_hw_capabilities` bits. */
  readonly hwCapabilities: bigint;
}

const bit = (v: bigint, n: number) => ((v >> BigInt(n)) & 1n) === 1n;
const bits = (v: bigint, lo: number, width: number) => Number((v >> BigInt(lo)) & ((1n << BigInt(width)) - 1n));

/**
 * Decode `IOMMU_GET_HW_INFO`'s answer.
 *
 * @example
 * ```ts
 * import { decodeCapabilities } from "./capabilities.ts";
 * const data = new Uint8Array(24);
 * new DataView(data.buffer).setBigUint64(16, 1n << 26n | 1n << 40n | 19n << 35n, true);
 * const caps = decodeCapabilities({ type: 1, data, maxPasidLog2: 20, capabilities: 0n });
 * console.log(caps.iommu.kind === "vtd" && caps.iommu.nest, caps.iommu.kind === "vtd" && caps.iommu.pasidBits); // true 20
 * ```
 */
export function decodeCapabilities(info: HwInfo): DeviceCapabilities {
  const base = { maxPasidLog2: info.maxPasidLog2, hwCapabilities: info.capabilities };
  const t = HwInfoType.values;
  if (info.type === t.IOMMU_HW_INFO_TYPE_INTEL_VTD && info.data.byteLength >= IommuHwInfoVtd.size) {
    const d = IommuHwInfoVtd.decode(info.data.subarray(0, IommuHwInfoVtd.size));
    const c = d.cap_reg, e = d.ecap_reg;
    return {
      ...base,
      iommu: {
        kind: "vtd",
        cap: c,
        ecap: e,
        mgaw: bits(c, 16, 6) + 1,
        sagaw: bits(c, 8, 5),
        cachingMode: bit(c, 7),
        fl1gp: bit(c, 56),
        fl5lp: bit(c, 60),
        mamv: bits(c, 48, 6),
        nest: bit(e, 26),
        pasid: bit(e, 40),
        pasidBits: bit(e, 40) ? bits(e, 35, 5) + 1 : 0,
        prs: bit(e, 29),
        deviceTlb: bit(e, 2),
        queuedInvalidation: bit(e, 1),
        smts: bit(e, 43),
        flts: bit(e, 47),
        slts: bit(e, 46),
        erratum772415: (d.flags & HwCapabilities.values.IOMMU_HW_INFO_VTD_ERRATA_772415_SPR17) !== 0,
      },
    };
  }
  if (info.type === t.IOMMU_HW_INFO_TYPE_ARM_SMMUV3 && info.data.byteLength >= IommuHwInfoArmSmmuv3.size) {
    const d = IommuHwInfoArmSmmuv3.decode(info.data.subarray(0, IommuHwInfoArmSmmuv3.size));
    const [idr0, idr1, , idr3] = d.idr;
    return {
      ...base,
      iommu: {
        kind: "smmuv3",
        idr: d.idr,
        s1p: (idr0 & 2) !== 0,
        s2p: (idr0 & 1) !== 0,
        ats: (idr0 & (1 << 10)) !== 0,
        pri: (idr0 & (1 << 16)) !== 0,
        asid16: (idr0 & (1 << 12)) !== 0,
        ssidBits: (idr1 >>> 6) & 0x1f,
        ril: (idr3 & (1 << 10)) !== 0,
        repeatTlbiCfgi: (d.flags & HwCapabilities.values.IOMMU_HW_INFO_ARM_SMMUV3_ERRATA_REPEAT_TLBI_CFGI) !== 0,
      },
    };
  }
  if (info.type === MockConstants.values.IOMMU_HW_INFO_TYPE_SELFTEST && info.data.byteLength >= IommuTestHwInfo.size) {
    return { ...base, iommu: { kind: "selftest", testReg: IommuTestHwInfo.decode(info.data.subarray(0, 8)).test_reg } };
  }
  return { ...base, iommu: { kind: "other", type: info.type, data: info.data } };
}
