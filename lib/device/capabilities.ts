/**
 * What a device's IOMMU offers, decoded once from `IOMMU_GET_HW_INFO` into named fields (VT-d CAP/ECAP, SMMUv3
 * IDRs, Tegra241 CMDQV PARAM fields, AMD EFR/EFR2, the selftest register), plus the PASID width and iommufd
 * capabilities — and from those, what a VMM may offer the guest for the device ({@linkcode guestOffer}).
 *
 * @module
 */
import type { HwInfo } from "../kernel/iommufd.ts";
import { UnsupportedError } from "../kernel/errors.ts";
import {
  HwCapabilities,
  HwInfoType,
  HwptDataType,
  IommuHwInfoArmSmmuv3,
  IommuHwInfoVtd,
  IommuHwptAmdGuest,
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

/**
 * An SMMUv3 with NVIDIA's Tegra241 CMDQV (`IOMMU_HW_INFO_TYPE_TEGRA241_CMDQV`): virtual command queues the hardware
 * reads from guest memory. With a vIOMMU of type `IOMMU_VIOMMU_TYPE_TEGRA241_CMDQV` and HW queues
 * (`IOMMU_HW_QUEUE_ALLOC`) for the guest's VCMDQs, the guest's TLB and ATC invalidations go to the hardware, not
 * through the relay; only the guest's main SMMU command queue (CFGI, and anything a VCMDQ does not take) still does.
 */
export interface TegraCmdqvCapabilities {
  /** Discriminant: a Tegra241 CMDQV. */
  readonly kind: "tegra241-cmdqv";
  /** CMDQ-V version (for the emulated PARAM register, bits 3:0). */
  readonly version: number;
  /** log2 of the hardware's VCMDQs (PARAM bits 7:4). */
  readonly log2vcmdqs: number;
  /** log2 of its SID replacements (PARAM bits 15:12). */
  readonly log2vsids: number;
  /** VCMDQs in all: how many HW queues a vIOMMU may have at most. */
  readonly vcmdqs: number;
  /** `flags` as the kernel sent it (0 today; non-zero bits are new meanings this decoder does not know). */
  readonly flags: number;
}

/** An AMD IOMMU (`IOMMU_HW_INFO_TYPE_AMD`): EFR and EFR2 decoded where a VMM may use them. */
export interface AmdCapabilities {
  /** Discriminant: an AMD IOMMU. */
  readonly kind: "amd";
  /** Extended Feature Register, raw. */
  readonly efr: bigint;
  /** Extended Feature 2 Register, raw. */
  readonly efr2: bigint;
  /** Guest translation (EFR.GTSup, bit 4): guest page tables (the nesting stage 1). */
  readonly guestTranslation: boolean;
  /** PPR (page requests) (EFR.PPRSup, bit 1). */
  readonly ppr: boolean;
  /** Guest virtual APIC (EFR.GASup, bit 7). */
  readonly guestVapic: boolean;
  /** Guest I/O protection (EFR.GIoSup, bit 48). */
  readonly guestIoProtection: boolean;
  /** Enhanced PPR handling (EFR.EPHSup, bit 50). */
  readonly enhancedPpr: boolean;
  /** Guest address translation size (EFR.GATS, bits 13:12): 0 → 4 levels, 1 → 5 levels. */
  readonly gats: number;
  /** Guest CR3 table levels (EFR.GLX, bits 15:14). */
  readonly glx: number;
  /** PASID width in bits (EFR.PASmax + 1, bits 36:32). */
  readonly pasidBits: number;
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
  readonly iommu:
    | VtdCapabilities
    | SmmuCapabilities
    | TegraCmdqvCapabilities
    | AmdCapabilities
    | SelftestCapabilities
    | OtherCapabilities;

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
  if (info.type === t.IOMMU_HW_INFO_TYPE_TEGRA241_CMDQV && info.data.byteLength >= 8) {
    // Read by hand, not with the strict decoder: a future flag must not make the whole answer unreadable.
    const v = new DataView(info.data.buffer, info.data.byteOffset, 8);
    const log2vcmdqs = v.getUint8(5);
    return {
      ...base,
      iommu: {
        kind: "tegra241-cmdqv",
        flags: v.getUint32(0, true),
        version: v.getUint8(4),
        log2vcmdqs,
        log2vsids: v.getUint8(6),
        vcmdqs: 2 ** log2vcmdqs,
      },
    };
  }
  if (info.type === t.IOMMU_HW_INFO_TYPE_AMD && info.data.byteLength >= 16) {
    const v = new DataView(info.data.buffer, info.data.byteOffset, 16);
    const efr = v.getBigUint64(0, true), efr2 = v.getBigUint64(8, true);
    return {
      ...base,
      iommu: {
        kind: "amd",
        efr,
        efr2,
        guestTranslation: bit(efr, 4),
        ppr: bit(efr, 1),
        guestVapic: bit(efr, 7),
        guestIoProtection: bit(efr, 48),
        enhancedPpr: bit(efr, 50),
        gats: bits(efr, 12, 2),
        glx: bits(efr, 14, 2),
        pasidBits: bits(efr, 32, 5) + 1,
      },
    };
  }
  if (info.type === MockConstants.values.IOMMU_HW_INFO_TYPE_SELFTEST && info.data.byteLength >= IommuTestHwInfo.size) {
    return { ...base, iommu: { kind: "selftest", testReg: IommuTestHwInfo.decode(info.data.subarray(0, 8)).test_reg } };
  }
  return { ...base, iommu: { kind: "other", type: info.type, data: info.data } };
}

/** What a VMM may advertise to the guest for one assigned device, and why not when it may not. */
export interface GuestOffer {
  /**
   * ATS for the device (an SMMUv3's IDR0.ATS and the IORT/DT ATS flag for its stream, a VT-d ATSR/SATC entry and
   * ECAP.DT with device-TLB invalidations): false when the host says ATS cannot be used on it
   * (`IOMMU_HW_CAP_PCI_ATS_NOT_SUPPORTED`, 6.18+), because a guest that enabled it would expect translated requests
   * and device-TLB invalidations the host will never honour.
   */
  readonly ats: boolean;
  /** Why `ats` is false (undefined when it is true). */
  readonly atsWithheld?: string;
  /** Dirty tracking of the device's DMA on a nesting parent (`IOMMU_HW_CAP_DIRTY_TRACKING`). */
  readonly dirtyTracking: boolean;
  /**
   * Guest commands may go to hardware queues (a Tegra241 CMDQV: `IOMMU_HW_QUEUE_ALLOC` on a CMDQV vIOMMU), so the
   * relay carries only what those queues do not take.
   */
  readonly hardwareQueues: number;
}

/**
 * What to offer the guest for a device with capabilities `caps`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { decodeCapabilities, guestOffer } from "./capabilities.ts";
 * const caps = decodeCapabilities({ type: 0, data: new Uint8Array(0), maxPasidLog2: 0, capabilities: 1n << 3n });
 * assert.equal(guestOffer(caps).ats, false); // IOMMU_HW_CAP_PCI_ATS_NOT_SUPPORTED
 * assert.match(guestOffer(caps).atsWithheld!, /ATS_NOT_SUPPORTED/);
 * ```
 */
export function guestOffer(caps: DeviceCapabilities): GuestOffer {
  const c = HwCapabilities.values;
  const atsRefused = (caps.hwCapabilities & BigInt(c.IOMMU_HW_CAP_PCI_ATS_NOT_SUPPORTED)) !== 0n;
  // An SMMU without ATS (IDR0.ATS clear) refuses every ATC_INV, and with it each TLBI batch that carries one (EIO).
  const smmuWithoutAts = caps.iommu.kind === "smmuv3" && !caps.iommu.ats;
  const atsWithheld = atsRefused
    ? "the host reports IOMMU_HW_CAP_PCI_ATS_NOT_SUPPORTED: ATS cannot be used on this device"
    : smmuWithoutAts
    ? "its SMMU has no ATS (IDR0.ATS clear): the driver would refuse every ATC_INV"
    : undefined;
  return {
    ats: atsWithheld === undefined,
    ...(atsWithheld ? { atsWithheld } : {}),
    dirtyTracking: (caps.hwCapabilities & BigInt(c.IOMMU_HW_CAP_DIRTY_TRACKING)) !== 0n,
    hardwareQueues: caps.iommu.kind === "tegra241-cmdqv" ? caps.iommu.vcmdqs : 0,
  };
}

/**
 * `IOMMU_HWPT_DATA_AMD_GUEST`'s data: a guest's 256-bit Device Table Entry, four little-endian words. Only the
 * encoding: on 7.3 the relay cannot nest on AMD ({@linkcode requireNestingSupport}).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { amdGuestHwptData } from "./capabilities.ts";
 * const data = amdGuestHwptData([1n, 2n, 3n, 0xffff_ffff_ffff_ffffn]);
 * assert.equal(data.type, 3);
 * assert.equal(data.bytes.byteLength, 32);
 * assert.equal(new DataView(data.bytes.buffer).getBigUint64(24, true), 0xffff_ffff_ffff_ffffn);
 * ```
 */
export function amdGuestHwptData(dte: readonly [bigint, bigint, bigint, bigint]): { type: number; bytes: Uint8Array } {
  const b = IommuHwptAmdGuest.buffer();
  dte.forEach((word, i) => b.setAt("dte", i, word));
  return { type: HwptDataType.values.IOMMU_HWPT_DATA_AMD_GUEST, bytes: b.bytes };
}

/**
 * Throw a typed {@linkcode UnsupportedError} when the relay cannot nest on this IOMMU, instead of pretending: on AMD,
 * Linux 7.3 takes a guest DTE for a nested HWPT (`IOMMU_HWPT_DATA_AMD_GUEST`) but has no AMD vIOMMU type and no AMD
 * invalidation data type, so no guest invalidation could ever reach the host's caches. Shadow mode still works there.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { decodeCapabilities, requireNestingSupport } from "./capabilities.ts";
 * import { UnsupportedError } from "../kernel/errors.ts";
 * const amd = decodeCapabilities({ type: 4, data: new Uint8Array(16), maxPasidLog2: 0, capabilities: 0n });
 * assert.throws(() => requireNestingSupport(amd), UnsupportedError);
 * ```
 */
export function requireNestingSupport(caps: DeviceCapabilities): void {
  if (caps.iommu.kind === "amd") {
    throw new UnsupportedError(
      "amd-nesting",
      "Linux 7.3 has IOMMU_HWPT_DATA_AMD_GUEST but no AMD vIOMMU type and no AMD invalidation data type: guest " +
        "invalidations could not reach the host, so nested binds are refused (use shadow mode on this IOMMU)",
    );
  }
}
