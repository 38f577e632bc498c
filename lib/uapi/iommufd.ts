/**
 * `include/uapi/linux/iommufd.h` (Linux 7.3): the iommufd structs, ioctls and constants iommu-relay uses.
 * Each definition says the release that introduced it; older kernels are handled by feature detection at run
 * time, not by other layouts. Sizes and offsets are checked against the 7.3 headers by tests/uapi/golden_test.ts.
 *
 * @module
 */
import { defineStruct, type Struct } from "./struct.ts";
import { type ConstantGroup, defineConstants, defineIoctl, io, type Ioctl } from "./ioctl.ts";

const H = "linux/iommufd.h";

/** `IOMMUFD_TYPE`: the ioctl type byte, `';'`. */
export const IOMMUFD_TYPE = 0x3b;

/** The declaration of `iommufd_cmd` behind {@linkcode IommufdCmd}: its one definition. */
export const IommufdCmdDeclaration = {
  name: "iommufd_cmd",
  header: H,
  since: "6.2",
  values: {
    IOMMUFD_CMD_BASE: 0x80,
    IOMMUFD_CMD_DESTROY: 0x80,
    IOMMUFD_CMD_IOAS_ALLOC: 0x81,
    IOMMUFD_CMD_IOAS_ALLOW_IOVAS: 0x82,
    IOMMUFD_CMD_IOAS_COPY: 0x83,
    IOMMUFD_CMD_IOAS_IOVA_RANGES: 0x84,
    IOMMUFD_CMD_IOAS_MAP: 0x85,
    IOMMUFD_CMD_IOAS_UNMAP: 0x86,
    IOMMUFD_CMD_OPTION: 0x87,
    IOMMUFD_CMD_VFIO_IOAS: 0x88,
    IOMMUFD_CMD_HWPT_ALLOC: 0x89,
    IOMMUFD_CMD_GET_HW_INFO: 0x8a,
    IOMMUFD_CMD_HWPT_SET_DIRTY_TRACKING: 0x8b,
    IOMMUFD_CMD_HWPT_GET_DIRTY_BITMAP: 0x8c,
    IOMMUFD_CMD_HWPT_INVALIDATE: 0x8d,
    IOMMUFD_CMD_FAULT_QUEUE_ALLOC: 0x8e,
    IOMMUFD_CMD_IOAS_MAP_FILE: 0x8f,
    IOMMUFD_CMD_VIOMMU_ALLOC: 0x90,
    IOMMUFD_CMD_VDEVICE_ALLOC: 0x91,
    IOMMUFD_CMD_IOAS_CHANGE_PROCESS: 0x92,
    IOMMUFD_CMD_VEVENTQ_ALLOC: 0x93,
    IOMMUFD_CMD_HW_QUEUE_ALLOC: 0x94,
    IOMMUFD_CMD_IOAS_NOIOMMU_GET_PA: 0x95,
  } as const,
} as const;

/** `IOMMUFD_CMD_*`: ioctl numbers (the `nr` byte). */
export const IommufdCmd: ConstantGroup<typeof IommufdCmdDeclaration.values> = defineConstants(IommufdCmdDeclaration);

// ---------------------------------------------------------------------------------------------------- objects

/** The declaration of `struct iommu_destroy` behind {@linkcode IommuDestroy}: its one definition. */
export const IommuDestroyLayout = {
  name: "iommu_destroy",
  since: "6.2",
  header: H,
  size: 8,
  doc: "Destroy any object held within the iommufd.",
  fields: {
    size: { type: "u32", offset: 0, role: "size", doc: "sizeof(struct iommu_destroy)" },
    id: { type: "u32", offset: 4, doc: "iommufd object id to destroy" },
  },
} as const;

/** `struct iommu_destroy` (6.2): destroy any iommufd object by id. */
export const IommuDestroy: Struct<typeof IommuDestroyLayout.fields> = defineStruct(IommuDestroyLayout);

/** The declaration of `struct iommu_ioas_alloc` behind {@linkcode IommuIoasAlloc}: its one definition. */
export const IommuIoasAllocLayout = {
  name: "iommu_ioas_alloc",
  since: "6.2",
  header: H,
  size: 12,
  doc: "Allocate an IOAS: a container of IOVA mappings.",
  fields: {
    size: { type: "u32", offset: 0, role: "size", doc: "sizeof(struct iommu_ioas_alloc)" },
    flags: { type: "u32", offset: 4, reserved: true, doc: "must be 0" },
    out_ioas_id: { type: "u32", offset: 8, doc: "output: id of the new IOAS" },
  },
} as const;

/** `struct iommu_ioas_alloc` (6.2): allocate an IO address space. */
export const IommuIoasAlloc: Struct<typeof IommuIoasAllocLayout.fields> = defineStruct(IommuIoasAllocLayout);

/** The declaration of `struct iommu_iova_range` behind {@linkcode IommuIovaRange}: its one definition. */
export const IommuIovaRangeLayout = {
  name: "iommu_iova_range",
  since: "6.2",
  header: H,
  size: 16,
  doc: "An inclusive IOVA interval [start, last].",
  fields: {
    start: { type: "u64", offset: 0, doc: "first IOVA" },
    last: { type: "u64", offset: 8, doc: "last IOVA (inclusive)" },
  },
} as const;

/** `struct iommu_iova_range` (6.2): one inclusive IOVA interval. */
export const IommuIovaRange: Struct<typeof IommuIovaRangeLayout.fields> = defineStruct(IommuIovaRangeLayout);

/** The declaration of `struct iommu_ioas_iova_ranges` behind {@linkcode IommuIoasIovaRanges}: its one definition. */
export const IommuIoasIovaRangesLayout = {
  name: "iommu_ioas_iova_ranges",
  since: "6.2",
  header: H,
  size: 32,
  doc: "Query the IOVA ranges an IOAS can map; EMSGSIZE when num_iovas is too small (num_iovas is then the total).",
  fields: {
    size: { type: "u32", offset: 0, role: "size", doc: "sizeof(struct iommu_ioas_iova_ranges)" },
    ioas_id: { type: "u32", offset: 4, doc: "IOAS to query" },
    num_iovas: { type: "u32", offset: 8, doc: "input: entries in allowed_iovas; output: total ranges" },
    __reserved: { type: "u32", offset: 12, reserved: true, doc: "must be 0" },
    allowed_iovas: { type: "u64", offset: 16, doc: "user pointer to struct iommu_iova_range[num_iovas]" },
    out_iova_alignment: { type: "u64", offset: 24, doc: "output: minimum IOVA alignment for a map" },
  },
} as const;

/** `struct iommu_ioas_iova_ranges` (6.2): query the usable IOVA ranges of an IOAS. */
export const IommuIoasIovaRanges: Struct<typeof IommuIoasIovaRangesLayout.fields> = defineStruct(
  IommuIoasIovaRangesLayout,
);

/** The declaration of `iommufd_ioas_map_flags` behind {@linkcode IoasMapFlags}: its one definition. */
export const IoasMapFlagsDeclaration = {
  name: "iommufd_ioas_map_flags",
  header: H,
  since: "6.2",
  values: {
    IOMMU_IOAS_MAP_FIXED_IOVA: 1 << 0,
    IOMMU_IOAS_MAP_WRITEABLE: 1 << 1,
    IOMMU_IOAS_MAP_READABLE: 1 << 2,
  } as const,
} as const;

/** `enum iommufd_ioas_map_flags` (6.2). */
export const IoasMapFlags: ConstantGroup<typeof IoasMapFlagsDeclaration.values> = defineConstants(
  IoasMapFlagsDeclaration,
);

