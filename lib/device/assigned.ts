/**
 * The device layer: assigned devices behind one guest vIOMMU, on any {@linkcode DeviceHost} (the kernel's or the
 * in-process host's). A {@linkcode GuestIommu} owns what its devices share — the relay queue, the nesting parents
 * (one per physical IOMMU, found by letting the host accept or refuse an attach), the nested tables (shared by
 * devices of one guest domain when parent, format and table match) and, for shadow mode, the shadowed domains. An
 * {@linkcode AssignedDevice} keeps its PASID → table map and does bind / replace / unbind, nested or shadowed.
 *
 * Order is what keeps this safe: a table change is a queue barrier first, the new table is attached before the old
 * one is released, an old table is destroyed only after the replace succeeded, a failed step releases what it
 * allocated, and disposal runs in reverse (PASIDs, the device, nested tables, parents). On VT-d the kernel tears a
 * PASID's old entry down before setting the new one up: a replace is not atomic, and DMA on that PASID can fault in
 * between.
 *
 * Each device submits under its own owner id, so its waits and failures are reported to it alone
 * ({@linkcode AssignedDevice.drain}), whoever's drain or binding change sent them.
 *
 * @module
 */
import { type DrainReport, RelayQueue } from "../relay/queue.ts";
import { type Binding, sameBinding } from "../relay/bindings.ts";
import type { DrainOutcome } from "../relay/outcome.ts";
import {
  type NestedTable,
  type PasidOrRid,
  PCIE_PASID_BITS,
  type Request,
  type StageOneTable,
  validateRequest,
} from "../request/request.ts";
import { KernelError, UnsupportedError } from "../kernel/errors.ts";
import { type DeviceState, type GuestIommuState, SnapshotError } from "./snapshot.ts";
import type { Format } from "../compile/formats.ts";
import { EntryWriter } from "../compile/entries.ts";
import { writeCfgiCd } from "../compile/smmuv3.ts";
import type { DeviceHost, DevicePort, HostObject, HostVdevice } from "../host/device_host.ts";
import { ShadowBackend } from "../shadow/backend.ts";
import type { ShadowTelemetry } from "../shadow/domain.ts";
import type { WalkFault } from "../shadow/walk.ts";
import { Errno } from "../uapi/errno.ts";
import { MockConstants } from "../uapi/mod.ts";
import {
  decodeCapabilities,
  type DeviceCapabilities,
  type GuestOffer,
  guestOffer,
  requireNestingSupport,
} from "./capabilities.ts";
import { DirtyBitmap, type DirtyRange } from "../kernel/dirty.ts";
import { type ShadowDomainEntry, type ShadowOptions, ShadowSpaces, walkable } from "./shadow.ts";

const { EINVAL, EOPNOTSUPP } = Errno.values;

/** A nesting parent shared by the devices of one guest vIOMMU that sit behind the same host IOMMU. */
export interface ParentEntry {
  /** The nesting-parent HWPT (over the VMM's IOAS). */
  readonly hwpt: HostObject;
  /** The vIOMMU over this parent, in vIOMMU mode. */
  viommu?: HostObject;
  /** Allocated PASID-capable (the host supports PASID attach). */
  readonly pasidCapable: boolean;
  /** Devices attached to it; destroyed (with its vIOMMU) when the last one goes. */
  refs: number;
}

/** A nested table, possibly shared. */
export interface NestedEntry {
  /** Its key in the table cache: parent HWPT id, guest domain and guest table, so equal tables share one HWPT. */
  readonly key: string;
  /** The nested HWPT the host allocated for this guest table. */
  readonly hwpt: HostObject;
  /** Host format of its stage-1 table and so of its invalidations. */
  readonly format: Format;
  /** The nesting parent it was allocated under. */
  readonly parent: ParentEntry;
  /** Binds using it; the HWPT is destroyed with the last one. */
  refs: number;
}

function tableKey(t: NestedTable): string {
  // An SMMUv3 nested HWPT is its STE; the ASID belongs to a context descriptor in guest memory.
  const key = t.format === "smmuv3" ? { format: t.format, ste: t.ste } : t;
  return JSON.stringify(key, (_, v) => (typeof v === "bigint" ? `${v}n` : v));
}

/** vIOMMU mode: nested tables are allocated on a vIOMMU and invalidations go to the vIOMMU, naming the device. */
export interface ViommuMode {
  /** `IOMMU_VIOMMU_TYPE_*` (e.g. the selftest's `IOMMU_VIOMMU_TYPE_SELFTEST`). */
  readonly type: number;
  /** The entry format the vIOMMU takes. */
  readonly format: Format;
}

/** Options of {@linkcode GuestIommu}. */
export interface GuestIommuOptions {
  /**
   * Allocate every nesting parent with `IOMMU_HWPT_ALLOC_DIRTY_TRACKING`, so {@linkcode GuestIommu.dirty} can report
   * the pages devices wrote (for migration). A device whose IOMMU does not report `IOMMU_HW_CAP_DIRTY_TRACKING` is
   * refused at assign with an `UnsupportedError` ("dirty-tracking"): a migration must never miss device writes.
   */
  readonly dirtyTracking?: boolean;
  /** The relay queue (default: a new one on the host's backend, wrapped for shadow targets when shadow is given). */
  readonly queue?: RelayQueue;
  /** Allocate a vIOMMU per nesting parent and relay invalidations to it. */
  readonly viommu?: ViommuMode;
  /** Shadow-mode devices' guest RAM and address spaces; the queue's backend must then be a `ShadowBackend`. */
  readonly shadow?: ShadowOptions;
}

