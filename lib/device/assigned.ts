/**
 * Assigned devices behind one guest vIOMMU. A {@linkcode GuestIommu} owns what its devices share — the relay
 * queue, the nesting parents (one per physical IOMMU, found by letting the kernel accept or refuse an attach) and
 * the nested HWPTs (shared by devices of one guest domain when parent, format and table match). An
 * {@linkcode AssignedDevice} keeps its PASID → HWPT table and does bind / replace / unbind.
 *
 * Order is what keeps this safe: a table change drains the queue first (a barrier), the new HWPT is attached
 * before the old one is released, an old HWPT is destroyed only after the replace succeeded, a failed step
 * releases what it allocated, and disposal runs in reverse (PASIDs, the device, nested HWPTs, parents).
 * On VT-d the kernel tears a PASID's old entry down before setting the new one up: a replace is not atomic, and
 * DMA on that PASID can fault in between.
 *
 * @module
 */
import { type Binding, type DrainReport, RelayQueue } from "../core/queue.ts";
import {
  type NestedTable,
  type PasidOrRid,
  PCIE_PASID_BITS,
  type Request,
  type StageOneTable,
  validateRequest,
} from "../core/request.ts";
import { KernelError, UnsupportedError } from "../core/errors.ts";
import { ENTRY_LENGTH, type Format } from "../backend/backend.ts";
import { DATA_TYPE, KernelBackend } from "../backend/kernel.ts";
import type { Hwpt, Ioas, Iommufd, Vdevice, Viommu } from "../kernel/iommufd.ts";
import {
  HwptAllocFlags,
  HwptDataType,
  IommuHwptArmSmmuv3,
  IommuHwptVtdS1,
  MockConstants,
  selftestHwptData,
  VtdS1Flags,
} from "../uapi/mod.ts";
import { EntryWriter } from "../compile/entries.ts";
import { writeCfgiCd } from "../compile/smmuv3.ts";
import { decodeCapabilities, type DeviceCapabilities } from "./capabilities.ts";
import { relayRequest } from "./handle.ts";
import type { DevicePort } from "./port.ts";

const F = HwptAllocFlags.values;
const EINVAL = 22, EOPNOTSUPP = 95;

interface ParentEntry {
  readonly hwpt: Hwpt;
  /** The vIOMMU over this parent, in vIOMMU mode. */
  viommu?: Viommu;
  /** Allocated with IOMMU_HWPT_ALLOC_PASID (the kernel supports PASID attach). */
  readonly pasidCapable: boolean;
  refs: number;
}

/** A nested HWPT, possibly shared. */
export interface NestedEntry {
  readonly key: string;
  readonly hwpt: Hwpt;
  readonly format: Format;
  readonly parent: ParentEntry;
  refs: number;
}

function tableKey(t: NestedTable): string {
  // An SMMUv3 nested HWPT is its STE; the ASID belongs to a context descriptor in guest memory.
  const key = t.format === "smmuv3" ? { format: t.format, ste: t.ste } : t;
  return JSON.stringify(key, (_, v) => (typeof v === "bigint" ? `${v}n` : v));
}

/** The host data of a stage-1 table: `iommu_hwpt_vtd_s1` or `iommu_hwpt_selftest`. */
export function hwptData(table: NestedTable): { type: number; bytes: Uint8Array } {
  switch (table.format) {
    case "selftest":
      return selftestHwptData(table.iotlb);
    case "vtd-s1": {
      const f = VtdS1Flags.values;
      const flags = (table.sre ? f.IOMMU_VTD_S1_SRE : 0) | (table.eafe ? f.IOMMU_VTD_S1_EAFE : 0) |
        (table.wpe ? f.IOMMU_VTD_S1_WPE : 0);
      const b = IommuHwptVtdS1.buffer().setU64("flags", flags).setU64("pgtbl_addr", table.tableAddress)
        .set("addr_width", table.addressWidth);
      return { type: HwptDataType.values.IOMMU_HWPT_DATA_VTD_S1, bytes: b.bytes };
    }
    case "smmuv3": {
      const b = IommuHwptArmSmmuv3.buffer().setAt("ste", 0, table.ste[0]).setAt("ste", 1, table.ste[1]);
      return { type: HwptDataType.values.IOMMU_HWPT_DATA_ARM_SMMUV3, bytes: b.bytes };
    }
  }
}

