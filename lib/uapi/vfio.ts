/**
 * `include/uapi/linux/vfio.h` (Linux 7.3): the VFIO device cdev calls that join a device to iommufd, and the
 * device's information and reset.
 *
 * @module
 */
import { defineStruct, type Struct } from "./struct.ts";
import { type ConstantGroup, defineConstants, defineIoctl, io, type Ioctl } from "./ioctl.ts";

const H = "linux/vfio.h";

/** The declaration of `vfio_base` behind {@linkcode VfioBase}: its one definition. */
export const VfioBaseDeclaration = {
  name: "vfio_base",
  header: H,
  since: "3.6",
  values: { VFIO_TYPE: 0x3b, VFIO_BASE: 100, VFIO_API_VERSION: 0 } as const,
} as const;

/** `VFIO_TYPE` (`';'`, shared with iommufd) and `VFIO_BASE`. */
export const VfioBase: ConstantGroup<typeof VfioBaseDeclaration.values> = defineConstants(VfioBaseDeclaration);

/** The declaration of `vfio_cdev_flags` behind {@linkcode VfioCdevFlags}: its one definition. */
export const VfioCdevFlagsDeclaration = {
  name: "vfio_cdev_flags",
  header: H,
  since: "6.6",
  values: {
    VFIO_DEVICE_BIND_FLAG_TOKEN: 1 << 0,
    VFIO_DEVICE_ATTACH_PASID: 1 << 0,
    VFIO_DEVICE_DETACH_PASID: 1 << 0,
  } as const,
} as const;

/** Flags of the cdev bind/attach/detach calls (TOKEN 6.17, PASID 6.15). */
export const VfioCdevFlags: ConstantGroup<typeof VfioCdevFlagsDeclaration.values> = defineConstants(
  VfioCdevFlagsDeclaration,
);

/** The declaration of `struct vfio_device_bind_iommufd` behind {@linkcode VfioDeviceBindIommufd}: its one definition. */
export const VfioDeviceBindIommufdLayout = {
  name: "vfio_device_bind_iommufd",
  since: "6.6",
  header: H,
  size: 24,
  minSize: 16,
  doc: "Bind a device cdev fd to an iommufd; returns the device's iommufd id (dev_id).",
  fields: {
    argsz: { type: "u32", offset: 0, role: "size", doc: "sizeof(struct vfio_device_bind_iommufd)" },
    flags: { type: "u32", offset: 4, flags: { VFIO_DEVICE_BIND_FLAG_TOKEN: 1 }, doc: "VFIO_DEVICE_BIND_FLAG_TOKEN" },
    iommufd: { type: "s32", offset: 8, doc: "the iommufd fd to bind to" },
    out_devid: { type: "u32", offset: 12, doc: "output: the device's id in that iommufd" },
    token_uuid_ptr: { type: "u64", offset: 16, doc: "user pointer to a 16-byte VF token UUID, with FLAG_TOKEN" },
  },
} as const;

/** `struct vfio_device_bind_iommufd` (6.6; token 6.17): bind a VFIO device cdev to an iommufd. */
export const VfioDeviceBindIommufd: Struct<typeof VfioDeviceBindIommufdLayout.fields> = defineStruct(
  VfioDeviceBindIommufdLayout,
);

/** The declaration of `struct vfio_device_attach_iommufd_pt` behind {@linkcode VfioDeviceAttachIommufdPt}: its one definition. */
export const VfioDeviceAttachIommufdPtLayout = {
  name: "vfio_device_attach_iommufd_pt",
  since: "6.6",
  header: H,
  size: 16,
  minSize: 12,
  doc:
    "Attach the device's RID, or with VFIO_DEVICE_ATTACH_PASID one PASID, to an IOAS or HWPT; attaching again replaces.",
  fields: {
    argsz: { type: "u32", offset: 0, role: "size", doc: "sizeof(struct vfio_device_attach_iommufd_pt)" },
    flags: { type: "u32", offset: 4, flags: { VFIO_DEVICE_ATTACH_PASID: 1 }, doc: "VFIO_DEVICE_ATTACH_PASID" },
    pt_id: { type: "u32", offset: 8, doc: "input: IOAS or HWPT id; output: the HWPT actually attached" },
    pasid: { type: "u32", offset: 12, doc: "PASID, with VFIO_DEVICE_ATTACH_PASID" },
  },
} as const;

/** `struct vfio_device_attach_iommufd_pt` (6.6; pasid 6.15): attach the device (or one PASID) to an IOAS/HWPT. */
export const VfioDeviceAttachIommufdPt: Struct<typeof VfioDeviceAttachIommufdPtLayout.fields> = defineStruct(
  VfioDeviceAttachIommufdPtLayout,
);

/** The declaration of `struct vfio_device_detach_iommufd_pt` behind {@linkcode VfioDeviceDetachIommufdPt}: its one definition. */
export const VfioDeviceDetachIommufdPtLayout = {
  name: "vfio_device_detach_iommufd_pt",
  since: "6.6",
  header: H,
  size: 12,
  minSize: 8,
  doc: "Detach the device's RID, or with VFIO_DEVICE_DETACH_PASID one PASID, from its IOAS/HWPT.",
  fields: {
    argsz: { type: "u32", offset: 0, role: "size", doc: "sizeof(struct vfio_device_detach_iommufd_pt)" },
    flags: { type: "u32", offset: 4, flags: { VFIO_DEVICE_DETACH_PASID: 1 }, doc: "VFIO_DEVICE_DETACH_PASID" },
    pasid: { type: "u32", offset: 8, doc: "PASID, with VFIO_DEVICE_DETACH_PASID" },
  },
} as const;

