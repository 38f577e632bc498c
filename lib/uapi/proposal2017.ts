/**
 * The 2017 proposals, as posted and never merged: `struct vfio_iommu_tlb_invalidate` with
 * `VFIO_IOMMU_TLB_INVALIDATE` (Jean-Philippe Brucker's reply), and `struct vfio_device_svm` with
 * `VFIO_IOMMU_SVM_BIND_TASK` (Liu Yi L's VT-d SVM RFC). No kernel declares them (`inHeaders: false`), so the
 * golden check skips them; `VFIO_BASE + 22` and `+ 23` are still unused in 7.3's vfio.h.
 *
 * The thread fixed only the scope bits (PASID 1<<0, VADDR 1<<1). **The NO_PASID and VADDR_LEAF flag values and
 * the layout of the vendor tail are iommu-relay's own**, marked `ownValues`.
 *
 * @module
 */
import { defineStruct, type Struct } from "./struct.ts";
import { type ConstantGroup, defineConstants, defineIoctl, io, type Ioctl } from "./ioctl.ts";
import { VfioBase } from "./vfio.ts";

const H = "2017 proposal (never merged)";

/** The declaration of `vfio_iommu_tlb_invalidate` behind {@linkcode TlbInvalidate2017}: its one definition. */
export const TlbInvalidate2017Declaration = {
  name: "vfio_iommu_tlb_invalidate",
  header: H,
  since: "proposal",
  ownValues: ["VFIO_IOMMU_INVALIDATE_NO_PASID", "VFIO_IOMMU_INVALIDATE_VADDR_LEAF"],
  values: {
    VFIO_IOMMU_INVALIDATE_PASID: 1 << 0,
    VFIO_IOMMU_INVALIDATE_VADDR: 1 << 1,
    VFIO_IOMMU_INVALIDATE_NO_PASID: 1 << 0,
    VFIO_IOMMU_INVALIDATE_VADDR_LEAF: 1 << 1,
  } as const,
} as const;

/** Scope bits (from the thread) and flags (iommu-relay's own values). */
export const TlbInvalidate2017: ConstantGroup<typeof TlbInvalidate2017Declaration.values> = defineConstants(
  TlbInvalidate2017Declaration,
);

/** The declaration of `struct vfio_iommu_tlb_invalidate` behind {@linkcode VfioIommuTlbInvalidate}: its one definition. */
export const VfioIommuTlbInvalidateLayout = {
  name: "vfio_iommu_tlb_invalidate",
  since: "proposal",
  inHeaders: false,
  header: H,
  size: 32,
  doc: "A container-wide TLB invalidation: scope narrows it to a PASID, a VA range, or both.",
  fields: {
    argsz: { type: "u32", offset: 0, role: "size", doc: "32 + bytes of vendor tail" },
    scope: {
      type: "u32",
      offset: 4,
      flags: { VFIO_IOMMU_INVALIDATE_PASID: 1, VFIO_IOMMU_INVALIDATE_VADDR: 2 },
      doc: "PASID (1<<0): pasid is valid; VADDR (1<<1): vaddr/size are valid; neither: everything",
    },
    flags: {
      type: "u32",
      offset: 8,
      flags: { VFIO_IOMMU_INVALIDATE_NO_PASID: 1, VFIO_IOMMU_INVALIDATE_VADDR_LEAF: 2 },
      doc: "NO_PASID: non-PASID entries only; VADDR_LEAF: only leaf entries changed (values: iommu-relay's own)",
    },
    pasid: { type: "u32", offset: 12, doc: "PASID, with scope PASID" },
    vaddr: { type: "u64", offset: 16, doc: "first byte address, with scope VADDR" },
    size: { type: "u64", offset: 24, doc: "bytes, with scope VADDR" },
  },
} as const;

/** `struct vfio_iommu_tlb_invalidate` (2017): 32 bytes, then an opaque little-endian vendor tail. */
export const VfioIommuTlbInvalidate: Struct<typeof VfioIommuTlbInvalidateLayout.fields> = defineStruct(
  VfioIommuTlbInvalidateLayout,
);

/** The declaration of `struct vfio_iommu_tlb_invalidate.tail` behind {@linkcode TlbInvalidate2017Tail}: its one definition. */
export const TlbInvalidate2017TailLayout = {
  name: "vfio_iommu_tlb_invalidate.tail",
  since: "proposal",
  inHeaders: false,
  header: H,
  size: 16,
  doc: "Vendor hints (iommu-relay's own layout).",
  fields: {
    version: { type: "u32", offset: 0, values: { V1: 1 }, doc: "1" },
    hints: { type: "u32", offset: 4, flags: { GLOBAL: 1 }, doc: "bit 0: VT-d global entries too" },
    ttl: { type: "u32", offset: 8, values: { UNKNOWN: 0, L1: 1, L2: 2, L3: 3 }, doc: "SMMUv3 TTL hint, 0 = unknown" },
    __reserved: { type: "u32", offset: 12, reserved: true, doc: "must be 0" },
  },
} as const;

