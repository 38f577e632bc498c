/**
 * The emulated VT-d unit the Linux guest's intel-iommu driver programs: registers (VER, CAP, ECAP, GCMD/GSTS,
 * RTADDR, CCMD, fault registers, the invalidation queue, the IOTLB registers), the guest's scalable-mode root,
 * context and PASID tables, and the DMA translation of the one device behind it.
 *
 * What it advertises (CAP/ECAP) makes Linux use what iommu-relay relays: scalable mode (SMTS) with PASID support,
 * first-stage tables only (FLTS, not SLTS: the nested case), queued invalidation (QI), no interrupt remapping (IR
 * clear), caching mode (CM: Linux then invalidates the PASID cache when it makes an entry present, which is what
 * makes the VMM bind — iommu-relay's `VtdPasidBinder` — and invalidates after every map as well as every unmap).
 *
 * The invalidation queue is iommu-relay's `VtdInvalidationQueue`, whose requests go through a `VtdDomainRouter`:
 * each guest domain (DID) that has bound a table is served by a plugin (the relay to the host); any other domain by
 * the VMM itself. The device's DMA is translated by walking the guest's first-stage table (`walkRange`), through a
 * translation cache (the device's IOTLB) that drops an entry only when an invalidation covering it reached the host
 * — the relay's host-side counters moved — so a lost invalidation shows up as DMA through a stale page.
 *
 * Guest bytes are hostile: a table the VMM cannot read or use ends the translation in a recorded fault (the guest
 * sees a DMAR fault and the request fails), never in an exception out of the MMIO handler.
 *
 * @module
 */
import {
  type BindRequest,
  decodeVtdDescriptor,
  type DrainReport,
  type InvalidateRequest,
  lookupVtdPasidEntry,
  type RelayPlugin,
  type Request,
  type StageOneTable,
  type UnbindRequest,
  VtdDescriptorScratch,
  VtdDomainRouter,
  VtdInvalidationQueue,
  VtdPasidBinder,
  type VtdPasidEntry,
} from "../../mod.ts";
import type { ObservedInvalidation } from "../../lib/kernel/mod.ts";
import type { RelayHost } from "../../lib/plugin/mod.ts";
import type { PasidOrRid } from "../../lib/request/mod.ts";
import {
  HwptInvalidateDataType,
  IommuHwptInvalidateSelftestLayout,
  IommuHwptVtdS1InvalidateLayout,
  MockConstants,
} from "../../lib/uapi/mod.ts";
import { walkRange } from "../../lib/shadow/mod.ts";

/** Register offsets (drivers/iommu/intel/iommu.h). */
export const VTD = {
  VER: 0x00,
  CAP: 0x08,
  ECAP: 0x10,
  GCMD: 0x18,
  GSTS: 0x1c,
  RTADDR: 0x20,
  CCMD: 0x28,
  FSTS: 0x34,
  FECTL: 0x38,
  FEDATA: 0x3c,
  FEADDR: 0x40,
  FEUADDR: 0x44,
  PMEN: 0x64,
  IQH: 0x80,
  IQT: 0x88,
  IQA: 0x90,
  ICS: 0x9c,
  IECTL: 0xa0,
  IEDATA: 0xa4,
  IEADDR: 0xa8,
  IEUADDR: 0xac,
  /** Fault recording register (CAP.FRO = 0x40 → 0x400), one (CAP.NFR = 0). */
  FRCD: 0x400,
  /** IOTLB registers (ECAP.IRO = 0x50 → 0x500): IVA at +0, IOTLB at +8. */
  IVA: 0x500,
  IOTLB: 0x508,
} as const;