/** How a device is assigned. */
export interface AssignOptions {
  /** The device's guest domain. */
  readonly domain: number;
  /** Its guest-visible id, in vIOMMU mode. */
  readonly virtId?: number;
  /** ATS enabled: on SMMUv3 its ATC gets ATC_INV from the relay. */
  readonly ats?: boolean;
  /** Nested (default) or shadow translation. */
  readonly mode?: "nested" | "shadow";
  /**
   * The VMM's stable name for the device (e.g. its guest PCI address), which a snapshot records so that a restore
   * can ask for the same device's new port (default: the port's label).
   */
  readonly key?: string;
}

/**
 * A device that was removed (hot-unplugged or found gone): every later call on it is refused with this error, so
 * whoever still holds the device learns why, by type.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { ModelHost } from "../host/model.ts";
 * import { ModelDeviceHost } from "../host/model_device_host.ts";
 * import { DeviceRemovedError, GuestIommu } from "./assigned.ts";
 * const host = new ModelDeviceHost(new ModelHost());
 * using guest = new GuestIommu(host);
 * const dev = guest.assign(host.port({ label: "nic" }), { domain: 1 });
 * dev.remove();
 * assert.throws(() => dev.handle({ op: "sync" }), (e) => e instanceof DeviceRemovedError && e.device === "nic");
 * ```
 */
export class DeviceRemovedError extends Error {
  /** Always `"DeviceRemovedError"`. */
  override name = "DeviceRemovedError";
  /** `device` is the removed device's label; `operation` what was asked of it. */
  constructor(readonly device: string, readonly operation: string) {
    super(`${device} was removed: ${operation} refused`);
  }
}

/** What {@linkcode AssignedDevice.remove} reports to the removed device's owner. */
export interface RemovalReport {
  /** The device's label. */
  readonly device: string;
  /**
   * The owner's last outcome: every wait it had pending, completed, and every failure of its requests (each wait's
   * `ok` says whether the invalidations before it reached the host before the device's tables were released).
   */
  readonly outcome: DrainReport;
  /** PASIDs (and the RID) that were bound when it was removed, unbound by the removal. */
  readonly unbound: readonly PasidOrRid[];
  /**
   * Teardown steps the host refused — a detach or destroy after the device had already gone (ENODEV, ENOENT): the
   * relay's own objects were released all the same.
   */
  readonly teardownErrors: readonly Error[];
}

/**
 * The host side of one guest vIOMMU.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { ModelHost } from "../host/model.ts";
 * import { ModelDeviceHost } from "../host/model_device_host.ts";
 * import { GuestIommu } from "./assigned.ts";
 * const model = new ModelHost();
 * const host = new ModelDeviceHost(model);
 * using guest = new GuestIommu(host);
 * using dev = guest.assign(host.port(), { domain: 1 });
 * dev.bind(100, { format: "selftest", iotlb: 7 });
 * dev.handle({ op: "invalidate", domain: 1, scope: { kind: "pasid", pasid: 100 } });
 * dev.handle({ op: "sync" });
 * assert.ok(dev.drain().waits[0].ok);
 * assert.equal(model.iotlb(dev.boundTo(100)!)[0], 0); // slot 100 mod 4 was invalidated
 * ```
 */
export class GuestIommu implements Disposable {
  /** The relay queue shared by every device behind this vIOMMU. */
  readonly queue: RelayQueue;
  readonly #parents: ParentEntry[] = [];
  readonly #nested = new Map<string, NestedEntry>();
  readonly #routes = new Map<string, number>();
  readonly #devices: AssignedDevice[] = [];
  /** Formats whose invalidations the host accepted in the zero-entry probe. */
  readonly #probed = new Set<Format>();
  /** Shadow-mode domains, once shadow mode is enabled. */
  shadow?: ShadowSpaces;
  #disposed = false;

  /** Set when invalidations go to a vIOMMU (SMMUv3-style) rather than to each nested table. */
  readonly viommu?: ViommuMode;
  /** Nesting parents are allocated with dirty tracking. */
  readonly dirtyTracking: boolean;
  #dirtyOn = false;

  /** A guest vIOMMU on `host`; its queue is `options.queue`, or a new one over the host's backend (shadowed when `options.shadow`). */
  constructor(readonly host: DeviceHost, options: GuestIommuOptions = {}) {
    this.viommu = options.viommu;
    this.dirtyTracking = options.dirtyTracking ?? false;
    this.queue = options.queue ?? new RelayQueue(options.shadow ? new ShadowBackend(host.backend) : host.backend);
    if (options.shadow) this.enableShadow(options.shadow);
  }

  /**
   * Make shadow-mode devices possible (once; later calls must name the same guest RAM). The queue's backend must be
   * a `ShadowBackend`, which serves the shadowed domains and passes everything else to the host.
   */
  enableShadow(options: ShadowOptions): ShadowSpaces {
    if (this.shadow) {
      if (this.shadow.ram !== options.ram) throw new TypeError("all shadow-mode devices of a VM share one guest RAM");
      return this.shadow;
    }
    const backend = this.queue.backend;
    if (!(backend instanceof ShadowBackend)) {
      throw new TypeError("shadow-mode devices need a queue whose backend is a ShadowBackend");
    }
    return this.shadow = new ShadowSpaces(backend, options);
  }

  /** Devices assigned, in order. */
  get devices(): readonly AssignedDevice[] {
    return this.#devices;
  }