/**
 * The host side of one guest vIOMMU.
 *
 * @example
 * ```ts ignore
 * using guest = new GuestIommu(iommufd, ioas);
 * using dev = guest.assign(MockPort.create(iommufd, ioas.id, MOCK_FLAGS_DEVICE_PASID), { domain: 1 });
 * dev.bind(100, { format: "selftest", iotlb: 7 });
 * dev.handle({ op: "invalidate", domain: 1, scope: { kind: "pasid", pasid: 100 } });
 * guest.queue.drain();
 * ```
 */
/** vIOMMU mode: nested HWPTs are allocated on a vIOMMU and invalidations go to the vIOMMU, naming the device. */
export interface ViommuMode {
  /** `IOMMU_VIOMMU_TYPE_*` (e.g. the selftest's `IOMMU_VIOMMU_TYPE_SELFTEST`). */
  readonly type: number;
  /** The entry format the vIOMMU takes. */
  readonly format: Format;
}

/** Options of {@linkcode GuestIommu}. */
export interface GuestIommuOptions {
  /** The relay queue (default: a new one on the kernel backend). */
  readonly queue?: RelayQueue;
  /** Allocate a vIOMMU per nesting parent and relay invalidations to it. */
  readonly viommu?: ViommuMode;
}

export class GuestIommu implements Disposable {
  /** The relay queue shared by every device behind this vIOMMU. */
  readonly queue: RelayQueue;
  readonly #parents: ParentEntry[] = [];
  readonly #nested = new Map<string, NestedEntry>();
  readonly #routes = new Map<string, number>();
  readonly #devices: AssignedDevice[] = [];
  /** Formats whose invalidations the kernel accepted in the zero-entry probe. */
  readonly #probed = new Set<Format>();
  #disposed = false;

  /** Set when invalidations go to a vIOMMU (SMMUv3-style) rather than to each nested HWPT. */
  readonly viommu?: ViommuMode;

  /** `queue` defaults to one sending to the kernel through this iommufd. */
  constructor(readonly iommufd: Iommufd, readonly ioas: Ioas, options: GuestIommuOptions = {}) {
    this.queue = options.queue ?? new RelayQueue(new KernelBackend(iommufd));
    this.viommu = options.viommu;
  }

  /** Devices assigned, in order. */
  get devices(): readonly AssignedDevice[] {
    return this.#devices;
  }

  /**
   * Assign a device: attach its RID to a nesting parent over the IOAS (shared with devices on the same physical
   * IOMMU; the kernel's refusal to attach tells they are not) and decode its capabilities. Takes ownership of
   * `port`: it is disposed with the device, or at once if assignment fails.
   */
  assign(port: DevicePort, opts: { domain: number; virtId?: number; ats?: boolean }): AssignedDevice {
    using stack = new DisposableStack();
    stack.use(port);
    if (this.viommu && opts.virtId === undefined) {
      throw new TypeError(`${port.label}: a guest with a vIOMMU needs each device's virtual id (virtId)`);
    }
    const caps = decodeCapabilities(this.iommufd.getHwInfo(port.devId));
    const parent = this.#attachParent(port);
    stack.defer(() => this.releaseParent(parent));
    let vdev: Vdevice | undefined;
    if (parent.viommu) vdev = stack.use(this.iommufd.allocVdevice(parent.viommu.id, port.devId, opts.virtId!));
    const device = new AssignedDevice(this, port, opts.domain, caps, parent, vdev, opts.ats ?? false);
    stack.move(); // the device owns port, parent reference and vDEVICE now
    this.#devices.push(device);
    return device;
  }