const B = (bit: number) => 2 ** bit;
/** CAP: ND 2 (256 domains), CM, SAGAW 0 (no second stage), MGAW 47, FRO 0x40, PSI, NFR 0, MAMV 18, DWD, DRD. */
export const VTD_CAP = 2 + B(7) + 47 * B(16) + 0x40 * B(24) + B(39) + 18 * B(48) + B(54) + B(55);
/** ECAP: C, QI, IRO 0x50, PSS 19 (20-bit PASIDs), PASID, SMTS, FLTS, SMPWC; not IR, SLTS, PT, DT, PRS, NEST. */
export const VTD_ECAP = 1 + 2 + 0x50 * B(8) + 19 * B(35) + B(40) + B(43) + B(47) + B(48);

const GCMD = { TE: B(31), SRTP: B(30), SFL: B(29), WBF: B(27), QIE: B(26), IRE: B(25), SIRTP: B(24), CFI: B(23) };

/** Bounds-checked guest memory. */
export interface Memory {
  read(gpa: number, length: number): Uint8Array;
  write(gpa: number, bytes: Uint8Array): void;
}

/** One translation the device's IOTLB holds. */
interface CachedTranslation {
  gpaPage: number;
  write: boolean;
}

/** A DMA the unit could not translate (recorded as a primary fault). */
export interface DmaFault {
  readonly iova: number;
  readonly write: boolean;
  readonly reason: string;
}

/** How the unit's domains reach the host. */
export interface VtdHost {
  /** A plugin for guest domain `did` (created on its first bind). */
  pluginFor(did: number): RelayPlugin;
  /** A bound PASID entry → the host's table (default: the VT-d stage-1 table). */
  tableFor?(entry: VtdPasidEntry & { present: true }): StageOneTable | undefined;
  /** What the host took, read where it leaves for the host (the shim), for the independent check. */
  readonly hostCalls: HostCalls;
}

/** The host's invalidation calls as they left for it, and where a guest domain's invalidations must land. */
export interface HostCalls {
  /** The calls since the last take. */
  take(): ObservedInvalidation[];
  /** The host target (nested HWPT) of domain `did`'s binding at `pasid`, if bound. */
  targetOf(did: number, pasid: PasidOrRid): number | undefined;
}

/**
 * The host calls of `host`, watched from now on: on a kernel host the `IOMMU_HWPT_INVALIDATE` calls as the shim
 * passed them (`RelayHost.observeHostInvalidations`), not the relay's own counters.
 */
export function watchHostCalls(host: RelayHost): HostCalls & Disposable {
  let calls: ObservedInvalidation[] = [];
  const stop = host.observeHostInvalidations((call) => void calls.push(call));
  return {
    take: () => {
      const taken = calls;
      calls = [];
      return taken;
    },
    targetOf: (did, pasid) => host.queue().bindings(did, pasid)[0]?.targetId,
    [Symbol.dispose]: stop,
  };
}

const SELFTEST = MockConstants.values.IOMMU_HWPT_INVALIDATE_DATA_SELFTEST;
const SELFTEST_ALL = MockConstants.values.IOMMU_TEST_INVALIDATE_FLAG_ALL;
const SELFTEST_FIELDS = IommuHwptInvalidateSelftestLayout.fields;
const VTD_S1 = HwptInvalidateDataType.values.IOMMU_HWPT_INVALIDATE_DATA_VTD_S1;
const VTD_S1_FIELDS = IommuHwptVtdS1InvalidateLayout.fields;

/**
 * Whether host calls `calls` invalidated what `r` asked for on host target `targetId`: a VT-d stage-1 entry whose
 * range holds the request's pages (or the whole space), or a selftest mock entry flushing the binding's slot or all
 * slots (the mock's entries carry no address: a slot flush covers every page). Entries past a failed call's handled
 * count did not happen.
 */
