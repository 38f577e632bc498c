/**
 * The in-process host's {@linkcode DeviceHost}: nesting parents, nested tables and vIOMMUs are {@linkcode ModelHost}
 * targets, devices are {@linkcode ModelPort}s that keep their attachments with the kernel's rules (a PASID attach
 * over an attached PASID is EBUSY, a replace or detach of an unattached one ENOENT), so the same device layer runs
 * here and on the kernel.
 *
 * @module
 */
import type { Format } from "../compile/formats.ts";
import { KernelError, UnsupportedError } from "../kernel/errors.ts";
import type { HwInfo } from "../kernel/iommufd.ts";
import type { NestedTable } from "../request/request.ts";
import { Errno } from "../uapi/errno.ts";
import { MockConstants, ViommuType } from "../uapi/mod.ts";
import type { DeviceHost, DevicePort, HostObject, HostVdevice } from "./device_host.ts";
import type { ModelHost } from "./model.ts";

const { EBUSY, ENOENT, EOPNOTSUPP } = Errno.values;

/** Options of a model device. */
export interface ModelPortOptions {
  /** For messages (default "model device N"). */
  readonly label?: string;
  /** PASID width the device's IOMMU reports (default 20, PCIe's). */
  readonly pasidBits?: number;
  /** What `IOMMU_GET_HW_INFO` reports for the device (default: no driver data), to model a particular IOMMU. */
  readonly hwInfo?: HwInfo;
  /** The device has a reset method (default true); without one, `reset` is an `UnsupportedError` as on VFIO. */
  readonly resettable?: boolean;
}

/**
 * A device on the in-process host.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { ModelPort } from "./model_device_host.ts";
 * using port = new ModelPort(1, { label: "nic" });
 * port.attachPasid(3, 10);
 * assert.throws(() => port.attachPasid(3, 11)); // EBUSY: attached already
 * port.replacePasid(3, 11);
 * assert.equal(port.attachedAt(3), 11);
 * ```
 */
export class ModelPort implements DevicePort {
  readonly label: string;
  /** PASID width the host reports for this device (`maxPasidLog2` of its hardware info; default 20). */
  readonly pasidBits: number;
  /** What `IOMMU_GET_HW_INFO` reports for it; undefined: the host's default (no driver data). */
  readonly hwInfo: HwInfo | undefined;
  /** Resets done (`reset`). */
  resets = 0;
  /** Whether `reset` works. */
  readonly resettable: boolean;
  #rid = 0;
  readonly #pasids = new Map<number, number>();
  #disposed = false;

  /** A port for in-process device `devId`, detached. */
  constructor(readonly devId: number, opts: ModelPortOptions = {}) {
    this.label = opts.label ?? `model device ${devId}`;
    this.pasidBits = opts.pasidBits ?? 20;
    this.hwInfo = opts.hwInfo;
    this.resettable = opts.resettable ?? true;
  }

  /** What the RID (`"rid"`) or a PASID is attached to (0 = nothing). */
  attachedAt(at: number | "rid"): number {
    return at === "rid" ? this.#rid : this.#pasids.get(at) ?? 0;
  }