/** The declaration of `struct iommu_ioas_map` behind {@linkcode IommuIoasMap}: its one definition. */
export const IommuIoasMapLayout = {
  name: "iommu_ioas_map",
  since: "6.2",
  header: H,
  size: 40,
  doc: "Map a range of user memory at an IOVA (fixed, or chosen by the kernel).",
  fields: {
    size: { type: "u32", offset: 0, role: "size", doc: "sizeof(struct iommu_ioas_map)" },
    flags: { type: "u32", offset: 4, flags: IoasMapFlags.values, doc: "enum iommufd_ioas_map_flags" },
    ioas_id: { type: "u32", offset: 8, doc: "IOAS to change" },
    __reserved: { type: "u32", offset: 12, reserved: true, doc: "must be 0" },
    user_va: { type: "u64", offset: 16, doc: "user pointer to the memory to map" },
    length: { type: "u64", offset: 24, doc: "bytes to map" },
    iova: { type: "u64", offset: 32, doc: "input with FIXED_IOVA, else output: where it was mapped" },
  },
} as const;

/** `struct iommu_ioas_map` (6.2): map user memory into an IOAS. */
export const IommuIoasMap: Struct<typeof IommuIoasMapLayout.fields> = defineStruct(IommuIoasMapLayout);

/** The declaration of `struct iommu_ioas_map_file` behind {@linkcode IommuIoasMapFile}: its one definition. */
export const IommuIoasMapFileLayout = {
  name: "iommu_ioas_map_file",
  since: "6.13",
  header: H,
  size: 40,
  doc: "Map a range of a memfd at an IOVA: guest RAM by file, so the mapper needs the fd, not the VMM's address space.",
  fields: {
    size: { type: "u32", offset: 0, role: "size", doc: "sizeof(struct iommu_ioas_map_file)" },
    flags: { type: "u32", offset: 4, flags: IoasMapFlags.values, doc: "enum iommufd_ioas_map_flags" },
    ioas_id: { type: "u32", offset: 8, doc: "IOAS to change" },
    fd: { type: "s32", offset: 12, doc: "the memfd to map (the shim only passes a memfd of its table)" },
    start: { type: "u64", offset: 16, doc: "byte offset into the file" },
    length: { type: "u64", offset: 24, doc: "bytes to map" },
    iova: { type: "u64", offset: 32, doc: "input with FIXED_IOVA, else output: where it was mapped" },
  },
} as const;

/** `struct iommu_ioas_map_file` (6.13): map a memfd range into an IOAS. */
export const IommuIoasMapFile: Struct<typeof IommuIoasMapFileLayout.fields> = defineStruct(IommuIoasMapFileLayout);

/** The declaration of `struct iommu_ioas_unmap` behind {@linkcode IommuIoasUnmap}: its one definition. */
export const IommuIoasUnmapLayout = {
  name: "iommu_ioas_unmap",
  since: "6.2",
  header: H,
  size: 24,
  doc: "Unmap whole mappings inside [iova, iova+length); iova 0 and length U64_MAX unmap everything.",
  fields: {
    size: { type: "u32", offset: 0, role: "size", doc: "sizeof(struct iommu_ioas_unmap)" },
    ioas_id: { type: "u32", offset: 4, doc: "IOAS to change" },
    iova: { type: "u64", offset: 8, doc: "first IOVA to unmap" },
    length: { type: "u64", offset: 16, doc: "input: bytes to unmap; output: bytes unmapped" },
  },
} as const;

/** `struct iommu_ioas_unmap` (6.2): unmap an IOVA range. */
export const IommuIoasUnmap: Struct<typeof IommuIoasUnmapLayout.fields> = defineStruct(IommuIoasUnmapLayout);

/** The declaration of `iommufd_option` behind {@linkcode IommufdOption}: its one definition. */
export const IommufdOptionDeclaration = {
  name: "iommufd_option",
  header: H,
  since: "6.2",
  values: {
    IOMMU_OPTION_RLIMIT_MODE: 0,
    IOMMU_OPTION_HUGE_PAGES: 1,
    IOMMU_OPTION_OP_SET: 0,
    IOMMU_OPTION_OP_GET: 1,
  } as const,
} as const;

/** `enum iommufd_option` and `enum iommufd_option_ops` (6.2). */
export const IommufdOption: ConstantGroup<typeof IommufdOptionDeclaration.values> = defineConstants(
  IommufdOptionDeclaration,
);

/** The declaration of `struct iommu_option` behind {@linkcode IommuOption}: its one definition. */
export const IommuOptionLayout = {
  name: "iommu_option",
  since: "6.2",
  header: H,
  size: 24,
  doc: "Read or change a global (RLIMIT_MODE) or per-IOAS (HUGE_PAGES) option.",
  fields: {
    size: { type: "u32", offset: 0, role: "size", doc: "sizeof(struct iommu_option)" },
    option_id: {
      type: "u32",
      offset: 4,
      values: { IOMMU_OPTION_RLIMIT_MODE: 0, IOMMU_OPTION_HUGE_PAGES: 1 },
      doc: "enum iommufd_option",
    },
    op: {
      type: "u16",
      offset: 8,
      values: { IOMMU_OPTION_OP_SET: 0, IOMMU_OPTION_OP_GET: 1 },
      doc: "enum iommufd_option_ops",
    },
    __reserved: { type: "u16", offset: 10, reserved: true, doc: "must be 0" },
    object_id: { type: "u32", offset: 12, doc: "IOAS id for per-IOAS options, 0 for global ones" },
    val64: { type: "u64", offset: 16, doc: "value to set, or the value read" },
  },
} as const;

/** `struct iommu_option` (6.2): get or set an iommufd or IOAS option. */
export const IommuOption: Struct<typeof IommuOptionLayout.fields> = defineStruct(IommuOptionLayout);

// ------------------------------------------------------------------------------------------------- HW pagetables

/** The declaration of `iommufd_hwpt_alloc_flags` behind {@linkcode HwptAllocFlags}: its one definition. */
export const HwptAllocFlagsDeclaration = {
  name: "iommufd_hwpt_alloc_flags",
  header: H,
  since: "6.6",
  values: {
    IOMMU_HWPT_ALLOC_NEST_PARENT: 1 << 0,
    IOMMU_HWPT_ALLOC_DIRTY_TRACKING: 1 << 1,
    IOMMU_HWPT_FAULT_ID_VALID: 1 << 2,
    IOMMU_HWPT_ALLOC_PASID: 1 << 3,
  } as const,
} as const;

/** `enum iommufd_hwpt_alloc_flags` (6.6; DIRTY_TRACKING 6.7, FAULT_ID_VALID 6.11, PASID 6.15). */
export const HwptAllocFlags: ConstantGroup<typeof HwptAllocFlagsDeclaration.values> = defineConstants(
  HwptAllocFlagsDeclaration,
);

/** The declaration of `iommu_hwpt_data_type` behind {@linkcode HwptDataType}: its one definition. */
export const HwptDataTypeDeclaration = {
  name: "iommu_hwpt_data_type",
  header: H,
  since: "6.7",
  values: {
    IOMMU_HWPT_DATA_NONE: 0,
    IOMMU_HWPT_DATA_VTD_S1: 1,
    IOMMU_HWPT_DATA_ARM_SMMUV3: 2,
    IOMMU_HWPT_DATA_AMD_GUEST: 3,
  } as const,
} as const;

/** `enum iommu_hwpt_data_type` (6.7; ARM_SMMUV3 6.14, AMD_GUEST 7.x). The selftest's 0xdead is in selftest.ts. */
export const HwptDataType: ConstantGroup<typeof HwptDataTypeDeclaration.values> = defineConstants(
  HwptDataTypeDeclaration,
);

/** The declaration of `iommu_hwpt_vtd_s1_flags` behind {@linkcode VtdS1Flags}: its one definition. */
export const VtdS1FlagsDeclaration = {
  name: "iommu_hwpt_vtd_s1_flags",
  header: H,
  since: "6.7",
  values: { IOMMU_VTD_S1_SRE: 1 << 0, IOMMU_VTD_S1_EAFE: 1 << 1, IOMMU_VTD_S1_WPE: 1 << 2 } as const,
} as const;