/** `struct vfio_device_detach_iommufd_pt` (6.6; pasid 6.15): detach the device (or one PASID). */
export const VfioDeviceDetachIommufdPt: Struct<typeof VfioDeviceDetachIommufdPtLayout.fields> = defineStruct(
  VfioDeviceDetachIommufdPtLayout,
);

/** The declaration of `vfio_device_flags` behind {@linkcode VfioDeviceFlags}: its one definition. */
export const VfioDeviceFlagsDeclaration = {
  name: "vfio_device_flags",
  header: H,
  since: "3.6",
  values: {
    VFIO_DEVICE_FLAGS_RESET: 1 << 0,
    VFIO_DEVICE_FLAGS_PCI: 1 << 1,
    VFIO_DEVICE_FLAGS_PLATFORM: 1 << 2,
    VFIO_DEVICE_FLAGS_CAPS: 1 << 7,
  } as const,
} as const;

/** `vfio_device_info.flags`: RESET says `VFIO_DEVICE_RESET` works on the device (vfio-pci: it has a reset method). */
export const VfioDeviceFlags: ConstantGroup<typeof VfioDeviceFlagsDeclaration.values> = defineConstants(
  VfioDeviceFlagsDeclaration,
);

/** The declaration of `struct vfio_device_info` behind {@linkcode VfioDeviceInfo}: its one definition. */
export const VfioDeviceInfoLayout = {
  name: "vfio_device_info",
  since: "3.6",
  header: H,
  size: 24,
  minSize: 16,
  doc: "What VFIO_DEVICE_GET_INFO reports of a device: flags (RESET, PCI, ...), regions, IRQs, capability chain.",
  fields: {
    argsz: { type: "u32", offset: 0, role: "size", doc: "sizeof(struct vfio_device_info) (more to read capabilities)" },
    flags: {
      type: "u32",
      offset: 4,
      flags: { VFIO_DEVICE_FLAGS_RESET: 1, VFIO_DEVICE_FLAGS_PCI: 2, VFIO_DEVICE_FLAGS_PLATFORM: 4 },
      doc: "output: VFIO_DEVICE_FLAGS_*",
    },
    num_regions: { type: "u32", offset: 8, doc: "output: max region index + 1" },
    num_irqs: { type: "u32", offset: 12, doc: "output: max IRQ index + 1" },
    cap_offset: {
      type: "u32",
      offset: 16,
      doc: "output: offset of the first capability (0: none, or argsz too small)",
    },
    pad: { type: "u32", offset: 20, reserved: true, doc: "padding" },
  },
} as const;

/** `struct vfio_device_info` (3.6; caps 4.6): the argument of `VFIO_DEVICE_GET_INFO`. */
export const VfioDeviceInfo: Struct<typeof VfioDeviceInfoLayout.fields> = defineStruct(VfioDeviceInfoLayout);

const base = VfioBase.values;
/** `VFIO_DEVICE_GET_INFO` = `_IO(VFIO_TYPE, VFIO_BASE + 7)`. */
export const VFIO_DEVICE_GET_INFO: Ioctl = defineIoctl({
  name: "VFIO_DEVICE_GET_INFO",
  request: io(base.VFIO_TYPE, base.VFIO_BASE + 7),
  struct: VfioDeviceInfo,
  since: "3.6",
});
/** `VFIO_DEVICE_RESET` = `_IO(VFIO_TYPE, VFIO_BASE + 11)`: no argument; EINVAL when the device has no reset method. */
export const VFIO_DEVICE_RESET: Ioctl = defineIoctl({
  name: "VFIO_DEVICE_RESET",
  request: io(base.VFIO_TYPE, base.VFIO_BASE + 11),
  struct: undefined,
  since: "3.6",
});
/** `VFIO_DEVICE_BIND_IOMMUFD` = `_IO(VFIO_TYPE, VFIO_BASE + 18)`. */
export const VFIO_DEVICE_BIND_IOMMUFD: Ioctl = defineIoctl({
  name: "VFIO_DEVICE_BIND_IOMMUFD",
  request: io(base.VFIO_TYPE, base.VFIO_BASE + 18),
  struct: VfioDeviceBindIommufd,
  since: "6.6",
});
/** `VFIO_DEVICE_ATTACH_IOMMUFD_PT` = `_IO(VFIO_TYPE, VFIO_BASE + 19)`. */
export const VFIO_DEVICE_ATTACH_IOMMUFD_PT: Ioctl = defineIoctl({
  name: "VFIO_DEVICE_ATTACH_IOMMUFD_PT",
  request: io(base.VFIO_TYPE, base.VFIO_BASE + 19),
  struct: VfioDeviceAttachIommufdPt,
  since: "6.6",
});
/** `VFIO_DEVICE_DETACH_IOMMUFD_PT` = `_IO(VFIO_TYPE, VFIO_BASE + 20)`. */
export const VFIO_DEVICE_DETACH_IOMMUFD_PT: Ioctl = defineIoctl({
  name: "VFIO_DEVICE_DETACH_IOMMUFD_PT",
  request: io(base.VFIO_TYPE, base.VFIO_BASE + 20),
  struct: VfioDeviceDetachIommufdPt,
  since: "6.6",
});

/** Everything this module defines. */
export const VFIO_UAPI = {
  structs: [VfioDeviceBindIommufd, VfioDeviceAttachIommufdPt, VfioDeviceDetachIommufdPt, VfioDeviceInfo],
  constants: [VfioBase, VfioCdevFlags, VfioDeviceFlags],
  ioctls: [
    VFIO_DEVICE_BIND_IOMMUFD,
    VFIO_DEVICE_ATTACH_IOMMUFD_PT,
    VFIO_DEVICE_DETACH_IOMMUFD_PT,
    VFIO_DEVICE_GET_INFO,
    VFIO_DEVICE_RESET,
  ],
} as const;
