/**
 * The kernel's {@linkcode DevicePort}s: a VFIO device cdev (real hardware) and the kernel selftest's mock device, so
 * the same device code runs against the real kernel in the test suite.
 *
 * @module
 */
import type { NativeShim } from "../../ffi/native.ts";
import type { Iommufd } from "../kernel/iommufd.ts";
import { MockDevice } from "../kernel/selftest.ts";
import { VfioDevice } from "../kernel/vfio.ts";
import type { DevicePort } from "./device_host.ts";

export type { DevicePort } from "./device_host.ts";

/**
 * A VFIO cdev bound to an iommufd.
 *
 * @example
 * ```ts ignore
 * using port = VfioPort.open(shim, iommufd, "/dev/vfio/devices/vfio0");
 * port.attachRid(ioas.id);
 * ```
 */
export class VfioPort implements DevicePort {
  private constructor(readonly device: VfioDevice, readonly devId: number) {}

  /** Open the cdev and bind it to `iommufd`; a failed bind closes the cdev again. */
  static open(shim: NativeShim, iommufd: Iommufd, path: string): VfioPort {
    const device = VfioDevice.open(shim, path);
    try {
      return new VfioPort(device, device.bind(iommufd));
    } catch (e) {
      device[Symbol.dispose]();
      throw e;
    }
  }

  /** Bind a cdev already open (e.g. {@linkcode VfioDevice.fromFd}); a failed bind closes it. */
  static bind(device: VfioDevice, iommufd: Iommufd): VfioPort {
    try {
      return new VfioPort(device, device.bind(iommufd));
    } catch (e) {
      device[Symbol.dispose]();
      throw e;
    }
  }

  get label(): string {
    return this.device.path;
  }
  attachRid(ptId: number): number {
    return this.device.attach(ptId);
  }
  attachPasid(pasid: number, ptId: number): void {
    this.device.attach(ptId, pasid);
  }
  replacePasid(pasid: number, ptId: number): void {
    this.device.attach(ptId, pasid); // attaching again replaces
  }
  detachPasid(pasid: number): void {
    this.device.detach(pasid);
  }
  /** `VFIO_DEVICE_RESET` (an `UnsupportedError` when the device reports no reset method). */
  reset(): void {
    this.device.reset();
  }
  /** Close the VFIO cdev, which unbinds it from the iommufd and detaches it. */
  [Symbol.dispose](): void {
    this.device[Symbol.dispose]();
  }
}

/** The selftest's mock device (needs `CONFIG_IOMMUFD_TEST`). */
export class MockPort implements DevicePort {
  private constructor(readonly device: MockDevice) {}

  /** A new mock device attached to `ptId` (an IOAS); `devFlags` e.g. `MOCK_FLAGS_DEVICE_PASID`. */
  static create(iommufd: Iommufd, ptId: number, devFlags = 0): MockPort {
    return new MockPort(MockDevice.create(iommufd, ptId, devFlags));
  }

  get devId(): number {
    return this.device.devId;
  }
  get label(): string {
    return `mock device ${this.device.stdevId}`;
  }
  attachRid(ptId: number): number {
    return this.device.replace(ptId);
  }
  attachPasid(pasid: number, ptId: number): void {
    this.device.attachPasid(pasid, ptId);
  }
  replacePasid(pasid: number, ptId: number): void {
    this.device.replacePasid(pasid, ptId);
  }
  detachPasid(pasid: number): void {
    this.device.detachPasid(pasid);
  }
  /** Destroy the mock device (the selftest detaches it). */
  [Symbol.dispose](): void {
    this.device[Symbol.dispose]();
  }
}
