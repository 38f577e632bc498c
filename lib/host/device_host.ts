/**
 * The one narrow interface the device layer drives on a host: allocate a nesting parent, a nested table, a vIOMMU
 * and a vDEVICE, attach / replace / detach a device's RID or PASID, destroy (dispose) what was allocated, and the
 * zero-entry invalidation probe. Two implementations: the kernel's (`KernelDeviceHost`, iommufd + VFIO cdev or the
 * selftest mock device) and the in-process host's (`ModelDeviceHost`), so one device layer serves both and the
 * differential tests compare them.
 *
 * @module
 */
import type { Format } from "../compile/formats.ts";
import type { DirtyBitmap } from "../kernel/dirty.ts";
import type { HwInfo } from "../kernel/iommufd.ts";
import type { NestedTable } from "../request/request.ts";
import type { Backend } from "./backend.ts";

/** One assigned device as the host sees it: its host id and attachments. */
export interface DevicePort extends Disposable {
  /** The device's host id (iommufd device id). */
  readonly devId: number;
  /** For messages: the cdev path, "mock device N" or the model device's label. */
  readonly label: string;
  /** Attach (or replace) the RID's translation; returns the object attached. */
  attachRid(ptId: number): number;
  /** Attach a PASID that has nothing attached. */
  attachPasid(pasid: number, ptId: number): void;
  /** Replace a PASID's attachment. On VT-d the kernel tears the old entry down first: not atomic. */
  replacePasid(pasid: number, ptId: number): void;
  /** Detach a PASID. */
  detachPasid(pasid: number): void;
  /**
   * Reset the device (a VFIO cdev: `VFIO_DEVICE_RESET`); its attachments stay. Absent on ports that cannot (the
   * selftest mock); throws an `UnsupportedError` for a device without a reset method.
   */
  reset?(): void;
}

/** A host object the device layer allocated; disposing it destroys it. */
export interface HostObject extends Disposable {
  /** The object's iommufd id (or the in-process host's id for it). */
  readonly id: number;
}

/** A vDEVICE: a device's guest-visible id on a vIOMMU. */
export interface HostVdevice extends HostObject {
  /** The device's virtual id on the vIOMMU: the guest's StreamID (SMMUv3) or RID, as invalidations name it. */
  readonly virtId: number;
}

/** What the device layer asks of a host. */
export interface DeviceHost {
  /** Where the relay queue sends invalidation batches. */
  readonly backend: Backend;
  /** The guest-physical address space (IOAS) devices start on and nesting parents are allocated over. */
  readonly ioasId: number;
  /** The device's IOMMU (`IOMMU_GET_HW_INFO`). */
  hwInfo(port: DevicePort): HwInfo;
  /**
   * A nesting parent over the IOAS for `port`'s IOMMU; `pasid` asks for a PASID-capable one
   * (`IOMMU_HWPT_ALLOC_PASID`), `dirtyTracking` one whose DMA writes can be tracked (`IOMMU_HWPT_ALLOC_DIRTY_TRACKING`).
   * Throws a `KernelError` with EOPNOTSUPP when the host cannot.
   */
  allocParent(port: DevicePort, pasid: boolean, dirtyTracking?: boolean): HostObject;
  /**
   * Start or stop dirty tracking on a nesting parent allocated with `dirtyTracking` (`IOMMU_HWPT_SET_DIRTY_TRACKING`).
   * Absent on a host that has none.
   */
  setDirtyTracking?(parent: HostObject, enable: boolean): void;
  /**
   * The pages of `range` (IOVAs of the IOAS) a device wrote through `parent` since the last clearing read
   * (`IOMMU_HWPT_GET_DIRTY_BITMAP`; `clear` false: `NO_CLEAR`), into `into`. Absent on a host that has none.
   */
  readDirty?(parent: HostObject, into: DirtyBitmap, clear: boolean): void;
  /** A vIOMMU of `type` over nesting parent `parentId`. */
  allocViommu(port: DevicePort, parentId: number, type: number): HostObject;
  /** `port`'s vDEVICE with guest-visible id `virtId` on vIOMMU `viommuId`. */
  allocVdevice(viommuId: number, port: DevicePort, virtId: number): HostVdevice;
  /** A nested table from the guest's stage-1 `table`, over a nesting parent or vIOMMU `ptId`. */
  allocNested(port: DevicePort, ptId: number, table: NestedTable, pasid: boolean): HostObject;
  /**
   * Refuse read-only mappings in the guest-physical IOAS from now on (VT-d erratum 772415: a nesting parent must not
   * hold one); throws an `UnsupportedError` if the IOAS has one already.
   */
  forbidReadOnlyMappings(reason: string): void;
  /**
   * The zero-entry probe: does target `id` take `format`'s invalidations? 0, or the errno of the refusal.
   */
  probeInvalidation(id: number, format: Format): number;
}