  #attachParent(port: DevicePort): ParentEntry {
    for (const p of this.#parents) {
      try {
        port.attachRid(p.hwpt.id);
        p.refs++;
        return p;
      } catch (e) {
        if (!(e instanceof KernelError && e.errno === EINVAL)) throw e; // EINVAL: another IOMMU, try the next
      }
    }
    let hwpt: Hwpt;
    let pasidCapable = true;
    try {
      hwpt = this.iommufd.allocHwpt({
        devId: port.devId,
        ptId: this.ioas.id,
        flags: F.IOMMU_HWPT_ALLOC_NEST_PARENT | F.IOMMU_HWPT_ALLOC_PASID,
      });
    } catch (e) {
      if (!(e instanceof KernelError && e.errno === EOPNOTSUPP)) throw e;
      // Before 6.15 (or without PASID support) there is no IOMMU_HWPT_ALLOC_PASID: RID binds only.
      pasidCapable = false;
      hwpt = this.iommufd.allocHwpt({ devId: port.devId, ptId: this.ioas.id, flags: F.IOMMU_HWPT_ALLOC_NEST_PARENT });
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
        entry.viommu = this.iommufd.allocViommu({ type: this.viommu.type, devId: port.devId, hwptId: hwpt.id });
      } catch (e) {
        port.attachRid(this.ioas.id);
        hwpt[Symbol.dispose]();
        throw e;
      }
    }
    this.#parents.push(entry);
    return entry;
  }

  /** @internal Release a device's reference to its parent. */
  releaseParent(parent: ParentEntry): void {
    if (--parent.refs > 0) return;
    this.#parents.splice(this.#parents.indexOf(parent), 1);
    parent.viommu?.[Symbol.dispose]();
    parent.hwpt[Symbol.dispose]();
  }

  /** @internal A nested HWPT for (parent, domain, table): shared if one exists. */
  acquireNested(parent: ParentEntry, devId: number, domain: number, table: NestedTable): NestedEntry {
    const base = parent.viommu ?? parent.hwpt;
    const key = `${base.id}/${domain}/${tableKey(table)}`;
    const existing = this.#nested.get(key);
    if (existing) {
      existing.refs++;
      return existing;
    }
    const data = hwptData(table);
    const hwpt = this.iommufd.allocHwpt({
      devId,
      ptId: base.id,
      flags: parent.pasidCapable ? F.IOMMU_HWPT_ALLOC_PASID : 0,
      data,
    });
    if (!this.#probed.has(table.format)) {
      // The zero-entry probe: does this HWPT take this format's invalidations? Refuse the bind now if not,
      // instead of failing every invalidation later.
      const r = hwpt.invalidateRaw(DATA_TYPE[table.format], new Uint8Array(0), ENTRY_LENGTH[table.format], 0);
      if (r < 0) {
        hwpt[Symbol.dispose]();
        throw new UnsupportedError(
          `invalidate-${table.format}`,
          `the kernel refused the zero-entry probe with errno ${-r}`,
        );
      }
      this.#probed.add(table.format);
    }
    const entry: NestedEntry = { key, hwpt, format: table.format, parent, refs: 1 };
    this.#nested.set(key, entry);
    return entry;
  }

  /** @internal Drop a reference; the HWPT is destroyed with the last one. */
  releaseNested(entry: NestedEntry): void {
    if (--entry.refs > 0) return;
    this.#nested.delete(entry.key);
    entry.hwpt[Symbol.dispose]();
  }

  /** Invalidation formats the kernel accepted in the zero-entry probe so far. */
  get probedFormats(): readonly Format[] {
    return [...this.#probed];
  }

  /** Nested HWPTs alive (shared ones once). */
  get nestedCount(): number {
    return this.#nested.size;
  }

  /** @internal Count a device's use of (domain, pasid) → binding in the queue's table. */
  route(domain: number, pasid: PasidOrRid, b: Binding): void {
    const key = `${domain}/${pasid}/${b.targetId}/${b.vdevId}/${b.asid}`;
    const n = this.#routes.get(key) ?? 0;
    this.#routes.set(key, n + 1);
    if (n === 0) this.queue.bind(domain, pasid, b);
  }

  /** @internal Undo {@linkcode GuestIommu.route}. */
  unroute(domain: number, pasid: PasidOrRid, b: Binding): void {
    const key = `${domain}/${pasid}/${b.targetId}/${b.vdevId}/${b.asid}`;
    const n = (this.#routes.get(key) ?? 1) - 1;
    if (n > 0) this.#routes.set(key, n);
    else {
      this.#routes.delete(key);
      this.queue.unbindTarget(domain, pasid, b);
    }
  }

  /** @internal */
  forget(device: AssignedDevice): void {
    const i = this.#devices.indexOf(device);
    if (i >= 0) this.#devices.splice(i, 1);
  }

  /** Dispose every device (last assigned first), then whatever HWPTs remain. */
  [Symbol.dispose](): void {
    if (this.#disposed) return;
    this.#disposed = true;
    const stack = new DisposableStack();
    for (const d of this.#devices) stack.use(d);
    stack.dispose();
  }
}

/** Per-device counters (the queue's own telemetry covers invalidations, ioctls and latency). */
export interface DeviceTelemetry {
  /** Guest requests this device relayed to the queue. */
  requestsIn: number;
  binds: number;
  /** Binds that replaced another table at the same PASID. */
  replaces: number;
  unbinds: number;
  /** Binds, unbinds and requests refused (typed errors). */
  refused: number;
}

function sameBinding(a: Binding, b: Binding): boolean {
  return a.targetId === b.targetId && a.asid === b.asid && a.vdevId === b.vdevId && a.ats === b.ats;
}

/** One assigned device. */
export class AssignedDevice implements Disposable {
  /** Counters, readable at any time. */
  readonly telemetry: DeviceTelemetry = { requestsIn: 0, binds: 0, replaces: 0, unbinds: 0, refused: 0 };
  /** PASID → what is bound there: the nested HWPT (none for SMMUv3 PASIDs, which live in the guest CD table) and
   * the queue binding. */
  readonly #bound = new Map<PasidOrRid, { entry?: NestedEntry; binding: Binding }>();
  #disposed = false;

  constructor(
    /** The vIOMMU it is behind. */
    readonly guest: GuestIommu,
    /** Its kernel interface. */
    readonly port: DevicePort,
    /** Its guest domain. */
    readonly domain: number,
    /** Its IOMMU, decoded. */
    readonly capabilities: DeviceCapabilities,
    private readonly parent: ParentEntry,
    /** Its vDEVICE, in vIOMMU mode. */
    readonly vdevice?: Vdevice,
    /** ATS is enabled: on SMMUv3 its ATC gets ATC_INV from the relay. */
    readonly ats = false,
  ) {}

  /** The queue binding for a nested HWPT (or, on SMMUv3, the vIOMMU and the CD's ASID). */
  #bindingFor(entry: NestedEntry | undefined, table: NestedTable): Binding {
    const viommu = this.parent.viommu;
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

  /** PASID width requests are validated against. */
  get pasidBits(): number {
    const c = this.capabilities;
    if (c.maxPasidLog2 > 0) return c.maxPasidLog2;
    if (c.iommu.kind === "vtd" && c.iommu.pasidBits > 0) return c.iommu.pasidBits;
    return c.iommu.kind === "selftest" ? MockConstants.values.MOCK_PASID_WIDTH : PCIE_PASID_BITS;
  }

  /** The HWPT bound at `pasid`, if any. */
  boundTo(pasid: PasidOrRid): number | undefined {
    return this.#bound.get(pasid)?.entry?.hwpt.id;
  }

  /** The nesting parent's HWPT id. */
  get parentHwptId(): number {
    return this.parent.hwpt.id;
  }

  /** Bind (or rebind) `pasid` to a stage-1 table. */
  bind(pasid: PasidOrRid, table: StageOneTable): void {
    this.#live();
    try {
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
    validateRequest({ op: "bind", domain: this.domain, pasid, table }, { pasidBits: this.pasidBits });
    if (table.format === "smmuv3" && pasid !== "rid") return this.#bindSmmuPasid(pasid, table);
    if (pasid !== "rid" && !this.parent.pasidCapable) {
      throw new UnsupportedError(
        "pasid-attach",
        `${this.port.label}: this kernel cannot allocate PASID-capable HWPTs (Linux 6.15+)`,
      );
    }
    const previous = this.#bound.get(pasid);
    const next = this.guest.acquireNested(this.parent, this.port.devId, this.domain, table);
    const binding = this.#bindingFor(next, table);
    if (previous?.entry === next && sameBinding(previous.binding, binding)) {
      this.guest.releaseNested(next); // the same table: nothing changes
      return;
    }
    this.guest.queue.drain(); // a barrier: what was queued for the old table goes to the old table
    if (previous?.entry !== next) {
      try {
        if (pasid === "rid") this.port.attachRid(next.hwpt.id);
        else if (previous) this.port.replacePasid(pasid, next.hwpt.id);
        else this.port.attachPasid(pasid, next.hwpt.id);
      } catch (e) {
        this.guest.releaseNested(next);
        throw e;
      }
    }
    this.#bound.set(pasid, { entry: next, binding });
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
    if (!rid || rid.binding.format !== "smmuv3" || !this.parent.viommu || !this.vdevice) {
      throw new UnsupportedError(
        "smmuv3-pasid",
        `${this.port.label}: bind the stream (RID) to an SMMUv3 STE on a vIOMMU before its PASIDs`,
      );
    }
    const previous = this.#bound.get(pasid);
    const binding = this.#bindingFor(undefined, table);
    this.#cfgiCd(pasid);
    this.#bound.set(pasid, { binding });
    this.guest.route(this.domain, pasid, binding);
    this.telemetry.binds++;
    if (previous) {
      this.telemetry.replaces++;
      this.guest.unroute(this.domain, pasid, previous.binding);
    }
  }

  #cfgiCd(pasid: number): void {
    const w = new EntryWriter(16, 1);
    writeCfgiCd(w, [], this.vdevice!.virtId, pasid);
    const status = this.guest.queue.command(this.parent.viommu!.id, "smmuv3", w);
    if (status.errno) throw new KernelError(-status.errno, `CFGI_CD for PASID ${pasid}`, "IOMMU_HWPT_INVALIDATE", 0);
  }

  /** Unbind `pasid` (the RID goes back to the nesting parent: stage 2 only). */
  unbind(pasid: PasidOrRid): DrainReport | undefined {
    this.#live();
    const previous = this.#bound.get(pasid);
    if (!previous) return undefined;
    const report = this.guest.queue.drain();
    if (!previous.entry) this.#cfgiCd(pasid as number); // an SMMUv3 PASID: the guest cleared its CD
    else if (pasid === "rid") this.port.attachRid(this.parent.hwpt.id);
    else this.port.detachPasid(pasid);
    this.#bound.delete(pasid);
    this.guest.unroute(this.domain, pasid, previous.binding);
    if (previous.entry) this.guest.releaseNested(previous.entry);
    this.telemetry.unbinds++;
    return report;
  }

  /** Relay a guest request: binds and unbinds here, invalidations and waits to the shared queue. */
  handle(request: Request): number | undefined {
    this.#live();
    return relayRequest(this, this.guest.queue, request);
  }

  #live(): void {
    if (this.#disposed) throw new Error(`${this.port.label} was disposed`);
  }

  /** Unbind every PASID, then the RID, release the device, then its parent reference. */
  [Symbol.dispose](): void {
    if (this.#disposed) return;
    const stack = new DisposableStack();
    stack.defer(() => this.guest.releaseParent(this.parent));
    stack.use(this.port);
    if (this.vdevice) stack.use(this.vdevice);
    // Deferred in this order, run in reverse: PASIDs (highest first), then the RID last.
    const pasids = [...this.#bound.keys()].sort((a, b) => (a === "rid" ? -1 : b === "rid" ? 1 : a - b));
    for (const pasid of pasids) stack.defer(() => this.unbind(pasid));
    try {
      stack.dispose();
    } finally {
      this.#disposed = true;
      this.guest.forget(this);
    }
  }
}