  /**
   * The guest-visible state of the device layer (see `lib/device/snapshot.ts`): each device's key, domain, mode,
   * virtual id and ATS, and every table bound at its RID and PASIDs. Host object ids are not in it: a restore
   * allocates new ones. Refused (`SnapshotError` "busy") while the queue holds anything not yet reported — drain
   * first, as a VMM does at the end of every doorbell.
   */
  state(): GuestIommuState {
    if (this.#disposed) throw new Error("the GuestIommu was disposed");
    if (this.queue.pending) {
      throw new SnapshotError("busy", "the relay queue holds requests or outcomes not yet reported: drain first");
    }
    return {
      ...(this.viommu ? { viommu: { type: this.viommu.type, format: this.viommu.format } } : {}),
      devices: this.#devices.map((d) => d.state()),
    };
  }

  /**
   * Assign a device. Nested: attach its RID to a nesting parent over the IOAS (shared with devices on the same
   * physical IOMMU; the host's refusal to attach tells they are not) and decode its capabilities. Shadow: attach it
   * to its domain's shadowed address space. Takes ownership of `port`: it is disposed with the device, or at once if
   * assignment fails.
   */
  assign(port: DevicePort, opts: AssignOptions): AssignedDevice {
    if (this.#disposed) throw new Error("the GuestIommu was disposed");
    using stack = new DisposableStack();
    stack.use(port);
    const caps = decodeCapabilities(this.host.hwInfo(port));
    const offer = guestOffer(caps);
    if (opts.ats && !offer.ats) throw new UnsupportedError("ats", `${port.label}: ${offer.atsWithheld}`);
    let device: AssignedDevice;
    if (opts.mode === "shadow") {
      if (!this.shadow) throw new TypeError("shadow mode needs GuestIommuOptions.shadow (the guest's RAM)");
      const entry = this.shadow.enter(opts.domain);
      stack.defer(() => this.shadow!.leave(opts.domain));
      if (entry.ioasId !== undefined) port.attachRid(entry.ioasId);
      device = new AssignedDevice(this, port, opts.domain, caps, { kind: "shadow", entry }, undefined, false, opts.key);
    } else {
      requireNestingSupport(caps);
      if (this.dirtyTracking && !offer.dirtyTracking) {
        throw new UnsupportedError(
          "dirty-tracking",
          `${port.label}: GET_HW_INFO does not report IOMMU_HW_CAP_DIRTY_TRACKING, so its DMA writes could not be ` +
            "tracked (migrate without dirty tracking only by stopping the device, or assign it without it)",
        );
      }
      if (this.viommu && opts.virtId === undefined) {
        throw new TypeError(`${port.label}: a guest with a vIOMMU needs each device's virtual id (virtId)`);
      }
      const parent = this.#attachParent(port, caps);
      stack.defer(() => this.releaseParent(parent));
      let vdev: HostVdevice | undefined;
      if (parent.viommu) vdev = stack.use(this.host.allocVdevice(parent.viommu.id, port, opts.virtId!));
      device = new AssignedDevice(
        this,
        port,
        opts.domain,
        caps,
        { kind: "nested", parent },
        vdev,
        opts.ats ?? false,
        opts.key,
      );
    }
    stack.move(); // the device owns port, parent reference (or shadow space) and vDEVICE now
    this.queue.claimDomain(opts.domain);
    this.#devices.push(device);
    return device;
  }

  #attachParent(port: DevicePort, caps: DeviceCapabilities): ParentEntry {
    if (caps.iommu.kind === "vtd" && caps.iommu.erratum772415) {
      this.host.forbidReadOnlyMappings(
        `${port.label}: VT-d erratum 772415 (IOMMU_HW_INFO_VTD_ERRATA_772415_SPR17): no read-only mapping may reach a nesting parent`,
      );
    }
    for (const p of this.#parents) {
      try {
        port.attachRid(p.hwpt.id);
        p.refs++;
        return p;
      } catch (e) {
        if (!(e instanceof KernelError && e.errno === EINVAL)) throw e; // EINVAL: another IOMMU, try the next
      }
    }
    let hwpt: HostObject;
    let pasidCapable = true;
    const dirty = this.dirtyTracking;
    try {
      hwpt = this.host.allocParent(port, true, dirty);
    } catch (e) {
      if (!(e instanceof KernelError && e.errno === EOPNOTSUPP)) throw e;
      // Before 6.15 (or without PASID support) there is no IOMMU_HWPT_ALLOC_PASID: RID binds only.
      pasidCapable = false;
      hwpt = this.host.allocParent(port, false, dirty);
    }
    if (dirty && this.#dirtyOn) {
      try {
        this.host.setDirtyTracking!(hwpt, true); // a parent made while tracking runs tracks from the start
      } catch (e) {
        hwpt[Symbol.dispose]();
        throw e;
      }
    }
    try {
      port.attachRid(hwpt.id);
    } catch (e) {
      hwpt[Symbol.dispose]();
      throw e;
    }
    const entry: ParentEntry = { hwpt, pasidCapable, refs: 1 };
    if (this.viommu) {
      try {
        entry.viommu = this.host.allocViommu(port, hwpt.id, this.viommu.type);
        if (caps.iommu.kind === "smmuv3" && caps.iommu.repeatTlbiCfgi) this.queue.repeatInvalidations(entry.viommu.id);
      } catch (e) {
        port.attachRid(this.host.ioasId);
        hwpt[Symbol.dispose]();
        throw e;
      }
    }
    this.#parents.push(entry);
    return entry;
  }

  /**
   * Dirty tracking of every nesting parent (allocated with {@linkcode GuestIommuOptions.dirtyTracking}):
   * `start()`/`stop()` (`IOMMU_HWPT_SET_DIRTY_TRACKING`) and `read()` of a guest RAM range — the pages any device wrote,
   * merged across parents (one per physical IOMMU). Throws an `UnsupportedError` without the option or on a host
   * without dirty tracking.
   *
   * @example
   * ```ts ignore
   * using guest = new GuestIommu(host, { dirtyTracking: true });
   * using dev = guest.assign(port, { domain: 1 });
   * guest.dirty.start();
   * const written = guest.dirty.read({ iova: ramIova, length: ramBytes, pageSize: 4096 });
   * ```
   */
  get dirty(): GuestDirtyLog {
    const host = this.host;
    if (!this.dirtyTracking || !host.setDirtyTracking || !host.readDirty) {
      throw new UnsupportedError(
        "dirty-tracking",
        this.dirtyTracking ? "this host has no dirty tracking" : "the GuestIommu was made without dirtyTracking",
      );
    }
    const parents = () => this.#parents.map((p) => p.hwpt);
    // deno-lint-ignore no-this-alias
    const self = this;
    return {
      start: () => {
        for (const p of parents()) host.setDirtyTracking!(p, true);
        this.#dirtyOn = true;
      },
      stop: () => {
        for (const p of parents()) host.setDirtyTracking!(p, false);
        this.#dirtyOn = false;
      },
      get tracking() {
        return self.#dirtyOn;
      },
      read: (range: DirtyRange, opts: { clear?: boolean; into?: DirtyBitmap } = {}) => {
        if (!this.#dirtyOn) throw new UnsupportedError("dirty-tracking", "dirty tracking is not started");
        const out = opts.into ?? new DirtyBitmap(range);
        if (!out.covers(range)) throw new RangeError("dirty read: `into` is a bitmap of another range");
        out.clear();
        const one = new DirtyBitmap(range);
        for (const p of parents()) {
          host.readDirty!(p, one, opts.clear ?? true);
          for (let i = 0; i < out.bytes.byteLength; i++) out.bytes[i] |= one.bytes[i];
        }
        return out;
      },
    };
  }

  /** @internal Release a device's reference to its parent. */
  releaseParent(parent: ParentEntry): void {
    if (--parent.refs > 0) return;
    this.#parents.splice(this.#parents.indexOf(parent), 1);
    parent.viommu?.[Symbol.dispose]();
    parent.hwpt[Symbol.dispose]();
  }

  /** @internal A nested table for (parent, domain, table): shared if one exists. */
  acquireNested(parent: ParentEntry, port: DevicePort, domain: number, table: NestedTable): NestedEntry {
    const base = parent.viommu ?? parent.hwpt;
    const key = `${base.id}/${domain}/${tableKey(table)}`;
    const existing = this.#nested.get(key);
    if (existing) {
      existing.refs++;
      return existing;
    }
    const hwpt = this.host.allocNested(port, base.id, table, parent.pasidCapable);
    // The zero-entry probe goes where this table's invalidations will go: the vIOMMU in vIOMMU mode (an SMMUv3
    // nested HWPT takes none itself — Linux's arm-smmu-v3 answers EOPNOTSUPP there), else the nested HWPT.
    const [probeId, probeFormat] = parent.viommu && this.viommu
      ? [parent.viommu.id, this.viommu.format]
      : [hwpt.id, table.format];
    if (!this.#probed.has(probeFormat)) {
      // Does the target take this format's invalidations? Refuse the bind now if not, instead of failing every
      // invalidation later.
      const errno = this.host.probeInvalidation(probeId, probeFormat);
      if (errno !== 0) {
        hwpt[Symbol.dispose]();
        throw new UnsupportedError(
          `invalidate-${probeFormat}`,
          `the host refused the zero-entry probe with errno ${errno}`,
        );
      }
      this.#probed.add(probeFormat);
    }
    const entry: NestedEntry = { key, hwpt, format: table.format, parent, refs: 1 };
    this.#nested.set(key, entry);
    return entry;
  }

  /** @internal Drop a reference; the table is destroyed with the last one. */
  releaseNested(entry: NestedEntry): void {
    if (--entry.refs > 0) return;
    this.#nested.delete(entry.key);
    entry.hwpt[Symbol.dispose]();
  }

  /** Invalidation formats the host accepted in the zero-entry probe so far. */
  get probedFormats(): readonly Format[] {
    return [...this.#probed];
  }

  /** Nested tables alive (shared ones once). */
  get nestedCount(): number {
    return this.#nested.size;
  }

  /** @internal Count a device's use of (domain, pasid) → binding in the queue's table. */
  route(domain: number, pasid: PasidOrRid, b: Binding): void {
    const key = routeKey(domain, pasid, b);
    const n = this.#routes.get(key) ?? 0;
    this.#routes.set(key, n + 1);
    if (n === 0) this.queue.bind(domain, pasid, b);
  }

  /** @internal Undo {@linkcode GuestIommu.route}. */
  unroute(domain: number, pasid: PasidOrRid, b: Binding): void {
    const key = routeKey(domain, pasid, b);
    const n = (this.#routes.get(key) ?? 1) - 1;
    if (n > 0) this.#routes.set(key, n);
    else {
      this.#routes.delete(key);
      this.queue.unbind(domain, pasid, b);
    }
  }

  /** @internal */
  forget(device: AssignedDevice): void {
    const i = this.#devices.indexOf(device);
    if (i >= 0) this.#devices.splice(i, 1);
    this.queue.releaseDomain(device.domain);
  }

  /** Dispose every device (last assigned first), then the shadowed domains. */
  [Symbol.dispose](): void {
    if (this.#disposed) return;
    this.#disposed = true;
    const stack = new DisposableStack();
    if (this.shadow) stack.use(this.shadow);
    for (const d of this.#devices) stack.use(d);
    stack.dispose();
  }
}

function routeKey(domain: number, pasid: PasidOrRid, b: Binding): string {
  return `${domain}/${pasid}/${b.targetId}/${b.format}/${b.vdevId}/${b.asid}/${b.ats ?? false}`;
}

/** Per-device counters (the queue's own telemetry covers invalidations, ioctls and latency). */
export interface DeviceTelemetry {
  /** Guest requests this device relayed to the queue. */
  requestsIn: number;
  /** Tables bound at a PASID or the RID (each replace counts here too). */
  binds: number;
  /** Binds that replaced another table at the same PASID. */
  replaces: number;
  /** Tables unbound. */
  unbinds: number;
  /** Binds, unbinds and requests refused (typed errors). */
  refused: number;
}

/** The dirty log of a {@linkcode GuestIommu}'s devices: see {@linkcode GuestIommu.dirty}. */
export interface GuestDirtyLog {
  /** Start tracking on every nesting parent (and on parents made later). */
  start(): void;
  /** Stop tracking. */
  stop(): void;
  /** Whether tracking runs. */
  readonly tracking: boolean;
  /**
   * The pages of `range` (IOVAs of the guest-RAM IOAS) any device wrote since the last clearing read; `clear: false`
   * reads without clearing (`NO_CLEAR`), e.g. right before unmapping the range.
   */
  read(range: DirtyRange, opts?: { clear?: boolean; into?: DirtyBitmap }): DirtyBitmap;
}

type Translation =
  | { readonly kind: "nested"; readonly parent: ParentEntry }
  | { readonly kind: "shadow"; readonly entry: ShadowDomainEntry };

/** One assigned device. */
export class AssignedDevice implements Disposable {
  /** Counters, readable at any time. */
  readonly telemetry: DeviceTelemetry = { requestsIn: 0, binds: 0, replaces: 0, unbinds: 0, refused: 0 };
  /** The owner id its requests are submitted under: its outcomes are reported to it alone. */
  readonly owner: number;
  /** PASID → what is bound there: the nested table (none for SMMUv3 PASIDs, which live in the guest CD table, and
   * for shadowed RIDs) and the queue binding. */
  readonly #bound = new Map<PasidOrRid, { entry?: NestedEntry; binding: Binding; table: StageOneTable }>();
  #disposed = false;
  #removed = false;
  /** The VMM's stable name for it (a snapshot's key). */
  readonly key: string;

  /** Made by {@linkcode GuestIommu.assign}, which attaches the port first; registers a new queue owner. */
  constructor(
    /** The vIOMMU it is behind. */
    readonly guest: GuestIommu,
    /** Its host interface. */
    readonly port: DevicePort,
    /** Its guest domain. */
    readonly domain: number,
    /** Its IOMMU, decoded. */
    readonly capabilities: DeviceCapabilities,
    private readonly translation: Translation,
    /** Its vDEVICE, in vIOMMU mode. */
    readonly vdevice?: HostVdevice,
    /** ATS is enabled: on SMMUv3 its ATC gets ATC_INV from the relay. */
    readonly ats = false,
    key?: string,
  ) {
    this.owner = guest.queue.newOwner();
    this.key = key ?? port.label;
  }

  /** Whether {@linkcode AssignedDevice.remove} took it away. */
  get removed(): boolean {
    return this.#removed;
  }

  /** Its guest-visible state: key, domain, mode, virtual id, ATS, and the tables bound (RID first, PASIDs ascending). */
  state(): DeviceState {
    const keys = [...this.#bound.keys()].sort((a, b) => (a === "rid" ? -1 : b === "rid" ? 1 : a - b));
    return {
      key: this.key,
      domain: this.domain,
      mode: this.mode,
      ...(this.vdevice ? { virtId: this.vdevice.virtId } : {}),
      ats: this.ats,
      bound: keys.map((pasid) => ({ pasid, table: this.#bound.get(pasid)!.table })),
    };
  }

  /**
   * What the VMM may advertise to the guest for this device ({@linkcode guestOffer}): no ATS or device TLB when the
   * host reports `IOMMU_HW_CAP_PCI_ATS_NOT_SUPPORTED`.
   */
  get offer(): GuestOffer {
    return guestOffer(this.capabilities);
  }

  /** Nested or shadow translation. */
  get mode(): "nested" | "shadow" {
    return this.translation.kind;
  }

  /** Shadow mode: the shadowed domain's counters (shared by the devices of the domain). */
  get shadow(): ShadowTelemetry | undefined {
    return this.translation.kind === "shadow" ? this.translation.entry.domain.telemetry : undefined;
  }

  /** Shadow mode: subscribe to walk faults of the device's domain; returns the unsubscribe function. */
  onShadowFault(listener: (fault: WalkFault) => void): (() => void) | undefined {
    if (this.translation.kind !== "shadow") return undefined;
    const listeners = this.translation.entry.domain.faultListeners;
    listeners.add(listener);
    return () => listeners.delete(listener);
  }

  #parent(): ParentEntry {
    if (this.translation.kind !== "nested") throw new Error("a shadow-mode device has no nesting parent");
    return this.translation.parent;
  }

  /** The queue binding for a nested table (or, on SMMUv3, the vIOMMU and the CD's ASID). */
  #bindingFor(entry: NestedEntry | undefined, table: NestedTable): Binding {
    const viommu = this.#parent().viommu;
    if (viommu && this.guest.viommu) {
      return {
        targetId: viommu.id,
        format: this.guest.viommu.format,
        vdevId: this.vdevice?.virtId,
        ...(table.format === "smmuv3" ? { asid: table.asid, ats: this.ats } : {}),
      };
    }
    return { targetId: entry!.hwpt.id, format: entry!.format };
  }

  /**
   * PASID width requests are validated against. On SMMUv3 a PASID is a substream of the guest's CD table, so the
   * SMMU's SSIDSIZE bounds it (and the device's PASID width, when it has one): with SSIDSIZE 0 — QEMU's SMMUv3 — there
   * are no PASIDs, and Linux's arm-smmu-v3 refuses a CFGI_CD naming one (EIO).
   */
  get pasidBits(): number {
    const c = this.capabilities;
    if (c.iommu.kind === "smmuv3") {
      return c.maxPasidLog2 > 0 ? Math.min(c.maxPasidLog2, c.iommu.ssidBits) : c.iommu.ssidBits;
    }
    if (c.maxPasidLog2 > 0) return c.maxPasidLog2;
    if (c.iommu.kind === "vtd" && c.iommu.pasidBits > 0) return c.iommu.pasidBits;
    return c.iommu.kind === "selftest" ? MockConstants.values.MOCK_PASID_WIDTH : PCIE_PASID_BITS;
  }

  /** The host target bound at `pasid`, if any. */
  boundTo(pasid: PasidOrRid): number | undefined {
    const b = this.#bound.get(pasid);
    return b === undefined ? undefined : b.entry?.hwpt.id ?? b.binding.targetId;
  }

  /** The nesting parent's id. */
  get parentHwptId(): number {
    return this.#parent().hwpt.id;
  }

  /** Bind (or rebind) `pasid` to a stage-1 table. */
  bind(pasid: PasidOrRid, table: StageOneTable): void {
    this.#live();
    try {
      validateRequest({ op: "bind", domain: this.domain, pasid, table }, { pasidBits: this.pasidBits });
      if (this.translation.kind === "shadow") return this.#bindShadow(pasid, table, this.translation.entry);
      if (table.format === "vtd-sl") {
        throw new UnsupportedError(
          "vtd-sl",
          "a VT-d second-level table is walked by shadow mode; a nested device takes stage-1 tables (DeviceConfig.mode)",
        );
      }
      this.#bind(pasid, table);
    } catch (e) {
      this.telemetry.refused++;
      throw e;
    }
  }

  #bind(pasid: PasidOrRid, table: NestedTable): void {
    const parent = this.#parent();
    if (table.format === "smmuv3" && pasid !== "rid") return this.#bindSmmuPasid(pasid, table);
    if (pasid !== "rid" && !parent.pasidCapable) {
      throw new UnsupportedError(
        "pasid-attach",
        `${this.port.label}: this host cannot allocate PASID-capable tables (Linux 6.15+)`,
      );
    }
    const previous = this.#bound.get(pasid);
    const next = this.guest.acquireNested(parent, this.port, this.domain, table);
    const binding = this.#bindingFor(next, table);
    // An SMMUv3 RID rebound to the STE it has: the guest changed its CD 0 (in guest memory, where the host SMMU
    // caches it), so the CD is invalidated on the host — without that the device keeps the old CD.
    const cd0Changed = previous?.entry === next && table.format === "smmuv3" && this.vdevice !== undefined &&
      parent.viommu !== undefined;
    if (previous?.entry === next && sameBinding(previous.binding, binding)) {
      this.guest.releaseNested(next); // the same table: nothing changes but, on SMMUv3, CD 0
      if (cd0Changed) this.#cfgiCd(0);
      return;
    }
    this.guest.queue.barrier(); // what was queued for the old table goes to the old table
    try {
      if (previous?.entry !== next) {
        if (pasid === "rid") this.port.attachRid(next.hwpt.id);
        else if (previous) this.port.replacePasid(pasid, next.hwpt.id);
        else this.port.attachPasid(pasid, next.hwpt.id);
      } else if (cd0Changed) this.#cfgiCd(0);
    } catch (e) {
      this.guest.releaseNested(next);
      throw e;
    }
    this.#bound.set(pasid, { entry: next, binding, table });
    this.guest.route(this.domain, pasid, binding);
    this.telemetry.binds++;
    if (previous) {
      this.telemetry.replaces++;
      this.guest.unroute(this.domain, pasid, previous.binding);
      if (previous.entry) this.guest.releaseNested(previous.entry); // only now: the replace succeeded
    }
  }

  /**
   * SMMUv3 PASIDs live in the guest's context-descriptor table, which the STE bound at the RID points to: a PASID
   * bind is the guest writing a CD, relayed as CFGI_CD (the kernel forwards it with the vSID translated), and from
   * then on the PASID's invalidations carry that CD's ASID.
   */
  #bindSmmuPasid(pasid: number, table: StageOneTable & { format: "smmuv3" }): void {
    const rid = this.#bound.get("rid");
    if (!rid || rid.binding.format !== "smmuv3" || !this.#parent().viommu || !this.vdevice) {
      throw new UnsupportedError(
        "smmuv3-pasid",
        `${this.port.label}: bind the stream (RID) to an SMMUv3 STE on a vIOMMU before its PASIDs`,
      );
    }
    const previous = this.#bound.get(pasid);
    const binding = this.#bindingFor(undefined, table);
    this.#cfgiCd(pasid);
    this.#bound.set(pasid, { binding, table });
    this.guest.route(this.domain, pasid, binding);
    this.telemetry.binds++;
    if (previous) {
      this.telemetry.replaces++;
      this.guest.unroute(this.domain, pasid, previous.binding);
    }
  }

  /** CFGI_CD for SSID `pasid` (0: the RID's CD 0) on the device's vSID. */
  #cfgiCd(pasid: number): void {
    const w = new EntryWriter(16, 1);
    writeCfgiCd(w, [], this.vdevice!.virtId, pasid);
    const status = this.guest.queue.command(this.#parent().viommu!.id, "smmuv3", w);
    if (status.errno) throw new KernelError(-status.errno, `CFGI_CD for SSID ${pasid}`, "IOMMU_HWPT_INVALIDATE", 0);
  }

  /** Shadow mode: bind the RID's table (a PASID is refused); the whole space is shadowed at once. */
  #bindShadow(pasid: PasidOrRid, table: StageOneTable, entry: ShadowDomainEntry): void {
    if (pasid !== "rid") {
      throw new UnsupportedError("pasid-shadow", "PASID-tagged DMA needs nesting; this device is in shadow mode");
    }
    const config = walkable(table);
    const replacing = entry.domain.table !== undefined;
    this.guest.queue.barrier(); // what the guest queued for the old table goes first
    const r = entry.domain.setTable(config);
    const rid = this.#bound.get("rid");
    if (!rid) {
      const binding: Binding = { targetId: entry.targetId, format: "shadow" };
      this.#bound.set("rid", { binding, table });
      if (entry.bound++ === 0) this.guest.route(this.domain, "rid", binding);
    } else rid.table = table;
    this.telemetry.binds++;
    if (replacing) this.telemetry.replaces++;
    if (r.errno) {
      throw new KernelError(
        -r.errno,
        `shadow the table (${r.failed?.op} of ${r.failed?.pages} pages)`,
        r.failed?.op === "unmap" ? "IOMMU_IOAS_UNMAP" : "IOMMU_IOAS_MAP",
      );
    }
  }

  /**
   * Unbind `pasid` (nested: the RID goes back to the nesting parent, stage 2 only; shadow: the domain's host
   * mappings go when no device of the domain keeps the table). Unbinding what is not bound is a no-op.
   */
  unbind(pasid: PasidOrRid): void {
    this.#live();
    const previous = this.#bound.get(pasid);
    if (!previous) return;
    this.guest.queue.barrier();
    if (this.translation.kind === "shadow") {
      const entry = this.translation.entry;
      this.#bound.delete(pasid);
      this.telemetry.unbinds++;
      if (--entry.bound === 0) {
        this.guest.unroute(this.domain, "rid", previous.binding);
        const r = entry.domain.setTable(undefined);
        if (r.errno) throw new KernelError(-r.errno, "unshadow the table", "IOMMU_IOAS_UNMAP");
      }
      return;
    }
    if (!previous.entry) this.#cfgiCd(pasid as number); // an SMMUv3 PASID: the guest cleared its CD
    else if (pasid === "rid") this.port.attachRid(this.#parent().hwpt.id);
    else this.port.detachPasid(pasid);
    this.#bound.delete(pasid);
    this.guest.unroute(this.domain, pasid, previous.binding);
    if (previous.entry) this.guest.releaseNested(previous.entry);
    this.telemetry.unbinds++;
  }

  /** Relay a guest request: binds and unbinds here, invalidations and waits to the shared queue under its owner. */
  handle(request: Request): number | undefined {
    this.#live();
    switch (request.op) {
      case "bind":
        this.bind(request.pasid, request.table);
        return undefined;
      case "unbind":
        this.unbind(request.pasid);
        return undefined;
      default:
        try {
          validateRequest(request, { pasidBits: this.pasidBits });
          const seq = this.guest.queue.submit(request, this.owner);
          this.telemetry.requestsIn++;
          return seq;
        } catch (e) {
          this.telemetry.refused++;
          throw e;
        }
    }
  }

  /** Send what is pending and report this device's waits and failures. */
  drain(): DrainReport {
    if (this.#removed) throw new DeviceRemovedError(this.port.label, "drain");
    return this.guest.queue.drain(this.owner);
  }

  /** The allocation-free form of {@linkcode AssignedDevice.drain}. */
  drainInto(out: DrainOutcome): DrainOutcome {
    if (this.#removed) throw new DeviceRemovedError(this.port.label, "drain");
    return this.guest.queue.drainInto(out, this.owner);
  }

  /**
   * Reset the device (`VFIO_DEVICE_RESET` on a VFIO cdev): what is queued is sent first (a barrier: the
   * invalidations the guest asked for before the reset reach the host before it), then the port resets. Binds stay:
   * a function-level reset resets the device, not the IOMMU's tables, and the guest's vIOMMU still holds them. A
   * port without a reset (the selftest mock) or a device without a reset method is an `UnsupportedError`.
   */
  reset(): void {
    this.#live();
    if (!this.port.reset) {
      throw new UnsupportedError("device-reset", `${this.port.label}: this kind of device port has no reset`);
    }
    this.guest.queue.barrier();
    this.port.reset();
  }

  /**
   * Hot-unplug (or a device found gone): stop taking requests, send everything queued while the device's tables
   * still exist, report the owner's last outcome — every wait it had pending, completed, with the failures of its
   * requests (a removed device's invalidations fail on the host, e.g. a vIOMMU entry naming its destroyed vDEVICE:
   * its waits say so) — then unbind everything and release the device, its vDEVICE and its parent reference. The
   * other devices of the vIOMMU are not touched: their requests were sent by the same barrier and their outcomes
   * stay theirs. Host refusals while tearing down a device that is already gone are collected in the report, not
   * thrown: the relay's objects are released regardless. Every later call on the device is a
   * {@linkcode DeviceRemovedError}.
   *
   * @example
   * ```ts
   * import assert from "node:assert/strict";
   * import { ModelHost } from "../host/model.ts";
   * import { ModelDeviceHost } from "../host/model_device_host.ts";
   * import { GuestIommu } from "./assigned.ts";
   * const host = new ModelDeviceHost(new ModelHost());
   * using guest = new GuestIommu(host);
   * const a = guest.assign(host.port(), { domain: 1 });
   * const b = guest.assign(host.port(), { domain: 2 });
   * a.bind("rid", { format: "selftest", iotlb: 1 });
   * b.bind("rid", { format: "selftest", iotlb: 2 });
   * a.handle({ op: "invalidate", domain: 1, scope: { kind: "all" } });
   * a.handle({ op: "sync" });
   * const report = a.remove();
   * assert.equal(report.outcome.waits.length, 1);
   * assert.ok(report.outcome.waits[0].ok); // sent before a's table went
   * assert.deepEqual(report.unbound, ["rid"]);
   * b.handle({ op: "invalidate", domain: 2, scope: { kind: "all" } });
   * b.handle({ op: "sync" });
   * assert.ok(b.drain().waits[0].ok); // the other device keeps working
   * ```
   */
  remove(): RemovalReport {
    if (this.#removed) throw new DeviceRemovedError(this.port.label, "remove");
    this.#live();
    this.#removed = true;
    const outcome = this.guest.queue.drain(this.owner);
    const errors: Error[] = [];
    const attempt = (step: () => void) => {
      try {
        step();
      } catch (e) {
        errors.push(e instanceof Error ? e : new Error(String(e)));
      }
    };
    // PASIDs (highest first), then the RID: detached while the device may still be there, tables released after
    // the port, which holds them attached until it goes.
    const pasids = [...this.#bound.keys()].sort((a, b) => (a === "rid" ? 1 : b === "rid" ? -1 : b - a));
    const tables: NestedEntry[] = [];
    for (const pasid of pasids) this.#detachForRemoval(pasid, tables, attempt);
    const t = this.translation;
    if (this.vdevice) attempt(() => this.vdevice![Symbol.dispose]());
    attempt(() => this.port[Symbol.dispose]());
    for (const entry of tables) attempt(() => this.guest.releaseNested(entry));
    if (t.kind === "nested") attempt(() => this.guest.releaseParent(t.parent));
    else attempt(() => this.guest.shadow?.leave(this.domain));
    this.#disposed = true;
    this.guest.queue.releaseOwner(this.owner);
    this.guest.forget(this);
    return { device: this.port.label, outcome, unbound: pasids.reverse(), teardownErrors: errors };
  }

  /**
   * Unbind `pasid` for a removal: the relay forgets the route at once; the host's detach may fail (the device is
   * gone) and is only attempted. The nested table goes into `tables`, released once the port is.
   */
  #detachForRemoval(pasid: PasidOrRid, tables: NestedEntry[], attempt: (step: () => void) => void): void {
    const previous = this.#bound.get(pasid)!;
    this.#bound.delete(pasid);
    if (this.translation.kind === "shadow") {
      const entry = this.translation.entry;
      if (--entry.bound === 0) {
        this.guest.unroute(this.domain, "rid", previous.binding);
        attempt(() => {
          const r = entry.domain.setTable(undefined);
          if (r.errno) throw new KernelError(-r.errno, "unshadow the table", "IOMMU_IOAS_UNMAP");
        });
      }
      return;
    }
    this.guest.unroute(this.domain, pasid, previous.binding);
    if (!previous.entry) return attempt(() => this.#cfgiCd(pasid as number)); // an SMMUv3 PASID: its CD is gone
    const parent = this.translation.parent;
    attempt(() => pasid === "rid" ? this.port.attachRid(parent.hwpt.id) : this.port.detachPasid(pasid));
    tables.push(previous.entry);
  }

  #live(): void {
    if (this.#removed) throw new DeviceRemovedError(this.port.label, "a request");
    if (this.#disposed) throw new Error(`${this.port.label} was disposed`);
  }

  /** Unbind every PASID, then the RID, release the device, then its parent reference (or shadow space). */
  [Symbol.dispose](): void {
    if (this.#disposed) return;
    const stack = new DisposableStack();
    const t = this.translation;
    if (t.kind === "nested") stack.defer(() => this.guest.releaseParent(t.parent));
    else stack.defer(() => this.guest.shadow?.leave(this.domain));
    stack.use(this.port);
    if (this.vdevice) stack.use(this.vdevice);
    // Deferred in this order, run in reverse: PASIDs (highest first), then the RID last.
    const pasids = [...this.#bound.keys()].sort((a, b) => (a === "rid" ? -1 : b === "rid" ? 1 : a - b));
    for (const pasid of pasids) stack.defer(() => this.unbind(pasid));
    try {
      stack.dispose();
    } finally {
      this.#disposed = true;
      this.guest.queue.releaseOwner(this.owner);
      this.guest.forget(this);
    }
  }
}
