/**
 * The emulated VT-d unit behind the guest's register page: IQA/IQT/IQH/FSTS drive iommu-relay's invalidation
 * queue model, whose requests go to the VM's relay queue; PASID-cache invalidations make it read the guest's PASID
 * entries and bind or unbind through each device's plugin.
 *
 * @module
 */
import {
  type DoorbellResult,
  type GuestMemory,
  type HostPageFault,
  lookupVtdPasidEntry,
  type RelaySink,
  type VtdDescriptor,
  VtdInvalidationQueue,
  VtdPageRequestQueue,
  type VtdPasidEntry,
  vtdPasidEntryTable,
} from "../../lib/frontends/vtd/mod.ts";
import type { PasidOrRid, StageOneTable } from "../../lib/request/request.ts";
import type { RelayPlugin } from "../../lib/plugin/plugin.ts";
import { VTD_REG } from "./layout.ts";

/** A device behind this unit: its plugin and the PASID directory the guest keeps for it. */
export interface UnitDevice {
  readonly plugin: RelayPlugin;
  readonly pasidDirectory: number;
}

/** What the unit did, for the summary. */
export interface UnitStats {
  doorbells: number;
  descriptors: number;
  waits: number;
  binds: number;
  unbinds: number;
  /** PASID entries the VMM refused (and unbound), with why. */
  badEntries: string[];
  /** Doorbells that stopped with IQE, with why. */
  errors: string[];
  /** Register accesses outside what the unit models (reads 0, writes ignored). */
  otherAccesses: number;
  /** The page request path: faults raised, delivered to the guest, answered (and forwarded), refused. */
  pageRequests: { raised: number; delivered: number; answered: number; refused: number; roundTripUs?: number };
}

/** Where page faults come from (the host's fault queue, or a stand-in) and where the answers go. */
export interface FaultSource {
  /** Raise one fault and read it back from the host; undefined when none came. */
  raise(): HostPageFault | undefined;
  /** Answer the host (the fault queue's page response). */
  respond(cookie: number, code: number): void;
}

/** How a PASID entry becomes a host table: VT-d S1 on a VT-d host, or the host's own format (the selftest mock). */
export type TableFor = (entry: VtdPasidEntry & { present: true }) => StageOneTable | undefined;

/** The VT-d unit. `onDoorbell` runs after each IQT write, with the doorbell's index, result and µs spent. */
export class VtdUnit {
  readonly queue: VtdInvalidationQueue;
  readonly stats: UnitStats = {
    doorbells: 0,
    descriptors: 0,
    waits: 0,
    binds: 0,
    unbinds: 0,
    badEntries: [],
    errors: [],
    otherAccesses: 0,
    pageRequests: { raised: 0, delivered: 0, answered: 0, refused: 0 },
  };
  /** The guest's page request queue; faults come from `faults`. */
  readonly prq: VtdPageRequestQueue;
  #raisedAt = 0;
  readonly #devices: ReadonlyMap<number, UnitDevice>;
  readonly #bound = new Map<number, Set<number>>();

