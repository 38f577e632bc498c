/**
 * A VFIO device cdev (`/dev/vfio/devices/vfioN`) joined to an iommufd: bind, attach/detach of the RID or one
 * PASID (6.15+) to an IOAS or HWPT, the device's information (`VFIO_DEVICE_GET_INFO`) and reset
 * (`VFIO_DEVICE_RESET`). Closing the cdev unbinds.
 *
 * @module
 */
import { FD_KIND, IOCTL, type NativeShim } from "../../ffi/native.ts";
import { KernelError, UnsupportedError } from "./errors.ts";
import { adoptAs, type Iommufd } from "./iommufd.ts";
import {
  VFIO_DEVICE_ATTACH_IOMMUFD_PT,
  VFIO_DEVICE_BIND_IOMMUFD,
  VFIO_DEVICE_DETACH_IOMMUFD_PT,
  VFIO_DEVICE_GET_INFO,
  VFIO_DEVICE_RESET,
  VfioCdevFlags,
  VfioDeviceAttachIommufdPt,
  VfioDeviceBindIommufd,
  VfioDeviceDetachIommufdPt,
  VfioDeviceFlags,
  VfioDeviceInfo,
} from "../uapi/mod.ts";

/** What `VFIO_DEVICE_GET_INFO` says of a device. */
export interface VfioDeviceInformation {
  /** `VFIO_DEVICE_FLAGS_*` as the kernel reported them. */
  readonly flags: number;
  /** `VFIO_DEVICE_FLAGS_RESET`: `VFIO_DEVICE_RESET` works (vfio-pci: the device has a reset method, e.g. FLR). */
  readonly resettable: boolean;
  /** `VFIO_DEVICE_FLAGS_PCI`: a vfio-pci device. */
  readonly pci: boolean;
  /** Regions (max index + 1) and IRQ indexes (max index + 1). */
  readonly regions: number;
  /** IRQ indexes (max index + 1). */
  readonly irqs: number;
}

/**
 * An open VFIO device cdev.
 *
 * @example
 * ```ts ignore
 * import { NativeShim } from "../../ffi/native.ts";
 * import { Iommufd } from "./iommufd.ts";
 * import { VfioDevice } from "./vfio.ts";
 * using shim = await NativeShim.load();
 * using iommufd = Iommufd.open(shim);
 * using dev = VfioDevice.open(shim, "/dev/vfio/devices/vfio0");
 * const devId = dev.bind(iommufd);
 * using ioas = iommufd.allocIoas();
 * dev.attach(ioas.id);
 * ```
 */
export class VfioDevice implements Disposable {
  #closed = false;
  /** The iommufd device id after {@linkcode VfioDevice.bind}. */
  devId: number | undefined;

  private constructor(
    /** The shim. */
    readonly shim: NativeShim,
    /** The cdev fd. */
    readonly fd: number,
    /** The cdev path. */
    readonly path: string,
  ) {}

  /** Open a device cdev. */
  static open(shim: NativeShim, path: string): VfioDevice {
    const fd = shim.open(path);
    if (fd < 0) throw new KernelError(fd, `open ${path}`, "open");
    return new VfioDevice(shim, fd, path);
  }

  /**
   * A VFIO device cdev this process was handed already open (fd `fd`; `label` names it in errors): checked by the
   * shim with `fstat`, no path opened. Another kind of fd is refused (see {@linkcode Iommufd.fromFd}).
   *
   * @example
   * ```ts ignore
   * // The parent ran: exec 3<>/dev/iommu 4<>/dev/vfio/devices/vfio0
   * using iommufd = Iommufd.fromFd(shim, 3);
   * using dev = VfioDevice.fromFd(shim, 4);
   * dev.bind(iommufd);
   * ```
   */
  static fromFd(shim: NativeShim, fd: number, label = `vfio cdev fd ${fd}`): VfioDevice {
    adoptAs(shim, fd, FD_KIND.VFIO_CDEV, "a VFIO cdev");
    return new VfioDevice(shim, fd, label);
  }