/** `enum iommu_hwpt_vtd_s1_flags` (6.7). */
export const VtdS1Flags: ConstantGroup<typeof VtdS1FlagsDeclaration.values> = defineConstants(VtdS1FlagsDeclaration);

/** The declaration of `struct iommu_hwpt_vtd_s1` behind {@linkcode IommuHwptVtdS1}: its one definition. */
export const IommuHwptVtdS1Layout = {
  name: "iommu_hwpt_vtd_s1",
  since: "6.7",
  header: H,
  size: 24,
  doc: "Intel VT-d stage-1 page table description: IOMMU_HWPT_DATA_VTD_S1.",
  fields: {
    flags: { type: "u64", offset: 0, flags: VtdS1Flags.values, doc: "enum iommu_hwpt_vtd_s1_flags (SRE, EAFE, WPE)" },
    pgtbl_addr: { type: "u64", offset: 8, doc: "guest-physical address of the stage-1 table root" },
    addr_width: { type: "u32", offset: 16, doc: "input address width of the stage-1 table (48 or 57)" },
    __reserved: { type: "u32", offset: 20, reserved: true, doc: "must be 0" },
  },
} as const;

/** `struct iommu_hwpt_vtd_s1` (6.7): a guest's VT-d stage-1 (first-level) table for a nested HWPT. */
export const IommuHwptVtdS1: Struct<typeof IommuHwptVtdS1Layout.fields> = defineStruct(IommuHwptVtdS1Layout);

/** The declaration of `struct iommu_hwpt_arm_smmuv3` behind {@linkcode IommuHwptArmSmmuv3}: its one definition. */
export const IommuHwptArmSmmuv3Layout = {
  name: "iommu_hwpt_arm_smmuv3",
  since: "6.14",
  header: H,
  size: 16,
  doc: "ARM SMMUv3 nested STE (the first two little-endian words): IOMMU_HWPT_DATA_ARM_SMMUV3.",
  fields: {
    ste: { type: "u64", offset: 0, count: 2, doc: "STE words 0-1, little-endian" },
  },
} as const;

/** `struct iommu_hwpt_arm_smmuv3` (6.14): a guest's SMMUv3 stream table entry for a nested HWPT. */
export const IommuHwptArmSmmuv3: Struct<typeof IommuHwptArmSmmuv3Layout.fields> = defineStruct(
  IommuHwptArmSmmuv3Layout,
);

/** The declaration of `struct iommu_hwpt_amd_guest` behind {@linkcode IommuHwptAmdGuest}: its one definition. */
export const IommuHwptAmdGuestLayout = {
  name: "iommu_hwpt_amd_guest",
  since: "7.x",
  header: H,
  size: 32,
  doc: "AMD IOMMU guest Device Table Entry (256 bits, little-endian): IOMMU_HWPT_DATA_AMD_GUEST.",
  fields: {
    dte: { type: "u64", offset: 0, count: 4, doc: "guest DTE words 0-3, little-endian" },
  },
} as const;

/** `struct iommu_hwpt_amd_guest` (7.x): a guest's AMD DTE for a nested HWPT. */
export const IommuHwptAmdGuest: Struct<typeof IommuHwptAmdGuestLayout.fields> = defineStruct(IommuHwptAmdGuestLayout);

/** The declaration of `struct iommu_hwpt_alloc` behind {@linkcode IommuHwptAlloc}: its one definition. */
export const IommuHwptAllocLayout = {
  name: "iommu_hwpt_alloc",
  since: "6.6",
  header: H,
  size: 48,
  minSize: 24,
  doc: "Allocate a HWPT: a paging domain over an IOAS (optionally a nesting parent), or a nested one from driver data.",
  fields: {
    size: { type: "u32", offset: 0, role: "size", doc: "sizeof(struct iommu_hwpt_alloc)" },
    flags: { type: "u32", offset: 4, flags: HwptAllocFlags.values, doc: "enum iommufd_hwpt_alloc_flags" },
    dev_id: { type: "u32", offset: 8, doc: "device the HWPT must be compatible with" },
    pt_id: { type: "u32", offset: 12, doc: "IOAS, nesting-parent HWPT or vIOMMU to build on" },
    out_hwpt_id: { type: "u32", offset: 16, doc: "output: id of the new HWPT" },
    __reserved: { type: "u32", offset: 20, reserved: true, doc: "must be 0" },
    data_type: { type: "u32", offset: 24, doc: "enum iommu_hwpt_data_type (or a selftest type)" },
    data_len: { type: "u32", offset: 28, doc: "bytes at data_uptr" },
    data_uptr: { type: "u64", offset: 32, doc: "user pointer to the driver data" },
    fault_id: { type: "u32", offset: 40, doc: "fault queue id, with IOMMU_HWPT_FAULT_ID_VALID" },
    __reserved2: { type: "u32", offset: 44, reserved: true, doc: "must be 0" },
  },
} as const;

/** `struct iommu_hwpt_alloc` (6.6; data 6.7, fault_id 6.11): allocate a hardware page table. */
export const IommuHwptAlloc: Struct<typeof IommuHwptAllocLayout.fields> = defineStruct(IommuHwptAllocLayout);

// ----------------------------------------------------------------------------------------------------- hw info

/** The declaration of `iommu_hw_info_type` behind {@linkcode HwInfoType}: its one definition. */
export const HwInfoTypeDeclaration = {
  name: "iommu_hw_info_type",
  header: H,
  since: "6.6",
  values: {
    IOMMU_HW_INFO_TYPE_NONE: 0,
    IOMMU_HW_INFO_TYPE_DEFAULT: 0,
    IOMMU_HW_INFO_TYPE_INTEL_VTD: 1,
    IOMMU_HW_INFO_TYPE_ARM_SMMUV3: 2,
    IOMMU_HW_INFO_TYPE_TEGRA241_CMDQV: 3,
    IOMMU_HW_INFO_TYPE_AMD: 4,
  } as const,
} as const;

/** `enum iommu_hw_info_type` (6.6; SMMUv3 6.13, TEGRA241 6.17, AMD 7.x). Selftest's type is in selftest.ts. */
export const HwInfoType: ConstantGroup<typeof HwInfoTypeDeclaration.values> = defineConstants(HwInfoTypeDeclaration);

/** The declaration of `iommufd_hw_capabilities` behind {@linkcode HwCapabilities}: its one definition. */
export const HwCapabilitiesDeclaration = {
  name: "iommufd_hw_capabilities",
  header: H,
  since: "6.7",
  values: {
    IOMMU_HW_CAP_DIRTY_TRACKING: 1 << 0,
    IOMMU_HW_CAP_PCI_PASID_EXEC: 1 << 1,
    IOMMU_HW_CAP_PCI_PASID_PRIV: 1 << 2,
    IOMMU_HW_CAP_PCI_ATS_NOT_SUPPORTED: 1 << 3,
    IOMMU_HW_INFO_FLAG_INPUT_TYPE: 1 << 0,
    IOMMU_HW_INFO_VTD_ERRATA_772415_SPR17: 1 << 0,
    IOMMU_HW_INFO_ARM_SMMUV3_ERRATA_REPEAT_TLBI_CFGI: 1 << 0,
  } as const,
} as const;

/** `enum iommufd_hw_capabilities` (6.7; PASID bits 6.15, ATS_NOT_SUPPORTED 6.18) and `iommufd_hw_info_flags` (6.17). */
export const HwCapabilities: ConstantGroup<typeof HwCapabilitiesDeclaration.values> = defineConstants(
  HwCapabilitiesDeclaration,
);