export function hostCallsCover(
  calls: readonly ObservedInvalidation[],
  targetId: number,
  slot: number,
  r: InvalidateRequest,
): boolean {
  const s = r.scope;
  const first = "firstPage" in s ? s.firstPage : 0, pages = "pages" in s ? s.pages : -1;
  for (const c of calls) {
    if (c.objectId !== targetId) continue;
    const v = new DataView(c.entries.buffer, c.entries.byteOffset, c.entries.byteLength);
    const done = c.errno ? Math.min(c.handled, c.count) : c.count;
    for (let i = 0; i < done; i++) {
      const at = i * c.entryLen;
      if (c.dataType === SELFTEST) {
        const flags = v.getUint32(at + SELFTEST_FIELDS.flags.offset, true);
        if (flags & SELFTEST_ALL || v.getUint32(at + SELFTEST_FIELDS.iotlb_id.offset, true) === slot) return true;
      } else if (c.dataType === VTD_S1) {
        const addr = Number(v.getBigUint64(at + VTD_S1_FIELDS.addr.offset, true));
        const npages = v.getBigUint64(at + VTD_S1_FIELDS.npages.offset, true);
        if (npages === 0xffff_ffff_ffff_ffffn && addr === 0) return true;
        const a = addr / 4096;
        if (pages !== -1 && a <= first && first + pages <= a + Number(npages)) return true;
      }
    }
  }
  return false;
}

/** Counters of the unit. */
export interface VtdStats {
  doorbells: number;
  descriptors: number;
  waits: number;
  /** Invalidations handed to plugins whose drain sent entries to the host without a failure. */
  relayed: number;
  /** Invalidations handed to plugins after which no entry reached the host (or the drain failed). */
  unsent: number;
  /** Translations looked up, walked (cache misses), and dropped by invalidations that reached the host. */
  lookups: number;
  walks: number;
  dropped: number;
  faults: DmaFault[];
  /** Diagnosis (with `verifyHits`): cache hits the guest's table no longer agrees with, and the first few. */
  staleHits: number;
  staleDetails: string[];
  /** Doorbell time in the unit, µs (each). */
  doorbellUs: number[];
  /** Queue errors (IQE) with why. */
  queueErrors: string[];
  /** The independent check: invalidations the guest's queue bytes asked for that no sent request covered. */
  uncovered: string[];
  /** Descriptors decoded by the independent check. */
  checkedDescriptors: number;
  otherAccesses: number;
}

