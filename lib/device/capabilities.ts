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
  /** Discriminant: an Intel VT-d IOMMU (`IOMMU_HW_INFO_TYPE_INTEL_VTD`). */
  readonly kind: "vtd";
  /** The raw 64-bit Capability Register (`struct iommu_hw_info_vtd.cap_reg`). */
  readonly cap: bigint;
  /** The raw 64-bit Extended Capability Register (`struct iommu_hw_info_vtd.ecap_reg`). */
  readonly ecap: bigint;
  /** Maximum guest address width (cap.MGAW + 1). */
  readonly mgaw: number;
  /** Supported second-stage AGAWs (cap.SAGAW). */
  readonly sagaw: number;
  /** Caching mode (cap.CM): the IOMMU caches not-present entries. */
  readonly cachingMode: boolean;
  /** First-stage 1 GiB pages (cap.FS1GP, bit 56). */
  readonly fl1gp: boolean;
  /** First-stage 5-level paging (cap.FS5LP, bit 60). */
  readonly fl5lp: boolean;
  /** Max address mask value for page-selective invalidation (cap.MAMV). */
  readonly mamv: number;
  /** Nested translation (ecap.NEST). */
  readonly nest: boolean;
  /** PASID support (ecap.PASID, bit 40). */
  readonly pasid: boolean;
  /** PASID width in bits (ecap.PSS + 1, bits 39:35); 0 without PASID support. */
  readonly pasidBits: number;
  /** Page requests (ecap.PRS, bit 29). */
  readonly prs: boolean;
  /** Device TLB, i.e. ATS invalidations (ecap.DT, bit 2). */
  readonly deviceTlb: boolean;
  /** Queued invalidation (ecap.QI, bit 1). */
  readonly queuedInvalidation: boolean;
  /** Scalable-mode translation (ecap.SMTS, bit 43). */
  readonly smts: boolean;
  /** First-stage translation (ecap.FLTS, bit 47). */
  readonly flts: boolean;
  /** Second-stage translation (ecap.SLTS, bit 46). */
  readonly slts: boolean;
  /**
   * `IOMMU_HW_INFO_VTD_ERRATA_772415_SPR17`: read-only mappings must not reach a nesting parent (Sapphire Rapids
   * erratum 772415), so the guest-physical IOAS takes none while a nesting parent is over it.
   */
  readonly erratum772415: boolean;
}

/** Decoded SMMUv3 ID registers (`arm-smmu-v3.h` IDR*). */
export interface SmmuCapabilities {
  /** Discriminant: an Arm SMMUv3 (`IOMMU_HW_INFO_TYPE_ARM_SMMUV3`). */
  readonly kind: "smmuv3";
  /** The raw ID registers IDR0..IDR5 (`struct iommu_hw_info_arm_smmuv3.idr`). */
  readonly idr: readonly number[];
  /** Stage 1 translation (IDR0.S1P, bit 1). */
  readonly s1p: boolean;
  /** Stage 2 translation (IDR0.S2P, bit 0). */
  readonly s2p: boolean;
  /** ATS (IDR0.ATS, bit 10). */
  readonly ats: boolean;
  /** Page request interface (IDR0.PRI, bit 16). */
  readonly pri: boolean;
  /** 16-bit ASIDs (IDR0.ASID16, bit 12); 8-bit otherwise. */
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
  /** Discriminant: the selftest mock (`IOMMU_HW_INFO_TYPE_SELFTEST`). */
  readonly kind: "selftest";
  /** The mock's register (`struct iommu_test_hw_info.test_reg`; `IOMMU_HW_INFO_SELFTEST_REGVAL` unless a test changed it). */
  readonly testReg: number;
}

/** Anything else: the raw data. */
export interface OtherCapabilities {
  /** Discriminant: a type this module does not decode, or data too short for its struct. */
  readonly kind: "other";
  /** `enum iommu_hw_info_type` value the kernel reported. */
  readonly type: number;
  /** The bytes the kernel filled, undecoded. */
  readonly data: Uint8Array;
}

/** A device's IOMMU, decoded. */
export interface DeviceCapabilities {
  /** The IOMMU's registers, decoded by type (`kind`). */
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
 * import assert from "node:assert/strict";
 * import { decodeCapabilities } from "./capabilities.ts";
 * const data = new Uint8Array(24);
 * new DataView(data.buffer).setBigUint64(16, 1n << 26n | 1n << 40n | 19n << 35n, true);
 * const caps = decodeCapabilities({ type: 1, data, maxPasidLog2: 20, capabilities: 0n });
 * assert.equal(caps.iommu.kind === "vtd" && caps.iommu.nest, true);
 * assert.equal(caps.iommu.kind === "vtd" && caps.iommu.pasidBits, 20);
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