/** The declaration of `struct iommu_hw_info` behind {@linkcode IommuHwInfo}: its one definition. */
export const IommuHwInfoLayout = {
  name: "iommu_hw_info",
  since: "6.6",
  header: H,
  size: 40,
  minSize: 32,
  doc: "Query a device's IOMMU: driver-specific data (VT-d registers, SMMUv3 IDRs), PASID width, capabilities.",
  fields: {
    size: { type: "u32", offset: 0, role: "size", doc: "sizeof(struct iommu_hw_info)" },
    flags: { type: "u32", offset: 4, flags: { IOMMU_HW_INFO_FLAG_INPUT_TYPE: 1 }, doc: "iommufd_hw_info_flags" },
    dev_id: { type: "u32", offset: 8, doc: "device to query (from VFIO_DEVICE_BIND_IOMMUFD or the mock)" },
    data_len: { type: "u32", offset: 12, doc: "input: buffer length; output: bytes the kernel has" },
    data_uptr: { type: "u64", offset: 16, doc: "user pointer to the driver data buffer" },
    in_data_type: {
      type: "u32",
      offset: 24,
      aliasOf: "out_data_type",
      doc: "input with IOMMU_HW_INFO_FLAG_INPUT_TYPE: the type wanted",
    },
    out_data_type: { type: "u32", offset: 24, aliasOf: "in_data_type", doc: "output: enum iommu_hw_info_type" },
    out_max_pasid_log2: { type: "u8", offset: 28, doc: "output: PASID width in bits; 0 = no PASID" },
    __reserved: { type: "u8", offset: 29, count: 3, reserved: true, doc: "must be 0" },
    out_capabilities: { type: "u64", offset: 32, doc: "output: enum iommufd_hw_capabilities" },
  },
} as const;

/** `struct iommu_hw_info` (6.6; capabilities 6.7, PASID width 6.15, in_data_type 6.17). */
export const IommuHwInfo: Struct<typeof IommuHwInfoLayout.fields> = defineStruct(IommuHwInfoLayout);

/** The declaration of `struct iommu_hw_info_vtd` behind {@linkcode IommuHwInfoVtd}: its one definition. */
export const IommuHwInfoVtdLayout = {
  name: "iommu_hw_info_vtd",
  since: "6.6",
  header: H,
  size: 24,
  doc: "Intel VT-d hardware information: the CAP and ECAP registers.",
  fields: {
    flags: {
      type: "u32",
      offset: 0,
      flags: { IOMMU_HW_INFO_VTD_ERRATA_772415_SPR17: 1 },
      doc: "iommu_hw_info_vtd_flags",
    },
    __reserved: { type: "u32", offset: 4, reserved: true, doc: "must be 0" },
    cap_reg: { type: "u64", offset: 8, doc: "VT-d Capability Register (spec 11.4.2)" },
    ecap_reg: { type: "u64", offset: 16, doc: "VT-d Extended Capability Register (spec 11.4.3)" },
  },
} as const;

/** `struct iommu_hw_info_vtd` (6.6): VT-d capability registers. */
export const IommuHwInfoVtd: Struct<typeof IommuHwInfoVtdLayout.fields> = defineStruct(IommuHwInfoVtdLayout);

/** The declaration of `struct iommu_hw_info_arm_smmuv3` behind {@linkcode IommuHwInfoArmSmmuv3}: its one definition. */
export const IommuHwInfoArmSmmuv3Layout = {
  name: "iommu_hw_info_arm_smmuv3",
  since: "6.13",
  header: H,
  size: 40,
  doc: "ARM SMMUv3 hardware information: IDR0-5, IIDR, AIDR.",
  fields: {
    flags: {
      type: "u32",
      offset: 0,
      flags: { IOMMU_HW_INFO_ARM_SMMUV3_ERRATA_REPEAT_TLBI_CFGI: 1 },
      doc: "iommu_hw_info_arm_smmuv3_flags",
    },
    __reserved: { type: "u32", offset: 4, reserved: true, doc: "must be 0" },
    idr: { type: "u32", offset: 8, count: 6, doc: "SMMU_IDR0..5" },
    iidr: { type: "u32", offset: 32, doc: "SMMU_IIDR" },
    aidr: { type: "u32", offset: 36, doc: "SMMU_AIDR" },
  },
} as const;

/** `struct iommu_hw_info_arm_smmuv3` (6.13): SMMUv3 ID registers. */
export const IommuHwInfoArmSmmuv3: Struct<typeof IommuHwInfoArmSmmuv3Layout.fields> = defineStruct(
  IommuHwInfoArmSmmuv3Layout,
);

/** The declaration of `struct iommu_hw_info_tegra241_cmdqv` behind {@linkcode IommuHwInfoTegra241Cmdqv}: its one definition. */
export const IommuHwInfoTegra241CmdqvLayout = {
  name: "iommu_hw_info_tegra241_cmdqv",
  since: "6.17",
  header: H,
  size: 8,
  doc: "NVIDIA Tegra241 CMDQV hardware information: the fields of its global PARAM register a VMM emulates.",
  fields: {
    flags: { type: "u32", offset: 0, reserved: true, doc: "must be 0" },
    version: { type: "u8", offset: 4, doc: "CMDQ-V version (PARAM bits 3:0)" },
    log2vcmdqs: { type: "u8", offset: 5, doc: "log2 of the VCMDQs in all (PARAM bits 7:4)" },
    log2vsids: { type: "u8", offset: 6, doc: "log2 of the SID replacements (PARAM bits 15:12)" },
    __reserved: { type: "u8", offset: 7, reserved: true, doc: "must be 0" },
  },
} as const;

/** `struct iommu_hw_info_tegra241_cmdqv` (6.17): Tegra241 CMDQV PARAM fields. */
export const IommuHwInfoTegra241Cmdqv: Struct<typeof IommuHwInfoTegra241CmdqvLayout.fields> = defineStruct(
  IommuHwInfoTegra241CmdqvLayout,
);

/** The declaration of `struct iommu_hw_info_amd` behind {@linkcode IommuHwInfoAmd}: its one definition. */
export const IommuHwInfoAmdLayout = {
  name: "iommu_hw_info_amd",
  since: "7.x",
  header: H,
  size: 16,
  doc: "AMD IOMMU hardware information: the raw Extended Feature registers EFR (MMIO 0x30) and EFR2 (MMIO 0x1a0).",
  fields: {
    efr: { type: "u64", offset: 0, doc: "Extended Feature Register" },
    efr2: { type: "u64", offset: 8, doc: "Extended Feature 2 Register" },
  },
} as const;

/** `struct iommu_hw_info_amd` (7.x): AMD EFR and EFR2. */
export const IommuHwInfoAmd: Struct<typeof IommuHwInfoAmdLayout.fields> = defineStruct(IommuHwInfoAmdLayout);

// ------------------------------------------------------------------------------------------------- dirty tracking

/** The declaration of the dirty-tracking flags behind {@linkcode DirtyTrackingFlags}: their one definition. */
export const DirtyTrackingFlagsDeclaration = {
  name: "iommufd_hwpt_dirty_flags",
  header: H,
  since: "6.7",
  values: {
    IOMMU_HWPT_DIRTY_TRACKING_ENABLE: 1,
    IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR: 1,
  } as const,
} as const;

/** `enum iommufd_hwpt_set_dirty_tracking_flags` and `enum iommufd_hwpt_get_dirty_bitmap_flags` (6.7). */
export const DirtyTrackingFlags: ConstantGroup<typeof DirtyTrackingFlagsDeclaration.values> = defineConstants(
  DirtyTrackingFlagsDeclaration,
);