  attachRid(ptId: number): number {
    this.#live();
    this.#rid = ptId;
    return ptId;
  }
  attachPasid(pasid: number, ptId: number): void {
    this.#live();
    if (this.#pasids.has(pasid)) throw new KernelError(-EBUSY, `attach PASID ${pasid}`, "IOMMU_TEST_OP_PASID_ATTACH");
    this.#pasids.set(pasid, ptId);
  }
  replacePasid(pasid: number, ptId: number): void {
    this.#live();
    if (!this.#pasids.has(pasid)) {
      throw new KernelError(-ENOENT, `replace PASID ${pasid}`, "IOMMU_TEST_OP_PASID_REPLACE");
    }
    this.#pasids.set(pasid, ptId);
  }
  detachPasid(pasid: number): void {
    this.#live();
    if (!this.#pasids.delete(pasid)) {
      throw new KernelError(-ENOENT, `detach PASID ${pasid}`, "IOMMU_TEST_OP_PASID_DETACH");
    }
  }
  /** Reset the device: counted; its attachments stay, as with `VFIO_DEVICE_RESET`. */
  reset(): void {
    this.#live();
    if (!this.resettable) throw new UnsupportedError("vfio-device-reset", `${this.label} has no reset method`);
    this.resets++;
  }
  #live(): void {
    if (this.#disposed) throw new Error(`${this.label} was disposed`);
  }
  /** Mark the port disposed: any later call throws. */
  [Symbol.dispose](): void {
    this.#disposed = true;
    this.#pasids.clear();
    this.#rid = 0;
  }
}

/**
 * Device-layer calls on the in-process host.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { ModelHost } from "./model.ts";
 * import { ModelDeviceHost } from "./model_device_host.ts";
 * const host = new ModelDeviceHost(new ModelHost());
 * using port = host.port();
 * using parent = host.allocParent(port, true);
 * using nested = host.allocNested(port, parent.id, { format: "selftest", iotlb: 5 }, true);
 * assert.equal(host.probeInvalidation(nested.id, "selftest"), 0);
 * assert.deepEqual(host.model.iotlb(nested.id), [5, 5, 5, 5]);
 * ```
 */
export class ModelDeviceHost implements DeviceHost {
  readonly ioasId: number;
  #nextDev = 1;

  /** A device host over `model`, with a paging target made at once as the IOAS nesting parents sit on. */
  constructor(readonly model: ModelHost) {
    this.ioasId = model.createTarget("paging");
  }

  get backend(): ModelHost {
    return this.model;
  }

  /** A new model device. */
  port(opts: ModelPortOptions = {}): ModelPort {
    return new ModelPort(this.#nextDev++, opts);
  }

  hwInfo(port: DevicePort): HwInfo {
    if (port instanceof ModelPort && port.hwInfo) return port.hwInfo;
    const bits = port instanceof ModelPort ? port.pasidBits : 20;
    return { type: 0, data: new Uint8Array(0), maxPasidLog2: bits, capabilities: 0n };
  }

  allocParent(_port: DevicePort, _pasid: boolean): HostObject {
    return this.#target(this.model.createTarget("paging"));
  }

  allocViommu(_port: DevicePort, _parentId: number, type: number): HostObject {
    const t = ViommuType.values;
    const format: Format | undefined = type === t.IOMMU_VIOMMU_TYPE_ARM_SMMUV3
      ? "smmuv3"
      : type === MockConstants.values.IOMMU_VIOMMU_TYPE_SELFTEST
      ? "selftest-viommu"
      : undefined;
    if (!format) throw new KernelError(-EOPNOTSUPP, `alloc vIOMMU of type ${type}`, "IOMMU_VIOMMU_ALLOC");
    return this.#target(this.model.createTarget(format));
  }

  allocVdevice(viommuId: number, _port: DevicePort, virtId: number): HostVdevice {
    try {
      this.model.addVdevice(viommuId, virtId);
    } catch {
      // An SMMUv3 vIOMMU keeps no per-device cache in the model: the vDEVICE is only its id.
    }
    return { id: virtId, virtId, [Symbol.dispose]() {} };
  }

  allocNested(_port: DevicePort, _ptId: number, table: NestedTable, _pasid: boolean): HostObject {
    return this.#target(this.model.createTarget(table.format, table.format === "selftest" ? table.iotlb : undefined));
  }

  /** Why read-only mappings are refused, once a device's erratum said so (the model maps nothing itself). */
  readOnlyForbidden: string | undefined;

  forbidReadOnlyMappings(reason: string): void {
    this.readOnlyForbidden = reason;
  }

  probeInvalidation(id: number, format: Format): number {
    const status = { errno: 0, handled: 0 };
    this.model.invalidate(id, format, new Uint8Array(0), 0, status);
    return status.errno;
  }

  #target(id: number): HostObject {
    const model = this.model;
    return { id, [Symbol.dispose]: () => model.destroyTarget(id) };
  }
}