  constructor(
    readonly memory: GuestMemory,
    sink: RelaySink,
    devices: ReadonlyMap<number, UnitDevice>,
    readonly tableFor: TableFor = vtdPasidEntryTable,
    readonly onDoorbell?: (index: number, result: DoorbellResult, micros: number) => void,
    readonly faults?: FaultSource,
  ) {
    this.#devices = devices;
    this.prq = new VtdPageRequestQueue(memory, (cookie, code) => {
      this.stats.pageRequests.answered++;
      this.stats.pageRequests.roundTripUs = Number(((performance.now() - this.#raisedAt) * 1000).toFixed(0));
      faults?.respond(cookie, code);
    });
    this.queue = new VtdInvalidationQueue(memory, sink, {
      domains: () => [...devices.keys()],
      configChanged: (d) => this.#configChanged(d),
      pageGroupResponse: (d) => {
        if (this.prq.guestResponse(d)) this.stats.pageRequests.refused++;
      },
    });
  }

  /** The guest polls PRS: the first time it waits with an empty queue, the fault source raises one fault. */
  #prs(): number {
    const pr = this.stats.pageRequests;
    if (this.faults && this.prq.base && !(this.prq.prs & 1) && pr.raised === 0) {
      pr.raised++;
      this.#raisedAt = performance.now();
      const f = this.faults.raise();
      if (f && this.prq.deliver(f)) pr.delivered++;
    }
    return this.prq.prs;
  }

  /** An MMIO read of `len` bytes at register offset `offset`. */
  read(offset: number, _len: number): number {
    switch (offset) {
      case VTD_REG.FSTS:
        return this.queue.fsts;
      case VTD_REG.IQH:
        return this.queue.iqh;
      case VTD_REG.IQT:
        return this.queue.iqt;
      case VTD_REG.IQH_HI:
      case VTD_REG.IQT_HI:
      case VTD_REG.IQA_HI:
        return 0;
      case VTD_REG.PRS:
        return this.#prs();
      case VTD_REG.PQH:
        return this.prq.pqh;
      case VTD_REG.PQT:
        return this.prq.pqt;
      case VTD_REG.PQA:
        return this.prq.base + Math.log2((this.prq.entries * 32) / 4096);
      case VTD_REG.IQA:
        return this.queue.base + (this.queue.descriptorSize === 32 ? 0x800 : 0) +
          Math.log2((this.queue.entries * this.queue.descriptorSize) / 4096);
      default:
        this.stats.otherAccesses++;
        return 0;
    }
  }

  /** An MMIO write of `value` (`len` bytes) at register offset `offset`. */
  write(offset: number, _len: number, value: number): void {
    switch (offset) {
      case VTD_REG.IQA:
        this.queue.writeIqa(value);
        return;
      case VTD_REG.IQT: {
        const t0 = performance.now();
        const r = this.queue.writeIqt(value);
        const micros = (performance.now() - t0) * 1000;
        this.stats.doorbells++;
        this.stats.descriptors += r.processed;
        this.stats.waits += r.waitsCompleted;
        if (r.error) this.stats.errors.push(`descriptor ${r.error.index}: ${r.error.reason}`);
        this.onDoorbell?.(this.stats.doorbells - 1, r, micros);
        return;
      }
      case VTD_REG.FSTS:
        this.queue.writeFsts(value);
        return;
      case VTD_REG.PQA:
        this.prq.writePqa(value);
        return;
      case VTD_REG.PQH:
        this.prq.writePqh(value);
        return;
      case VTD_REG.PRS:
        this.prq.writePrs(value);
        return;
      case VTD_REG.IQA_HI:
      case VTD_REG.IQT_HI:
        if (value !== 0) this.stats.otherAccesses++; // everything here lives below 4 GiB
        return;
      default:
        this.stats.otherAccesses++;
    }
  }

  #configChanged(d: VtdDescriptor & { type: "pasid-cache" | "context-cache" }): void {
    if (d.type !== "pasid-cache") {
      // A context change: re-read every PASID this unit has bound on every device.
      for (const did of this.#devices.keys()) this.#reread(did);
      return;
    }
    if (d.granularity === "pasid") this.#refresh(d.did, d.pasid);
    else if (d.granularity === "domain") this.#reread(d.did);
    else for (const did of this.#devices.keys()) this.#reread(did);
  }

  /** Domain- or global-selective: re-read the PASIDs bound so far (new binds come PASID-selective, as Linux sends). */
  #reread(did: number): void {
    for (const pasid of [...(this.#bound.get(did) ?? [])]) this.#refresh(did, pasid);
  }

  #refresh(did: number, pasid: number): void {
    const device = this.#devices.get(did);
    if (!device) {
      this.stats.badEntries.push(`PASID-cache invalidation for DID ${did}, which no assigned device uses`);
      return;
    }
    const key: PasidOrRid = pasid === 0 ? "rid" : pasid; // PASID 0 is RID_PASID: the no-PASID address space
    const bound = this.#bound.get(did) ?? new Set<number>();
    this.#bound.set(did, bound);
    let table: StageOneTable | undefined;
    try {
      const entry = lookupVtdPasidEntry(this.memory, device.pasidDirectory, pasid);
      if (entry.present) {
        table = this.tableFor(entry);
        if (!table) this.stats.badEntries.push(`DID ${did} PASID ${pasid}: ${entry.translation} is not relayed`);
      }
    } catch (e) {
      this.stats.badEntries.push(`DID ${did} PASID ${pasid}: ${(e as Error).message}`);
    }
    if (table) {
      try {
        device.plugin.submit({ op: "bind", domain: did, pasid: key, table });
        bound.add(pasid);
        this.stats.binds++;
        return;
      } catch (e) {
        this.stats.badEntries.push(`DID ${did} PASID ${pasid}: bind refused: ${(e as Error).message}`);
      }
    }
    // Absent, unusable or refused: the safe state is no translation at all.
    if (bound.delete(pasid)) {
      device.plugin.submit({ op: "unbind", domain: did, pasid: key });
      this.stats.unbinds++;
    }
  }
}