/** The declaration of `struct iommu_hwpt_set_dirty_tracking` behind {@linkcode IommuHwptSetDirtyTracking}: its one definition. */
export const IommuHwptSetDirtyTrackingLayout = {
  name: "iommu_hwpt_set_dirty_tracking",
  since: "6.7",
  header: H,
  size: 16,
  doc: "Start or stop dirty tracking on a paging HWPT allocated with IOMMU_HWPT_ALLOC_DIRTY_TRACKING.",
  fields: {
    size: { type: "u32", offset: 0, role: "size", doc: "sizeof(struct iommu_hwpt_set_dirty_tracking)" },
    flags: {
      type: "u32",
      offset: 4,
      flags: { IOMMU_HWPT_DIRTY_TRACKING_ENABLE: 1 },
      doc: "IOMMU_HWPT_DIRTY_TRACKING_ENABLE, or 0 to stop",
    },
    hwpt_id: { type: "u32", offset: 8, doc: "the paging HWPT" },
    __reserved: { type: "u32", offset: 12, reserved: true, doc: "must be 0" },
  },
} as const;

/** `struct iommu_hwpt_set_dirty_tracking` (6.7): toggle dirty tracking. */
export const IommuHwptSetDirtyTracking: Struct<typeof IommuHwptSetDirtyTrackingLayout.fields> = defineStruct(
  IommuHwptSetDirtyTrackingLayout,
);

/** The declaration of `struct iommu_hwpt_get_dirty_bitmap` behind {@linkcode IommuHwptGetDirtyBitmap}: its one definition. */
export const IommuHwptGetDirtyBitmapLayout = {
  name: "iommu_hwpt_get_dirty_bitmap",
  since: "6.7",
  header: H,
  size: 48,
  doc: "Read (and by default clear) the dirty bits of [iova, iova+length) into a bitmap, one bit per page_size; " +
    "bit i covers iova + i * page_size. The kernel writes whole u64 words.",
  fields: {
    size: { type: "u32", offset: 0, role: "size", doc: "sizeof(struct iommu_hwpt_get_dirty_bitmap)" },
    hwpt_id: { type: "u32", offset: 4, doc: "the paging HWPT" },
    flags: {
      type: "u32",
      offset: 8,
      flags: { IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR: 1 },
      doc: "IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR: read without clearing",
    },
    __reserved: { type: "u32", offset: 12, reserved: true, doc: "must be 0" },
    iova: { type: "u64", offset: 16, doc: "IOVA of bit 0" },
    length: { type: "u64", offset: 24, doc: "bytes of IOVA the bitmap covers" },
    page_size: { type: "u64", offset: 32, doc: "bytes per bit" },
    data: { type: "u64", offset: 40, doc: "user pointer to the bitmap (u64 words)" },
  },
} as const;

/** `struct iommu_hwpt_get_dirty_bitmap` (6.7): read a dirty bitmap. */
export const IommuHwptGetDirtyBitmap: Struct<typeof IommuHwptGetDirtyBitmapLayout.fields> = defineStruct(
  IommuHwptGetDirtyBitmapLayout,
);

// --------------------------------------------------------------------------------------------------- invalidation

/** The declaration of `iommu_hwpt_invalidate_data_type` behind {@linkcode HwptInvalidateDataType}: its one definition. */
export const HwptInvalidateDataTypeDeclaration = {
  name: "iommu_hwpt_invalidate_data_type",
  header: H,
  since: "6.8",
  values: {
    IOMMU_HWPT_INVALIDATE_DATA_VTD_S1: 0,
    IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3: 1,
    IOMMU_VTD_INV_FLAGS_LEAF: 1 << 0,
  } as const,
} as const;

/** `enum iommu_hwpt_invalidate_data_type` (6.8; SMMUv3 6.14) and `iommu_hwpt_vtd_s1_invalidate_flags`. */
export const HwptInvalidateDataType: ConstantGroup<typeof HwptInvalidateDataTypeDeclaration.values> = defineConstants(
  HwptInvalidateDataTypeDeclaration,
);

/** The declaration of `struct iommu_hwpt_vtd_s1_invalidate` behind {@linkcode IommuHwptVtdS1Invalidate}: its one definition. */
export const IommuHwptVtdS1InvalidateLayout = {
  name: "iommu_hwpt_vtd_s1_invalidate",
  since: "6.8",
  header: H,
  size: 24,
  doc: "VT-d stage-1 cache invalidation: {addr, npages}; {0, U64_MAX} is the whole address space.",
  fields: {
    addr: { type: "u64", offset: 0, doc: "start address, 4 KiB aligned" },
    npages: { type: "u64", offset: 8, doc: "number of 4 KiB pages; U64_MAX with addr 0 = everything" },
    flags: {
      type: "u32",
      offset: 16,
      flags: { IOMMU_VTD_INV_FLAGS_LEAF: 1 },
      doc: "IOMMU_VTD_INV_FLAGS_LEAF: only leaf entries changed",
    },
    __reserved: { type: "u32", offset: 20, reserved: true, doc: "must be 0" },
  },
} as const;

/** `struct iommu_hwpt_vtd_s1_invalidate` (6.8): one VT-d stage-1 IOTLB invalidation entry. */
export const IommuHwptVtdS1Invalidate: Struct<typeof IommuHwptVtdS1InvalidateLayout.fields> = defineStruct(
  IommuHwptVtdS1InvalidateLayout,
);

/** The declaration of `struct iommu_viommu_arm_smmuv3_invalidate` behind {@linkcode IommuViommuArmSmmuv3Invalidate}: its one definition. */
export const IommuViommuArmSmmuv3InvalidateLayout = {
  name: "iommu_viommu_arm_smmuv3_invalidate",
  since: "6.14",
  header: H,
  size: 16,
  doc: "A 128-bit SMMUv3 command (TLBI_NH_*, CFGI_*, ATC_INV) as the guest wrote it, little-endian.",
  fields: {
    cmd: { type: "u64", offset: 0, count: 2, doc: "command words 0-1, little-endian" },
  },
} as const;

/** `struct iommu_viommu_arm_smmuv3_invalidate` (6.14): one raw SMMUv3 command. */
export const IommuViommuArmSmmuv3Invalidate: Struct<typeof IommuViommuArmSmmuv3InvalidateLayout.fields> = defineStruct(
  IommuViommuArmSmmuv3InvalidateLayout,
);

/** The declaration of `struct iommu_hwpt_invalidate` behind {@linkcode IommuHwptInvalidate}: its one definition. */
export const IommuHwptInvalidateLayout = {
  name: "iommu_hwpt_invalidate",
  since: "6.8",
  header: H,
  size: 32,
  doc: "Invalidate a nested HWPT's or a vIOMMU's caches. entry_num is in/out: on return, success or error, it " +
    "holds how many entries were handled; entry_num 0 probes whether data_type is supported.",
  fields: {
    size: { type: "u32", offset: 0, role: "size", doc: "sizeof(struct iommu_hwpt_invalidate)" },
    hwpt_id: { type: "u32", offset: 4, doc: "nested HWPT or vIOMMU id" },
    data_uptr: { type: "u64", offset: 8, doc: "user pointer to the entry array" },
    data_type: { type: "u32", offset: 16, doc: "enum iommu_hwpt_invalidate_data_type (or a selftest type)" },
    entry_len: { type: "u32", offset: 20, doc: "bytes per entry: exactly the kernel's entry size" },
    entry_num: { type: "u32", offset: 24, doc: "input: entries; output: entries handled" },
    __reserved: { type: "u32", offset: 28, reserved: true, doc: "must be 0" },
  },
} as const;

/** `struct iommu_hwpt_invalidate` (6.8; vIOMMU target 6.13): send an array of driver invalidation entries. */
export const IommuHwptInvalidate: Struct<typeof IommuHwptInvalidateLayout.fields> = defineStruct(
  IommuHwptInvalidateLayout,
);

// ------------------------------------------------------------------------------------------------- fault queues