  #call(ioctl: typeof VFIO_DEVICE_BIND_IOMMUFD, bytes: Uint8Array | null, op: string): void {
    const r = this.shim[IOCTL](this.fd, ioctl.request, bytes);
    if (r < 0) throw new KernelError(r, `${op} (${this.path})`, ioctl.name);
  }

  /** `VFIO_DEVICE_BIND_IOMMUFD`: returns the device's iommufd id. */
  bind(iommufd: Iommufd): number {
    const args = VfioDeviceBindIommufd.buffer().set("iommufd", iommufd.fd);
    this.#call(VFIO_DEVICE_BIND_IOMMUFD, args.bytes, "bind to iommufd");
    this.devId = args.get("out_devid");
    return this.devId;
  }

  /**
   * `VFIO_DEVICE_ATTACH_IOMMUFD_PT`: attach the RID, or `pasid` (6.15+), to an IOAS or HWPT; attaching again
   * replaces. Returns the HWPT the kernel attached (for an IOAS: the auto-allocated paging HWPT).
   */
  attach(ptId: number, pasid?: number): number {
    const args = VfioDeviceAttachIommufdPt.buffer().set("pt_id", ptId);
    if (pasid !== undefined) args.set("flags", VfioCdevFlags.values.VFIO_DEVICE_ATTACH_PASID).set("pasid", pasid);
    this.#call(VFIO_DEVICE_ATTACH_IOMMUFD_PT, args.bytes, pasid === undefined ? "attach RID" : `attach PASID ${pasid}`);
    return args.get("pt_id");
  }

  /** `VFIO_DEVICE_DETACH_IOMMUFD_PT` of the RID, or of `pasid` (6.15+). */
  detach(pasid?: number): void {
    const args = VfioDeviceDetachIommufdPt.buffer();
    if (pasid !== undefined) args.set("flags", VfioCdevFlags.values.VFIO_DEVICE_DETACH_PASID).set("pasid", pasid);
    this.#call(VFIO_DEVICE_DETACH_IOMMUFD_PT, args.bytes, pasid === undefined ? "detach RID" : `detach PASID ${pasid}`);
  }

  /** `VFIO_DEVICE_GET_INFO` (the cdev must be bound): flags, regions and IRQs; capabilities are not read. */
  info(): VfioDeviceInformation {
    const args = VfioDeviceInfo.buffer();
    this.#call(VFIO_DEVICE_GET_INFO, args.bytes, "get device info");
    const flags = args.get("flags");
    const f = VfioDeviceFlags.values;
    return {
      flags,
      resettable: (flags & f.VFIO_DEVICE_FLAGS_RESET) !== 0,
      pci: (flags & f.VFIO_DEVICE_FLAGS_PCI) !== 0,
      regions: args.get("num_regions"),
      irqs: args.get("num_irqs"),
    };
  }

  /**
   * `VFIO_DEVICE_RESET`: reset the device (vfio-pci picks its method: FLR, PM, bus...). Its IOMMU attachments stay
   * as they are. A device without `VFIO_DEVICE_FLAGS_RESET` is an {@linkcode UnsupportedError} before any ioctl (the
   * kernel would answer EINVAL, which says nothing about why).
   */
  reset(): void {
    if (!this.info().resettable) {
      throw new UnsupportedError(
        "vfio-device-reset",
        `${this.path}: VFIO_DEVICE_GET_INFO does not report VFIO_DEVICE_FLAGS_RESET (the device has no reset method)`,
      );
    }
    this.#call(VFIO_DEVICE_RESET, null, "reset");
  }

  /** Close the cdev (unbinds it from the iommufd). */
  [Symbol.dispose](): void {
    if (this.#closed) return;
    this.#closed = true;
    this.shim.close(this.fd);
  }
}