/**
 * iommu-relay's vendor tail (16 bytes after the 32-byte head): the 2017 "opaque, little-endian, model-specific"
 * data, given a fixed layout here.
 */
export const TlbInvalidate2017Tail: Struct<typeof TlbInvalidate2017TailLayout.fields> = defineStruct(
  TlbInvalidate2017TailLayout,
);

/** The declaration of `vfio_device_svm` behind {@linkcode DeviceSvm2017}: its one definition. */
export const DeviceSvm2017Declaration = {
  name: "vfio_device_svm",
  header: H,
  since: "proposal",
  values: { VFIO_SVM_BIND_PASIDTBL: 1 << 0, VFIO_SVM_BIND_PASID: 1 << 1, VFIO_SVM_BIND_PGTABLE: 1 << 2 } as const,
} as const;

/** `VFIO_SVM_*` flags of `struct vfio_device_svm` (Liu Yi L, 2017). */
export const DeviceSvm2017: ConstantGroup<typeof DeviceSvm2017Declaration.values> = defineConstants(
  DeviceSvm2017Declaration,
);

/** The declaration of `struct vfio_device_svm` behind {@linkcode VfioDeviceSvm}: its one definition. */
export const VfioDeviceSvmLayout = {
  name: "vfio_device_svm",
  since: "proposal",
  inHeaders: false,
  header: H,
  size: 12,
  doc: "Shared-virtual-memory bind: a PASID table, a PASID, or a guest page table.",
  fields: {
    argsz: { type: "u32", offset: 0, role: "size", doc: "12 + length" },
    flags: {
      type: "u32",
      offset: 4,
      flags: { VFIO_SVM_BIND_PASIDTBL: 1, VFIO_SVM_BIND_PASID: 2, VFIO_SVM_BIND_PGTABLE: 4 },
      doc: "what is bound",
    },
    length: { type: "u32", offset: 8, doc: "bytes of data after the head" },
  },
} as const;

/** `struct vfio_device_svm` (2017): 12 bytes, then `length` bytes of bind data. */
export const VfioDeviceSvm: Struct<typeof VfioDeviceSvmLayout.fields> = defineStruct(VfioDeviceSvmLayout);

/** The declaration of `struct vfio_device_svm.pgtable` behind {@linkcode SvmBindPgtable2017}: its one definition. */
export const SvmBindPgtable2017Layout = {
  name: "vfio_device_svm.pgtable",
  since: "proposal",
  inHeaders: false,
  header: H,
  size: 24,
  doc: "Guest page-table bind (iommu-relay's own layout).",
  fields: {
    pasid: { type: "u32", offset: 0, doc: "PASID, or 0xffffffff for the RID" },
    format: {
      type: "u32",
      offset: 4,
      values: { VTD_S1: 1, SELFTEST: 2 },
      doc: "1 = VT-d first-stage, 2 = the selftest mock (table = IOTLB value)",
    },
    table: { type: "u64", offset: 8, doc: "guest-physical table root" },
    addr_width: { type: "u32", offset: 16, values: { W48: 48, W57: 57 }, doc: "48 or 57" },
    flags: { type: "u32", offset: 20, flags: { SRE: 1, EAFE: 2, WPE: 4 }, doc: "VT-d S1 flags" },
  },
} as const;

/**
 * iommu-relay's bind data for `VFIO_SVM_BIND_PGTABLE` (24 bytes): which PASID gets which guest page table.
 */
export const SvmBindPgtable2017: Struct<typeof SvmBindPgtable2017Layout.fields> = defineStruct(
  SvmBindPgtable2017Layout,
);

const base = VfioBase.values;
/** `VFIO_IOMMU_SVM_BIND_TASK` = `_IO(VFIO_TYPE, VFIO_BASE + 22)` (2017, never merged). */
export const VFIO_IOMMU_SVM_BIND_TASK: Ioctl = defineIoctl({
  name: "VFIO_IOMMU_SVM_BIND_TASK",
  request: io(base.VFIO_TYPE, base.VFIO_BASE + 22),
  struct: VfioDeviceSvm,
  since: "proposal",
  inHeaders: false,
});
/** `VFIO_IOMMU_TLB_INVALIDATE` = `_IO(VFIO_TYPE, VFIO_BASE + 23)` (2017, never merged). */
export const VFIO_IOMMU_TLB_INVALIDATE: Ioctl = defineIoctl({
  name: "VFIO_IOMMU_TLB_INVALIDATE",
  request: io(base.VFIO_TYPE, base.VFIO_BASE + 23),
  struct: VfioIommuTlbInvalidate,
  since: "proposal",
  inHeaders: false,
});

/** Everything this module defines. */
export const PROPOSAL_2017_UAPI = {
  structs: [VfioIommuTlbInvalidate, TlbInvalidate2017Tail, VfioDeviceSvm, SvmBindPgtable2017],
  constants: [],
  ioctls: [VFIO_IOMMU_SVM_BIND_TASK, VFIO_IOMMU_TLB_INVALIDATE],
} as const;