/** The declaration of `iommu_hwpt_pgfault` behind {@linkcode PgfaultConstants}: its one definition. */
export const PgfaultConstantsDeclaration = {
  name: "iommu_hwpt_pgfault",
  header: H,
  since: "6.11",
  values: {
    IOMMU_PGFAULT_FLAGS_PASID_VALID: 1 << 0,
    IOMMU_PGFAULT_FLAGS_LAST_PAGE: 1 << 1,
    IOMMU_PGFAULT_PERM_READ: 1 << 0,
    IOMMU_PGFAULT_PERM_WRITE: 1 << 1,
    IOMMU_PGFAULT_PERM_EXEC: 1 << 2,
    IOMMU_PGFAULT_PERM_PRIV: 1 << 3,
    IOMMUFD_PAGE_RESP_SUCCESS: 0,
    IOMMUFD_PAGE_RESP_INVALID: 1,
  } as const,
} as const;

/** Page fault flags, permissions and response codes (6.11). */
export const PgfaultConstants: ConstantGroup<typeof PgfaultConstantsDeclaration.values> = defineConstants(
  PgfaultConstantsDeclaration,
);

/** The declaration of `struct iommu_hwpt_pgfault` behind {@linkcode IommuHwptPgfault}: its one definition. */
export const IommuHwptPgfaultLayout = {
  name: "iommu_hwpt_pgfault",
  since: "6.11",
  header: H,
  size: 40,
  doc: "An I/O page fault reported on a fault queue fd; answered with struct iommu_hwpt_page_response.",
  fields: {
    flags: {
      type: "u32",
      offset: 0,
      flags: { IOMMU_PGFAULT_FLAGS_PASID_VALID: 1, IOMMU_PGFAULT_FLAGS_LAST_PAGE: 2 },
      doc: "iommu_hwpt_pgfault_flags",
    },
    dev_id: { type: "u32", offset: 4, doc: "faulting device's iommufd id" },
    pasid: { type: "u32", offset: 8, doc: "PASID, valid with PASID_VALID" },
    grpid: { type: "u32", offset: 12, doc: "page request group index" },
    perm: {
      type: "u32",
      offset: 16,
      flags: { READ: 1, WRITE: 2, EXEC: 4, PRIV: 8 },
      doc: "iommu_hwpt_pgfault_perm: access requested",
    },
    __reserved: { type: "u32", offset: 20, reserved: true, doc: "must be 0" },
    addr: { type: "u64", offset: 24, doc: "faulting address" },
    length: { type: "u32", offset: 32, doc: "bytes of the fault" },
    cookie: { type: "u32", offset: 36, doc: "kernel-chosen cookie to quote in the response" },
  },
} as const;

/** `struct iommu_hwpt_pgfault` (6.11): one I/O page fault record read from a fault queue fd. */
export const IommuHwptPgfault: Struct<typeof IommuHwptPgfaultLayout.fields> = defineStruct(IommuHwptPgfaultLayout);

/** The declaration of `struct iommu_hwpt_page_response` behind {@linkcode IommuHwptPageResponse}: its one definition. */
export const IommuHwptPageResponseLayout = {
  name: "iommu_hwpt_page_response",
  since: "6.11",
  header: H,
  size: 8,
  doc: "Response to the last fault of a group, matched by cookie.",
  fields: {
    cookie: { type: "u32", offset: 0, doc: "the cookie of the group's last fault" },
    code: {
      type: "u32",
      offset: 4,
      values: { IOMMUFD_PAGE_RESP_SUCCESS: 0, IOMMUFD_PAGE_RESP_INVALID: 1 },
      doc: "enum iommufd_page_response_code",
    },
  },
} as const;

/** `struct iommu_hwpt_page_response` (6.11): the answer to a fault group, written to the fault fd. */
export const IommuHwptPageResponse: Struct<typeof IommuHwptPageResponseLayout.fields> = defineStruct(
  IommuHwptPageResponseLayout,
);

/** The declaration of `struct iommu_fault_alloc` behind {@linkcode IommuFaultAlloc}: its one definition. */
export const IommuFaultAllocLayout = {
  name: "iommu_fault_alloc",
  since: "6.11",
  header: H,
  size: 16,
  doc: "Allocate a fault queue object and its fd (read faults, write responses).",
  fields: {
    size: { type: "u32", offset: 0, role: "size", doc: "sizeof(struct iommu_fault_alloc)" },
    flags: { type: "u32", offset: 4, reserved: true, doc: "must be 0" },
    out_fault_id: { type: "u32", offset: 8, doc: "output: fault queue id" },
    out_fault_fd: { type: "u32", offset: 12, doc: "output: fault queue fd" },
  },
} as const;

/** `struct iommu_fault_alloc` (6.11): allocate a fault queue. */
export const IommuFaultAlloc: Struct<typeof IommuFaultAllocLayout.fields> = defineStruct(IommuFaultAllocLayout);

// ---------------------------------------------------------------------------------------------- vIOMMU / vDEVICE

/** The declaration of `iommu_viommu_type` behind {@linkcode ViommuType}: its one definition. */
export const ViommuTypeDeclaration = {
  name: "iommu_viommu_type",
  header: H,
  since: "6.13",
  values: {
    IOMMU_VIOMMU_TYPE_DEFAULT: 0,
    IOMMU_VIOMMU_TYPE_ARM_SMMUV3: 1,
    IOMMU_VIOMMU_TYPE_TEGRA241_CMDQV: 2,
  } as const,
} as const;

/** `enum iommu_viommu_type` (6.13). The selftest type is in selftest.ts. */
export const ViommuType: ConstantGroup<typeof ViommuTypeDeclaration.values> = defineConstants(ViommuTypeDeclaration);

/** The declaration of `struct iommu_viommu_alloc` behind {@linkcode IommuViommuAlloc}: its one definition. */
export const IommuViommuAllocLayout = {
  name: "iommu_viommu_alloc",
  since: "6.13",
  header: H,
  size: 40,
  minSize: 24,
  doc: "Allocate a vIOMMU over a nesting-parent HWPT: the host object behind a guest's IOMMU instance.",
  fields: {
    size: { type: "u32", offset: 0, role: "size", doc: "sizeof(struct iommu_viommu_alloc)" },
    flags: { type: "u32", offset: 4, reserved: true, doc: "must be 0" },
    type: { type: "u32", offset: 8, doc: "enum iommu_viommu_type (or the selftest type)" },
    dev_id: { type: "u32", offset: 12, doc: "a device behind the physical IOMMU" },
    hwpt_id: { type: "u32", offset: 16, doc: "nesting-parent HWPT" },
    out_viommu_id: { type: "u32", offset: 20, doc: "output: vIOMMU id" },
    data_len: { type: "u32", offset: 24, doc: "bytes at data_uptr" },
    __reserved: { type: "u32", offset: 28, reserved: true, doc: "must be 0" },
    data_uptr: { type: "u64", offset: 32, doc: "user pointer to type-specific data" },
  },
} as const;

/** `struct iommu_viommu_alloc` (6.13; data_len/data_uptr 6.17): allocate a virtual IOMMU. */
export const IommuViommuAlloc: Struct<typeof IommuViommuAllocLayout.fields> = defineStruct(IommuViommuAllocLayout);

/** The declaration of `struct iommu_vdevice_alloc` behind {@linkcode IommuVdeviceAlloc}: its one definition. */
export const IommuVdeviceAllocLayout = {
  name: "iommu_vdevice_alloc",
  since: "6.13",
  header: H,
  size: 24,
  doc: "Allocate a vDEVICE: a device's virtual id (vSID, vRID) on a vIOMMU.",
  fields: {
    size: { type: "u32", offset: 0, role: "size", doc: "sizeof(struct iommu_vdevice_alloc)" },
    viommu_id: { type: "u32", offset: 4, doc: "vIOMMU" },
    dev_id: { type: "u32", offset: 8, doc: "physical device" },
    out_vdevice_id: { type: "u32", offset: 12, doc: "output: vDEVICE id" },
    virt_id: { type: "u64", offset: 16, doc: "the device's id as the guest sees it" },
  },
} as const;

/** `struct iommu_vdevice_alloc` (6.13): tell a vIOMMU a device's guest-visible id. */
export const IommuVdeviceAlloc: Struct<typeof IommuVdeviceAllocLayout.fields> = defineStruct(IommuVdeviceAllocLayout);