/** The emulated VT-d unit, for one device `rid` (bus 0). */
export class VtdUnit {
  readonly regs = new DataView(new ArrayBuffer(0x1000));
  readonly queue: VtdInvalidationQueue;
  readonly router: VtdDomainRouter;
  readonly binder: VtdPasidBinder;
  readonly stats: VtdStats = {
    doorbells: 0,
    descriptors: 0,
    waits: 0,
    relayed: 0,
    unsent: 0,
    lookups: 0,
    walks: 0,
    dropped: 0,
    faults: [],
    staleHits: 0,
    staleDetails: [],
    doorbellUs: [],
    queueErrors: [],
    uncovered: [],
    checkedDescriptors: 0,
    otherAccesses: 0,
  };
  #gsts = 0;
  #rootTable = 0;
  #scalable = false;
  #faultBits = 0;
  #pasidDirectory = -1;
  readonly #cache = new Map<number, CachedTranslation>();
  readonly #plugins = new Map<number, RelayPlugin>();
  /** Invalidations submitted to plugins since the last drain (copies: the queue reuses its request objects). */
  #submitted: InvalidateRequest[] = [];
  /** Ranges sent to the host in this doorbell, for the independent check: [did, firstPage, pages] (pages -1: all). */
  #sent: [number, number, number][] = [];
  readonly #scratch = new VtdDescriptorScratch();
  /** Re-walk on every cache hit and count disagreements (diagnosis; costs a walk per DMA page). */
  verifyHits = false;
  /** The last invalidations and drops, for fault and stale-hit reports. */
  readonly recent: string[] = [];
  #note(what: string): void {
    this.recent.push(what);
    if (this.recent.length > 64) this.recent.splice(0, 32);
  }
  /** The run as the relay saw it, doorbell by doorbell (invalidations, then the doorbell's wait), for replays. */
  readonly doorbellLog: { requests: Request[] }[] = [];
  #current: Request[] = [];

  #record(request: Request): void {
    if (this.doorbellLog.length < 200_000) this.#current.push(request);
  }

  constructor(
    readonly memory: Memory,
    readonly ramBytes: number,
    readonly rid: number,
    readonly host: VtdHost,
    readonly msi: (address: number, data: number) => void,
  ) {
    this.regs.setUint32(VTD.VER, 0x10, true);
    this.#set64(VTD.CAP, VTD_CAP);
    this.#set64(VTD.ECAP, VTD_ECAP);
    this.regs.setUint32(VTD.FECTL, B(31), true); // interrupt masked until the driver unmasks it
    this.regs.setUint32(VTD.IECTL, B(31), true);
    this.router = new VtdDomainRouter({
      invalidate: (request) => {
        this.#drop(request); // a domain no plugin serves is the VMM's own: its IOTLB is this cache
        this.#noteSent(request);
      },
      invalidateEveryDomain: () => {
        this.#dropAll();
        this.#sent.push([-1, 0, -1]);
      },
    });
    const tableFor = host.tableFor;
    this.binder = new VtdPasidBinder(memory, undefined, tableFor ? (e) => tableFor(e) : undefined);
    this.queue = new VtdInvalidationQueue(memory, this.router, {
      configChanged: (d) => {
        this.#dropAll(); // context or PASID entries changed: nothing cached from them may be used
        this.#readContext();
        this.binder.configChanged(d);
      },
      interrupt: () => {
        this.regs.setUint32(VTD.ICS, 1, true);
        if (!(this.regs.getUint32(VTD.IECTL, true) & B(31))) {
          this.msi(this.regs.getUint32(VTD.IEADDR, true), this.regs.getUint32(VTD.IEDATA, true));
        }
      },
    });
  }

  #set64(offset: number, value: number): void {
    this.regs.setUint32(offset, value % 2 ** 32, true);
    this.regs.setUint32(offset + 4, Math.floor(value / 2 ** 32), true);
  }

  #get64(offset: number): number {
    return this.regs.getUint32(offset, true) + this.regs.getUint32(offset + 4, true) * 2 ** 32;
  }

  /** The plugin-facing sink of domain `did`: forwards to the plugin and keeps copies of what it submitted. */
  #sinkFor(did: number) {
    const plugin = this.#plugins.get(did)!;
    return {
      submit: (request: Request): number | undefined => {
        if (request.op === "invalidate") {
          const copy = structuredClone(request);
          this.#submitted.push(copy);
          this.#record(copy);
        }
        return plugin.submit(request);
      },
      drain: (): DrainReport => {
        const report = plugin.drain();
        // What reached the host is read where it left for the host — the invalidation calls as the shim passed
        // them — not from what was handed to the plugin nor from the relay's own counters: a plugin that swallows
        // invalidations, or a relay that counts what it never sent, leaves the device's IOTLB stale and is caught.
        const calls = this.host.hostCalls.take();
        for (const r of this.#submitted) {
          const s = r.scope;
          const pasid: PasidOrRid = s.kind === "pasid" || s.kind === "pasid-range" ? s.pasid : "rid";
          const targetId = this.host.hostCalls.targetOf(did, pasid) ??
            (pasid === "rid" ? this.host.hostCalls.targetOf(did, 0) : undefined);
          const slot = pasid === "rid" ? 0 : pasid % MockConstants.values.MOCK_NESTED_DOMAIN_IOTLB_NUM;
          if (targetId !== undefined && hostCallsCover(calls, targetId, slot, r)) {
            this.stats.relayed++;
            this.#drop(r);
            this.#noteSent(r);
          } else {
            this.stats.unsent++;
            this.#note(
              `unsent d${did} ${s.kind}${"firstPage" in s ? ` 0x${s.firstPage.toString(16)}+${s.pages}` : ""}`,
            );
          }
        }
        this.#submitted = [];
        return report;
      },
    };
  }

  /** The device's context entry: bind its PASID directory to the binder (attach on change, detach when gone). */
  #readContext(): void {
    let dir = -1;
    try {
      if (this.#rootTable && this.#scalable) {
        const bus = this.rid >> 8, devfn = this.rid & 0xff;
        const root = new DataView(this.memory.read(this.#rootTable + bus * 16, 16).buffer);
        const half = devfn < 128 ? 0 : 8;
        const lo = root.getUint32(half, true), hi = root.getUint32(half + 4, true);
        if (lo & 1) {
          const table = (lo - (lo & 0xfff)) + hi * 2 ** 32;
          const ctx = new DataView(this.memory.read(table + (devfn & 0x7f) * 32, 32).buffer);
          const c0 = ctx.getUint32(0, true), c1 = ctx.getUint32(4, true);
          if (c0 & 1) dir = (c0 - (c0 & 0xfff)) + c1 * 2 ** 32;
        }
      }
    } catch {
      dir = -1; // unreadable tables: no translation (faults), nothing bound
    }
    if (dir === this.#pasidDirectory) return;
    if (this.#pasidDirectory >= 0) this.binder.detach(this.rid);
    this.#pasidDirectory = dir;
    if (dir < 0) return;
    this.binder.attach({
      rid: this.rid,
      pasidDirectory: dir,
      sink: {
        submit: (request: BindRequest | UnbindRequest) => {
          let plugin = this.#plugins.get(request.domain);
          if (!plugin) {
            plugin = this.host.pluginFor(request.domain);
            this.#plugins.set(request.domain, plugin);
            this.router.assign(request.domain, this.#sinkFor(request.domain));
          }
          return plugin.submit(request);
        },
      },
    });
  }

  #dropAll(): void {
    this.#note("drop-all");
    this.stats.dropped += this.#cache.size;
    this.#cache.clear();
  }

  #drop(r: InvalidateRequest): void {
    const s = r.scope;
    this.#note(`drop d${r.domain} ${s.kind}${"firstPage" in s ? ` 0x${s.firstPage.toString(16)}+${s.pages}` : ""}`);
    if (s.kind === "range" || s.kind === "pasid-range") {
      if (s.kind === "pasid-range" && s.pasid !== 0) return; // only PASID 0 (RID_PASID) carries this device's DMA
      if (s.pages > this.#cache.size) {
        for (const page of [...this.#cache.keys()]) {
          if (page >= s.firstPage && page < s.firstPage + s.pages) this.#cache.delete(page), this.stats.dropped++;
        }
      } else {
        for (let p = s.firstPage; p < s.firstPage + s.pages; p++) if (this.#cache.delete(p)) this.stats.dropped++;
      }
      return;
    }
    if (s.kind === "pasid" && s.pasid !== 0) return;
    this.#dropAll();
  }

  #noteSent(r: InvalidateRequest): void {
    const s = r.scope;
    if (s.kind === "range" || s.kind === "pasid-range") this.#sent.push([r.domain, s.firstPage, s.pages]);
    else this.#sent.push([r.domain, 0, -1]);
  }

  /**
   * The independent check, from the guest's queue bytes: every IOTLB / P-IOTLB descriptor between IQH and IQT must
   * be covered by a range the relay (or the VMM, for its own domains) sent before the doorbell's waits completed.
   */
  #expected(iqt: number): [number, number, number][] {
    const out: [number, number, number][] = [];
    const q = this.queue;
    if (!q.base || (this.#gsts & GCMD.QIE) === 0) return out;
    const size = q.descriptorSize, total = q.entries * size;
    if (iqt % size || iqt >= total) return out;
    for (let at = q.iqh; at !== iqt; at = (at + size) % total) {
      let d;
      try {
        d = decodeVtdDescriptor(this.memory.read(q.base + at, size), 0, size, this.#scratch);
      } catch {
        break; // the queue model reports the same descriptor as IQE
      }
      this.stats.checkedDescriptors++;
      if (d.type === "pasid-iotlb") {
        if (d.granularity === "page") out.push([d.did, d.page, 2 ** d.am]);
        else out.push([d.did, 0, -1]);
      } else if (d.type === "iotlb") {
        if (d.granularity === "page") out.push([d.did, d.page, 2 ** d.am]);
        else out.push([d.granularity === "global" ? -1 : d.did, 0, -1]);
      }
    }
    return out;
  }

  #check(expected: [number, number, number][]): void {
    for (const [did, first, pages] of expected) {
      const covered = this.#sent.some(([sd, sf, sp]) =>
        (sd === did || sd === -1 || did === -1) &&
        (sp === -1 || (pages !== -1 && sf <= first && first + pages <= sf + sp))
      );
      if (!covered && this.stats.uncovered.length < 64) {
        this.stats.uncovered.push(`DID ${did} pages ${first}+${pages === -1 ? "all" : pages}`);
      }
    }
  }

  /** MMIO read at register `offset` (4 or 8 bytes); returns [low, high]. */
  read(offset: number, len: number): [number, number] {
    if (offset < 0 || offset + len > 0x1000 || offset % 4) return [0, 0];
    let lo: number;
    switch (offset) {
      case VTD.GSTS:
        lo = this.#gsts;
        break;
      case VTD.FSTS:
        lo = this.queue.fsts | this.#faultBits;
        break;
      case VTD.IQH:
        lo = this.queue.iqh;
        break;
      case VTD.IQT:
        lo = this.queue.iqt;
        break;
      default:
        lo = this.regs.getUint32(offset, true);
    }
    const hi = len === 8 ? this.regs.getUint32(offset + 4, true) : 0;
    return [lo >>> 0, hi >>> 0];
  }

  /** MMIO write at register `offset`. */
  write(offset: number, len: number, lo: number, hi: number): void {
    if (offset < 0 || offset + len > 0x1000 || offset % 4) {
      this.stats.otherAccesses++;
      return;
    }
    const value = len === 8 ? lo + hi * 2 ** 32 : lo;
    switch (offset) {
      case VTD.GCMD:
        return this.#gcmd(lo);
      case VTD.RTADDR:
      case VTD.RTADDR + 4:
      case VTD.IQA + 4:
      case VTD.FEDATA:
      case VTD.FEADDR:
      case VTD.FEUADDR:
      case VTD.IEDATA:
      case VTD.IEADDR:
      case VTD.IEUADDR:
      case VTD.IVA:
      case VTD.IVA + 4:
        this.regs.setUint32(offset, lo, true);
        if (len === 8) this.regs.setUint32(offset + 4, hi, true);
        return;
      case VTD.FECTL:
      case VTD.IECTL:
        this.regs.setUint32(offset, lo & B(31), true);
        return;
      case VTD.CCMD:
      case VTD.CCMD + 4: {
        // Register-based context invalidation: done at once (ICC clears); nothing cached survives it.
        this.#dropAll();
        this.#readContext();
        const high = offset === VTD.CCMD ? (len === 8 ? hi : this.regs.getUint32(VTD.CCMD + 4, true)) : lo;
        this.regs.setUint32(VTD.CCMD + 4, (high & 0x7fffffff) | 0, true);
        return;
      }
      case VTD.IOTLB:
      case VTD.IOTLB + 4: {
        this.#dropAll();
        const high = offset === VTD.IOTLB ? (len === 8 ? hi : 0) : lo;
        this.regs.setUint32(VTD.IOTLB + 4, high & 0x7fffffff, true);
        return;
      }
      case VTD.FSTS:
        this.#faultBits &= ~(lo & 3);
        this.queue.writeFsts(lo);
        return;
      case VTD.FRCD + 12:
        if (lo & B(31)) { // F is write-1-to-clear
          this.regs.setUint32(VTD.FRCD + 12, 0, true);
          this.#faultBits &= ~2;
        }
        return;
      case VTD.ICS:
        this.regs.setUint32(VTD.ICS, this.regs.getUint32(VTD.ICS, true) & ~(lo & 1), true);
        return;
      case VTD.IQA:
        this.regs.setUint32(VTD.IQA, lo, true);
        if (len === 8) this.regs.setUint32(VTD.IQA + 4, hi, true);
        this.queue.writeIqa(this.#get64(VTD.IQA));
        return;
      case VTD.IQT: {
        if (!(this.#gsts & GCMD.QIE)) return; // the queue is off: the tail is ignored
        const expected = this.#expected(value); // the independent check's decoding: not the relay's latency
        this.#sent = [];
        this.#current = [];
        const t0 = performance.now();
        const r = this.queue.writeIqt(value);
        this.stats.doorbellUs.push((performance.now() - t0) * 1000);
        if (r.waitsCompleted > 0) this.#current.push({ op: "sync" });
        if (this.#current.length && this.doorbellLog.length < 200_000) {
          this.doorbellLog.push({ requests: this.#current });
        }
        this.stats.doorbells++;
        this.stats.descriptors += r.processed;
        this.stats.waits += r.waitsCompleted;
        if (r.error) this.stats.queueErrors.push(`descriptor ${r.error.index}: ${r.error.reason}`);
        else this.#check(expected);
        return;
      }
      default:
        this.stats.otherAccesses++;
    }
  }

  #gcmd(value: number): void {
    // Persistent bits follow the command; SRTP and the other one-shot commands complete at once.
    let gsts = this.#gsts & GCMD.SRTP; // RTPS stays set once a root table was latched
    if (value & GCMD.SRTP) {
      const rt = this.#get64(VTD.RTADDR);
      this.#scalable = ((rt >>> 10) & 3) === 1; // TTM 01: scalable mode
      this.#rootTable = rt - (rt % 4096);
      this.#dropAll();
      this.#readContext();
      gsts |= GCMD.SRTP;
    }
    if (value & GCMD.TE) gsts |= GCMD.TE;
    else if (this.#gsts & GCMD.TE) this.#dropAll();
    if (value & GCMD.QIE) {
      if (!(this.#gsts & GCMD.QIE)) this.queue.writeIqa(this.#get64(VTD.IQA)); // enabling resets IQH and IQT
      gsts |= GCMD.QIE;
    }
    if (value & GCMD.CFI) gsts |= GCMD.CFI;
    this.#gsts = gsts >>> 0;
  }

  /** Translate device DMA at `iova` (one page) for a read or a write; a fault is recorded and returns undefined. */
  translate(iova: number, write: boolean): number | undefined {
    if (!(this.#gsts & GCMD.TE)) return iova; // translation off: DMA addresses are guest-physical
    this.stats.lookups++;
    const page = Math.floor(iova / 4096);
    let t = this.#cache.get(page);
    if (!t) {
      t = this.#walk(page, iova, write);
      if (!t) return undefined;
      this.#cache.set(page, t);
    } else if (this.verifyHits) {
      // Diagnosis: a hit whose page the guest's table no longer maps the same way is DMA through a stale entry
      // (Linux invalidates before it reuses an IOVA, and in caching mode after it maps one).
      const fresh = this.#walkQuiet(page);
      if (!fresh || fresh.gpaPage !== t.gpaPage) {
        this.stats.staleHits++;
        if (this.stats.staleDetails.length < 16) {
          this.stats.staleDetails.push(
            `iova 0x${iova.toString(16)} cached gpa page 0x${t.gpaPage.toString(16)}, table now ${
              fresh ? `0x${fresh.gpaPage.toString(16)}` : "not present"
            }; recent: ${this.recent.slice(-12).join(" | ")}`,
          );
        }
      }
    }
    if (write && !t.write) {
      this.#fault(iova, write, "write to a read-only page");
      return undefined;
    }
    return t.gpaPage * 4096 + (iova % 4096);
  }

  /** A walk without recording a fault (diagnosis only). */
  #walkQuiet(page: number): CachedTranslation | undefined {
    try {
      if (this.#pasidDirectory < 0) return undefined;
      const entry = lookupVtdPasidEntry(this.memory, this.#pasidDirectory, 0);
      if (!entry.present || entry.translation !== "first-stage") return undefined;
      const w = walkRange(
        this.memory,
        { format: "vtd-fl", root: entry.firstStagePage * 4096, levels: entry.addressWidth === 57 ? 5 : 4 },
        page,
        1,
        this.ramBytes,
      );
      return w.runs[0] ? { gpaPage: w.runs[0].gpaPage, write: w.runs[0].write } : undefined;
    } catch {
      return undefined;
    }
  }

  #walk(page: number, iova: number, write: boolean): CachedTranslation | undefined {
    this.stats.walks++;
    if (!this.#scalable || this.#pasidDirectory < 0) {
      this.#fault(iova, write, this.#scalable ? "no present context entry" : "root table is not scalable-mode");
      return undefined;
    }
    let entry: VtdPasidEntry;
    try {
      entry = lookupVtdPasidEntry(this.memory, this.#pasidDirectory, 0);
    } catch (e) {
      this.#fault(iova, write, `PASID entry: ${(e as Error).message}`);
      return undefined;
    }
    if (!entry.present || (entry.translation !== "first-stage" && entry.translation !== "pass-through")) {
      this.#fault(iova, write, entry.present ? `${entry.translation} PASID entry` : "PASID entry not present");
      return undefined;
    }
    if (entry.translation === "pass-through") return { gpaPage: page, write: true };
    const w = walkRange(
      this.memory,
      { format: "vtd-fl", root: entry.firstStagePage * 4096, levels: entry.addressWidth === 57 ? 5 : 4 },
      page,
      1,
      this.ramBytes,
    );
    const run = w.runs[0];
    if (!run) {
      this.#fault(iova, write, w.faults[0]?.reason ?? "not present");
      return undefined;
    }
    return { gpaPage: run.gpaPage, write: run.write };
  }

  #fault(iova: number, write: boolean, reason: string): void {
    if (this.stats.faults.length < 64) {
      this.stats.faults.push({ iova, write, reason: `${reason}; recent: ${this.recent.slice(-12).join(" | ")}` });
    }
    if (this.#faultBits & 2) return; // the one fault record is full: the guest sees the first
    // FRCD: FI (page) in bits 63:12, SID in 79:64, FR (reason 0x71-ish: first-stage not present) 103:96, T 126, F 127.
    const fi = iova - (iova % 4096);
    this.regs.setUint32(VTD.FRCD, fi % 2 ** 32, true);
    this.regs.setUint32(VTD.FRCD + 4, Math.floor(fi / 2 ** 32), true);
    this.regs.setUint32(VTD.FRCD + 8, this.rid, true);
    this.regs.setUint32(VTD.FRCD + 12, (B(31) | (write ? 0 : B(30)) | 0x71) >>> 0, true);
    this.#faultBits |= 2; // PPF
    if (!(this.regs.getUint32(VTD.FECTL, true) & B(31))) {
      this.msi(this.regs.getUint32(VTD.FEADDR, true), this.regs.getUint32(VTD.FEDATA, true));
    }
  }

  dispose(): void {
    for (const p of this.#plugins.values()) p[Symbol.dispose]();
    this.#plugins.clear();
  }
}