/** The declaration of `iommu_veventq` behind {@linkcode VeventqConstants}: its one definition. */
export const VeventqConstantsDeclaration = {
  name: "iommu_veventq",
  header: H,
  since: "6.15",
  values: {
    IOMMU_VEVENTQ_FLAG_LOST_EVENTS: 1 << 0,
    IOMMU_VEVENTQ_TYPE_DEFAULT: 0,
    IOMMU_VEVENTQ_TYPE_ARM_SMMUV3: 1,
    IOMMU_VEVENTQ_TYPE_TEGRA241_CMDQV: 2,
  } as const,
} as const;

/** vEVENTQ flags and types (6.15). The selftest type is in selftest.ts. */
export const VeventqConstants: ConstantGroup<typeof VeventqConstantsDeclaration.values> = defineConstants(
  VeventqConstantsDeclaration,
);

/** The declaration of `struct iommufd_vevent_header` behind {@linkcode IommufdVeventHeader}: its one definition. */
export const IommufdVeventHeaderLayout = {
  name: "iommufd_vevent_header",
  since: "6.15",
  header: H,
  size: 8,
  doc: "Header of a vEVENTQ record: sequence number (wraps at INT_MAX) and the lost-events flag.",
  fields: {
    flags: { type: "u32", offset: 0, flags: { IOMMU_VEVENTQ_FLAG_LOST_EVENTS: 1 }, doc: "iommu_veventq_flag" },
    sequence: { type: "u32", offset: 4, doc: "record sequence number, 0..INT_MAX" },
  },
} as const;

/** `struct iommufd_vevent_header` (6.15): precedes every vEVENTQ record. */
export const IommufdVeventHeader: Struct<typeof IommufdVeventHeaderLayout.fields> = defineStruct(
  IommufdVeventHeaderLayout,
);

/** The declaration of `struct iommu_vevent_arm_smmuv3` behind {@linkcode IommuVeventArmSmmuv3}: its one definition. */
export const IommuVeventArmSmmuv3Layout = {
  name: "iommu_vevent_arm_smmuv3",
  since: "6.15",
  header: H,
  size: 32,
  doc: "An SMMUv3 event (256 bits, StreamID replaced by the vSID).",
  fields: {
    evt: { type: "u64", offset: 0, count: 4, doc: "event record words, little-endian" },
  },
} as const;

/** `struct iommu_vevent_arm_smmuv3` (6.15): an SMMUv3 event record for the guest's EVTQ. */
export const IommuVeventArmSmmuv3: Struct<typeof IommuVeventArmSmmuv3Layout.fields> = defineStruct(
  IommuVeventArmSmmuv3Layout,
);

/** The declaration of `struct iommu_veventq_alloc` behind {@linkcode IommuVeventqAlloc}: its one definition. */
export const IommuVeventqAllocLayout = {
  name: "iommu_veventq_alloc",
  since: "6.15",
  header: H,
  size: 32,
  doc: "Allocate a virtual event queue: events of one type from a vIOMMU, read from its fd.",
  fields: {
    size: { type: "u32", offset: 0, role: "size", doc: "sizeof(struct iommu_veventq_alloc)" },
    flags: { type: "u32", offset: 4, reserved: true, doc: "must be 0" },
    viommu_id: { type: "u32", offset: 8, doc: "vIOMMU" },
    type: { type: "u32", offset: 12, doc: "enum iommu_veventq_type (or the selftest type)" },
    veventq_depth: { type: "u32", offset: 16, doc: "max records queued before events are lost" },
    out_veventq_id: { type: "u32", offset: 20, doc: "output: vEVENTQ id" },
    out_veventq_fd: { type: "u32", offset: 24, doc: "output: vEVENTQ fd" },
    __reserved: { type: "u32", offset: 28, reserved: true, doc: "must be 0" },
  },
} as const;

/** `struct iommu_veventq_alloc` (6.15): allocate a vEVENTQ on a vIOMMU. */
export const IommuVeventqAlloc: Struct<typeof IommuVeventqAllocLayout.fields> = defineStruct(IommuVeventqAllocLayout);

/** The declaration of `iommu_hw_queue_type` behind {@linkcode HwQueueType}: its one definition. */
export const HwQueueTypeDeclaration = {
  name: "iommu_hw_queue_type",
  header: H,
  since: "6.17",
  values: { IOMMU_HW_QUEUE_TYPE_DEFAULT: 0, IOMMU_HW_QUEUE_TYPE_TEGRA241_CMDQV: 1 } as const,
} as const;

/** `enum iommu_hw_queue_type` (6.17). The selftest type is in selftest.ts. */
export const HwQueueType: ConstantGroup<typeof HwQueueTypeDeclaration.values> = defineConstants(HwQueueTypeDeclaration);

/** The declaration of `struct iommu_hw_queue_alloc` behind {@linkcode IommuHwQueueAlloc}: its one definition. */
export const IommuHwQueueAllocLayout = {
  name: "iommu_hw_queue_alloc",
  since: "6.17",
  header: H,
  size: 40,
  doc: "Allocate a hardware queue on a vIOMMU: the IOMMU reads a guest queue (at a guest-physical address of the " +
    "nesting parent) directly, with no relay in between.",
  fields: {
    size: { type: "u32", offset: 0, role: "size", doc: "sizeof(struct iommu_hw_queue_alloc)" },
    flags: { type: "u32", offset: 4, reserved: true, doc: "must be 0" },
    viommu_id: { type: "u32", offset: 8, doc: "vIOMMU" },
    type: { type: "u32", offset: 12, doc: "enum iommu_hw_queue_type (or the selftest type)" },
    index: { type: "u32", offset: 16, doc: "the queue's index among this vIOMMU's queues of this type" },
    out_hw_queue_id: { type: "u32", offset: 20, doc: "output: HW queue id" },
    nesting_parent_iova: {
      type: "u64",
      offset: 24,
      doc: "guest-physical base of the queue memory (mapped in the IOAS)",
    },
    length: { type: "u64", offset: 32, doc: "bytes of queue memory" },
  },
} as const;

/** `struct iommu_hw_queue_alloc` (6.17): allocate a vIOMMU hardware queue. */
export const IommuHwQueueAlloc: Struct<typeof IommuHwQueueAllocLayout.fields> = defineStruct(IommuHwQueueAllocLayout);

// ------------------------------------------------------------------------------------------------------ ioctls

const cmd = IommufdCmd.values;
/** `IOMMU_DESTROY`. */
export const IOMMU_DESTROY: Ioctl = defineIoctl({
  name: "IOMMU_DESTROY",
  request: io(IOMMUFD_TYPE, cmd.IOMMUFD_CMD_DESTROY),
  struct: IommuDestroy,
  since: "6.2",
});
/** `IOMMU_IOAS_ALLOC`. */
export const IOMMU_IOAS_ALLOC: Ioctl = defineIoctl({
  name: "IOMMU_IOAS_ALLOC",
  request: io(IOMMUFD_TYPE, cmd.IOMMUFD_CMD_IOAS_ALLOC),
  struct: IommuIoasAlloc,
  since: "6.2",
});
/** `IOMMU_IOAS_IOVA_RANGES`. */
export const IOMMU_IOAS_IOVA_RANGES: Ioctl = defineIoctl({
  name: "IOMMU_IOAS_IOVA_RANGES",
  request: io(IOMMUFD_TYPE, cmd.IOMMUFD_CMD_IOAS_IOVA_RANGES),
  struct: IommuIoasIovaRanges,
  since: "6.2",
});
/** `IOMMU_IOAS_MAP`. */
export const IOMMU_IOAS_MAP: Ioctl = defineIoctl({
  name: "IOMMU_IOAS_MAP",
  request: io(IOMMUFD_TYPE, cmd.IOMMUFD_CMD_IOAS_MAP),
  struct: IommuIoasMap,
  since: "6.2",
});
/** `IOMMU_IOAS_UNMAP`. */
export const IOMMU_IOAS_UNMAP: Ioctl = defineIoctl({
  name: "IOMMU_IOAS_UNMAP",
  request: io(IOMMUFD_TYPE, cmd.IOMMUFD_CMD_IOAS_UNMAP),
  struct: IommuIoasUnmap,
  since: "6.2",
});
/** `IOMMU_OPTION`. */
export const IOMMU_OPTION: Ioctl = defineIoctl({
  name: "IOMMU_OPTION",
  request: io(IOMMUFD_TYPE, cmd.IOMMUFD_CMD_OPTION),
  struct: IommuOption,
  since: "6.2",
});
/** `IOMMU_HWPT_ALLOC`. */
export const IOMMU_HWPT_ALLOC: Ioctl = defineIoctl({
  name: "IOMMU_HWPT_ALLOC",
  request: io(IOMMUFD_TYPE, cmd.IOMMUFD_CMD_HWPT_ALLOC),
  struct: IommuHwptAlloc,
  since: "6.6",
});
/** `IOMMU_GET_HW_INFO`. */
export const IOMMU_GET_HW_INFO: Ioctl = defineIoctl({
  name: "IOMMU_GET_HW_INFO",
  request: io(IOMMUFD_TYPE, cmd.IOMMUFD_CMD_GET_HW_INFO),
  struct: IommuHwInfo,
  since: "6.6",
});
/** `IOMMU_HWPT_INVALIDATE`. */
export const IOMMU_HWPT_INVALIDATE: Ioctl = defineIoctl({
  name: "IOMMU_HWPT_INVALIDATE",
  request: io(IOMMUFD_TYPE, cmd.IOMMUFD_CMD_HWPT_INVALIDATE),
  struct: IommuHwptInvalidate,
  since: "6.8",
});
/** `IOMMU_FAULT_QUEUE_ALLOC`. */
export const IOMMU_FAULT_QUEUE_ALLOC: Ioctl = defineIoctl({
  name: "IOMMU_FAULT_QUEUE_ALLOC",
  request: io(IOMMUFD_TYPE, cmd.IOMMUFD_CMD_FAULT_QUEUE_ALLOC),
  struct: IommuFaultAlloc,
  since: "6.11",
});
/** `IOMMU_VIOMMU_ALLOC`. */
export const IOMMU_VIOMMU_ALLOC: Ioctl = defineIoctl({
  name: "IOMMU_VIOMMU_ALLOC",
  request: io(IOMMUFD_TYPE, cmd.IOMMUFD_CMD_VIOMMU_ALLOC),
  struct: IommuViommuAlloc,
  since: "6.13",
});
/** `IOMMU_VDEVICE_ALLOC`. */
export const IOMMU_VDEVICE_ALLOC: Ioctl = defineIoctl({
  name: "IOMMU_VDEVICE_ALLOC",
  request: io(IOMMUFD_TYPE, cmd.IOMMUFD_CMD_VDEVICE_ALLOC),
  struct: IommuVdeviceAlloc,
  since: "6.13",
});
/** `IOMMU_VEVENTQ_ALLOC`. */
export const IOMMU_VEVENTQ_ALLOC: Ioctl = defineIoctl({
  name: "IOMMU_VEVENTQ_ALLOC",
  request: io(IOMMUFD_TYPE, cmd.IOMMUFD_CMD_VEVENTQ_ALLOC),
  struct: IommuVeventqAlloc,
  since: "6.15",
});

/** `IOMMU_IOAS_MAP_FILE`. */
export const IOMMU_IOAS_MAP_FILE: Ioctl = defineIoctl({
  name: "IOMMU_IOAS_MAP_FILE",
  request: io(IOMMUFD_TYPE, cmd.IOMMUFD_CMD_IOAS_MAP_FILE),
  struct: IommuIoasMapFile,
  since: "6.13",
});
/** `IOMMU_HWPT_SET_DIRTY_TRACKING`. */
export const IOMMU_HWPT_SET_DIRTY_TRACKING: Ioctl = defineIoctl({
  name: "IOMMU_HWPT_SET_DIRTY_TRACKING",
  request: io(IOMMUFD_TYPE, cmd.IOMMUFD_CMD_HWPT_SET_DIRTY_TRACKING),
  struct: IommuHwptSetDirtyTracking,
  since: "6.7",
});
/** `IOMMU_HWPT_GET_DIRTY_BITMAP`. */
export const IOMMU_HWPT_GET_DIRTY_BITMAP: Ioctl = defineIoctl({
  name: "IOMMU_HWPT_GET_DIRTY_BITMAP",
  request: io(IOMMUFD_TYPE, cmd.IOMMUFD_CMD_HWPT_GET_DIRTY_BITMAP),
  struct: IommuHwptGetDirtyBitmap,
  since: "6.7",
});
/** `IOMMU_HW_QUEUE_ALLOC`. */
export const IOMMU_HW_QUEUE_ALLOC: Ioctl = defineIoctl({
  name: "IOMMU_HW_QUEUE_ALLOC",
  request: io(IOMMUFD_TYPE, cmd.IOMMUFD_CMD_HW_QUEUE_ALLOC),
  struct: IommuHwQueueAlloc,
  since: "6.17",
});

/** Everything this module defines, for the golden check and the registry. */
export const IOMMUFD_UAPI = {
  structs: [
    IommuDestroy,
    IommuIoasAlloc,
    IommuIovaRange,
    IommuIoasIovaRanges,
    IommuIoasMap,
    IommuIoasMapFile,
    IommuIoasUnmap,
    IommuOption,
    IommuHwptVtdS1,
    IommuHwptArmSmmuv3,
    IommuHwptAmdGuest,
    IommuHwptAlloc,
    IommuHwInfo,
    IommuHwInfoVtd,
    IommuHwInfoArmSmmuv3,
    IommuHwInfoTegra241Cmdqv,
    IommuHwInfoAmd,
    IommuHwptSetDirtyTracking,
    IommuHwptGetDirtyBitmap,
    IommuHwptVtdS1Invalidate,
    IommuViommuArmSmmuv3Invalidate,
    IommuHwptInvalidate,
    IommuHwptPgfault,
    IommuHwptPageResponse,
    IommuFaultAlloc,
    IommuViommuAlloc,
    IommuVdeviceAlloc,
    IommufdVeventHeader,
    IommuVeventArmSmmuv3,
    IommuVeventqAlloc,
    IommuHwQueueAlloc,
  ],
  constants: [
    IommufdCmd,
    IoasMapFlags,
    IommufdOption,
    HwptAllocFlags,
    HwptDataType,
    VtdS1Flags,
    HwInfoType,
    HwCapabilities,
    HwptInvalidateDataType,
    PgfaultConstants,
    ViommuType,
    VeventqConstants,
    DirtyTrackingFlags,
    HwQueueType,
  ],
  ioctls: [
    IOMMU_DESTROY,
    IOMMU_IOAS_ALLOC,
    IOMMU_IOAS_IOVA_RANGES,
    IOMMU_IOAS_MAP,
    IOMMU_IOAS_UNMAP,
    IOMMU_OPTION,
    IOMMU_HWPT_ALLOC,
    IOMMU_GET_HW_INFO,
    IOMMU_HWPT_INVALIDATE,
    IOMMU_FAULT_QUEUE_ALLOC,
    IOMMU_VIOMMU_ALLOC,
    IOMMU_VDEVICE_ALLOC,
    IOMMU_VEVENTQ_ALLOC,
    IOMMU_IOAS_MAP_FILE,
    IOMMU_HWPT_SET_DIRTY_TRACKING,
    IOMMU_HWPT_GET_DIRTY_BITMAP,
    IOMMU_HW_QUEUE_ALLOC,
  ],
} as const;
