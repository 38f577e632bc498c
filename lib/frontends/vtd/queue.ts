/**
 * A register-level model of the VT-d invalidation queue (IQA/IQH/IQT and the FSTS error bits) that turns what the
 * guest writes into relay requests. The VMM forwards the guest's MMIO writes (`writeIqa`, `writeIqt` — the
 * doorbell — and `writeFsts`) and gives it guest memory to read descriptors from and write wait status to.
 *
 * One doorbell is processed as one relay window: every descriptor from IQH to IQT is decoded and queued, the
 * queue is drained once (one ioctl per host target), and then the waits complete in order. A fence wait drains
 * right there, as the guest asked. Guest input is hostile: a malformed descriptor, an out-of-range tail or an
 * unreadable descriptor sets FSTS.IQE with IQH at that descriptor, and nothing after it is processed until the
 * guest clears IQE. VT-d has no architected "host failed" error; iommu-relay's documented choice is the same IQE,
 * with IQH at the descriptor whose host invalidation failed (waits before it complete; none after it do).
 *
 * @module
 */
import { LimitError } from "../../kernel/errors.ts";
import { PAGE_SPACE } from "../../request/request.ts";
import { type RelaySink, RelayWindow, type WaitCompleter } from "../window.ts";
import { decodeVtdDescriptor, type VtdDescriptor, VtdDescriptorError, VtdDescriptorScratch } from "./descriptors.ts";
import { VTD_RID_PASID_ZERO, type VtdRidPasidMap } from "./rid_pasid.ts";
import { VtdDomainRouter } from "./routing.ts";
import { SnapshotError, SnapshotFields as F } from "../../device/snapshot.ts";

/** The invalidation queue's registers in a snapshot (docs/snapshot.md). */
export interface VtdQueueState {
  /** IQA as the guest last wrote it. */
  readonly iqa: number;
  /** IQH, a byte offset. */
  readonly iqh: number;
  /** IQT as the guest last wrote it. */
  readonly iqt: number;
  /** FSTS bits the queue owns (IQE, ICE, ITE). */
  readonly fsts: number;
}

/** FSTS bits the queue sets (write 1 to clear). */
export const FSTS = { IQE: 1 << 4, ICE: 1 << 5, ITE: 1 << 6 } as const;

import type { GuestMemory } from "../../memory/guest_memory.ts";
export type { GuestMemory } from "../../memory/guest_memory.ts";

export type { RelaySink } from "../window.ts";

/** Guest-visible side effects the VMM carries out. Descriptors handed to a hook are reused once it returns: copy to keep. */
export interface VtdQueueHooks {
  /** A wait with IF set completed: raise the invalidation-completion interrupt. */
  interrupt?(): void;
  /** PASID-cache or context-cache invalidation: the guest changed PASID or context entries; re-read them (binds). */
  configChanged?(descriptor: VtdDescriptor & { type: "pasid-cache" | "context-cache" }): void;
  /** A page group response (for the fault path). */
  pageGroupResponse?(descriptor: VtdDescriptor & { type: "page-group-response" }): void;
  /**
   * Domains a global IOTLB invalidation reaches, besides those of a {@linkcode VtdDomainRouter} sink (which knows its
   * assigned domains and hands the rest to its emulated-domains hook). A global invalidation that reaches no domain
   * at all is counted (`telemetry.globalUnrouted`).
   */
  domains?(): readonly number[];
  /**
   * An interrupt-entry-cache invalidation: the VMM's interrupt remapping (posted or remapped MSIs) drops cached IRTEs.
   * The relay has nothing to forward: iommufd keeps no guest interrupt remapping.
   */
  interruptEntryCache?(descriptor: VtdDescriptor & { type: "interrupt-entry-cache" }): void;
  /**
   * A device-TLB (ATS) invalidation, with or without PASID. Not forwarded: on VT-d the host kernel invalidates an
   * assigned device's TLB itself with every invalidation the relay sends (see docs/frontends-vtd.md); an emulated
   * device with an ATC model of its own invalidates it here.
   */
  deviceTlb?(descriptor: VtdDescriptor & { type: "device-tlb" | "pasid-device-tlb" }): void;
}

/** Options of the queue model. */
export interface VtdQueueOptions {
  /** The RID_PASIDs of the unit's devices (default: ECAP.RPS clear, so PASID 0 for every device, as Linux uses). */
  readonly ridPasids?: VtdRidPasidMap;
  /**
   * Waits one window may hold before the queue drains and continues (default 1024): a queue of any architected size
   * (up to 2^15 descriptors) is processed completely without outgrowing a sink's limits.
   */
  readonly maxWaitsPerDrain?: number;
}

/** The type names of VT-d invalidation-queue descriptors, as {@linkcode VtdDescriptor} tags them. */
export type VtdDescriptorType = VtdDescriptor["type"];

/** Counters of the queue model, readable at any time. */
export interface VtdQueueTelemetry {
  /** IQT writes that moved the tail (each processes the queue up to it). */
  doorbells: number;
  /** Descriptors consumed, by type (whether forwarded, handed to a hook, or neither). */
  readonly byType: Record<VtdDescriptorType, number>;
  /** PASID-granular descriptors for a RID_PASID, relayed as the device's no-PASID ("rid") translation. */
  ridPasid: number;
  /** Global invalidations that reached no domain (no router, no `domains` hook, nothing known). */
  globalUnrouted: number;
  /** Doorbells that stopped with IQE, by cause. */
  readonly errors: {
    /** A malformed or unreadable descriptor, or an IQA/IQT value outside the queue. */
    guest: number;
    /** A host invalidation failed, or a wait's status address was not guest RAM. */
    host: number;
    /** The sink or a VMM hook threw at the descriptor. */
    refused: number;
  };
}

/** What one doorbell did (a successful doorbell's result object is reused: read it before the next one). */
export interface DoorbellResult {
  /** Descriptors consumed (IQH moved past them). */
  readonly processed: number;
  /** Waits completed (status written / interrupt raised). */
  readonly waitsCompleted: number;
  /** Set when the queue stopped with IQE. */
  readonly error?: { readonly index: number; readonly reason: string };
}

const DESCRIPTOR_TYPES: readonly VtdDescriptorType[] = [
  "context-cache",
  "iotlb",
  "device-tlb",
  "interrupt-entry-cache",
  "wait",
  "pasid-iotlb",
  "pasid-cache",
  "pasid-device-tlb",
  "page-group-response",
];

/**
 * One guest VT-d unit's invalidation queue.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { VtdInvalidationQueue } from "./queue.ts";
 * import { RelayQueue } from "../../relay/queue.ts";
 * import { ModelHost } from "../../host/model.ts";
 * const ram = new Uint8Array(1 << 16);
 * const memory = { read: (a: number, n: number) => ram.slice(a, a + n), write: (a: number, b: Uint8Array) => ram.set(b, a) };
 * const host = new ModelHost();
 * const relay = new RelayQueue(host);
 * relay.bind(1, 5, { targetId: host.createTarget("vtd-s1"), format: "vtd-s1" });
 * const qi = new VtdInvalidationQueue(memory, relay);
 * qi.writeIqa(0x1000); // 4 KiB queue of 128-bit descriptors at 0x1000
 * const d = new DataView(ram.buffer, 0x1000);
 * d.setUint32(0, 0x6 | (2 << 4) | (1 << 16), true); d.setUint32(4, 5, true); // PASID-IOTLB: all of PASID 5, DID 1
 * d.setUint32(16, 0x5 | (1 << 5), true); d.setUint32(20, 0xcafe, true); d.setUint32(24, 0x8000, true); // wait + status
 * assert.deepEqual(qi.writeIqt(2 * 16), { processed: 2, waitsCompleted: 1 });
 * assert.equal(new DataView(ram.buffer).getUint32(0x8000, true), 0xcafe);
 * ```
 */
export class VtdInvalidationQueue {
  /** Queue base (guest-physical), descriptor size and entries, from IQA. */
  base = 0;
  /** Bytes per descriptor: 32 when IQA.DW (bit 11) is set, else 16. */
  descriptorSize: 16 | 32 = 16;
  /** Queue size in descriptors, from IQA.QS (`2^QS` pages). */
  entries = 256;
  /** IQH and IQT as byte offsets, as the registers hold them. */
  iqh = 0;
  /** Invalidation queue tail: byte offset past the last descriptor the guest wrote. */
  iqt = 0;
  /** Fault status bits owned by the queue (IQE, ICE, ITE). */
  fsts = 0;
  /** Counters, readable at any time. */
  readonly telemetry: VtdQueueTelemetry = {
    doorbells: 0,
    byType: Object.fromEntries(DESCRIPTOR_TYPES.map((t) => [t, 0])) as Record<VtdDescriptorType, number>,
    ridPasid: 0,
    globalUnrouted: 0,
    errors: { guest: 0, host: 0, refused: 0 },
  };

  readonly #window: RelayWindow;
  readonly #ridPasids: VtdRidPasidMap;
  readonly #maxWaits: number;
  /** Why the last IQA write cannot be used (reserved bits, not a register value), or "". */
  #iqaInvalid = "";
  /** IQA as last written. */
  #iqa = 0;

  /** A queue reading descriptors from `memory` and relaying the requests to `sink`; `hooks` take what is not forwarded. */
  constructor(
    readonly memory: GuestMemory,
    readonly sink: RelaySink,
    readonly hooks: VtdQueueHooks = {},
    options: VtdQueueOptions = {},
  ) {
    const completer: WaitCompleter = {
      completeWait: (flags, data, address) => this.#completeWait(flags, data, address),
    };
    this.#window = new RelayWindow(sink, completer);
    this.#ridPasids = options.ridPasids ?? VTD_RID_PASID_ZERO;
    const maxWaits = options.maxWaitsPerDrain ?? 1024;
    if (!Number.isInteger(maxWaits) || maxWaits < 1) throw new RangeError(`maxWaitsPerDrain ${maxWaits}`);
    this.#maxWaits = maxWaits;
  }

  /**
   * IQA: base [63:12], DW [11] (256-bit descriptors), QS [2:0] (2^QS 4 KiB pages); bits 10:3 are reserved. Resets
   * IQH. A value that is not a 64-bit register value, or has reserved bits set, makes the next doorbell IQE.
   */
  writeIqa(value: number): void {
    this.#iqa = value;
    this.iqh = 0;
    this.iqt = 0;
    if (!Number.isInteger(value) || value < 0 || value >= 2 ** 64) {
      this.#iqaInvalid = `IQA ${value} is not a register value`;
      return;
    }
    const low = value % 4096;
    this.#iqaInvalid = (low & 0x7f8) !== 0 ? `IQA reserved bits 0x${(low & 0x7f8).toString(16)} set` : "";
    const qs = low & 7;
    this.descriptorSize = (low & 0x800) !== 0 ? 32 : 16;
    this.base = value - low;
    this.entries = (2 ** qs * 4096) / this.descriptorSize;
  }

  /**
   * The registers a snapshot keeps. Between doorbells (a doorbell is processed whole inside `writeIqt`) IQH is where
   * the queue stands: the descriptors before it were relayed, those from it on were not.
   */
  saveState(): VtdQueueState {
    return { iqa: this.#iqa, iqh: this.iqh, iqt: this.iqt, fsts: this.fsts };
  }

  /**
   * Check a snapshot's registers against this queue's geometry without changing anything; the function returned
   * sets them (and cannot fail). A `SnapshotError` names the field that does not fit.
   */
  prepareRestore(json: unknown, path = "vtdQueue"): () => void {
    const o = F.object(json, path);
    const iqa = F.uint(o.iqa, `${path}.iqa`);
    const iqh = F.uint(o.iqh, `${path}.iqh`), iqt = F.uint(o.iqt, `${path}.iqt`);
    const fsts = F.u32(o.fsts, `${path}.fsts`);
    if (fsts & ~(FSTS.IQE | FSTS.ICE | FSTS.ITE)) F.malformed(`${path}.fsts`, "only IQE, ICE and ITE");
    const size = iqa % 4096 & 0x800 ? 32 : 16, bytes = 2 ** (iqa % 8) * 4096;
    if (iqh % size !== 0 || iqh >= bytes) {
      throw new SnapshotError("malformed", `IQH ${iqh} is not a descriptor of the queue IQA describes`, `${path}.iqh`);
    }
    return () => {
      this.writeIqa(iqa);
      this.iqh = iqh;
      this.iqt = iqt; // the guest's value as written: a bad one is IQE at the next doorbell, as before the snapshot
      this.fsts = fsts;
    };
  }

  /** FSTS write: 1s clear the queue's error bits. Clearing IQE lets the queue run again. */
  writeFsts(value: number): void {
    this.fsts &= ~(value & (FSTS.IQE | FSTS.ICE | FSTS.ITE));
  }

  /**
   * IQT write: the doorbell. Processes IQH..IQT unless IQE is pending. Never throws: whatever goes wrong is IQE (a
   * VMM's MMIO handler must not see an exception for what a guest wrote or a host refused).
   */
  writeIqt(value: number): DoorbellResult {
    this.iqt = value;
    this.telemetry.doorbells++;
    try {
      return this.process();
    } catch (e) {
      // Not reachable by design (every step below catches); kept so that no future path can throw into the VMM.
      this.telemetry.errors.refused++;
      this.#window.settle(0);
      return this.#iqe(this.iqh / this.descriptorSize, `internal error: ${(e as Error)?.message}`, 0, 0);
    }
  }

  #iqe(index: number, reason: string, processed: number, waits: number): DoorbellResult {
    this.fsts |= FSTS.IQE;
    this.iqh = index * this.descriptorSize;
    return { processed, waitsCompleted: waits, error: { index, reason } };
  }

  /** Process what is between IQH and IQT (also after the guest cleared IQE). */
  process(): DoorbellResult {
    if (this.fsts & FSTS.IQE) {
      return {
        processed: 0,
        waitsCompleted: 0,
        error: { index: this.iqh / this.descriptorSize, reason: "IQE pending" },
      };
    }
    const size = this.descriptorSize;
    const headIndex = this.iqh / size;
    if (this.#iqaInvalid) {
      this.telemetry.errors.guest++;
      return this.#iqe(headIndex, this.#iqaInvalid, 0, 0);
    }
    const iqt = this.iqt;
    if (!Number.isInteger(iqt) || iqt < 0 || iqt % size !== 0 || iqt / size >= this.entries) {
      this.telemetry.errors.guest++;
      return this.#iqe(headIndex, `IQT ${iqt} is misaligned, negative or beyond the queue`, 0, 0);
    }
    const tailIndex = iqt / size;
    const n = this.entries;
    const window = this.#window;
    const byType = this.telemetry.byType;
    window.begin();
    let processed = 0;
    const bytes = size === 32 ? this.#bytes32 : this.#bytes16;
    // Queue order from IQH, across the wrap: position = (index - head) mod entries.
    for (let index = headIndex; index !== tailIndex; index = (index + 1) % n) {
      const position = (index - headIndex + n) % n;
      let d: VtdDescriptor;
      try {
        const gpa = this.base + index * size;
        if (this.memory.readInto) this.memory.readInto(gpa, bytes);
        else bytes.set(this.memory.read(gpa, size));
        d = decodeVtdDescriptor(bytes, 0, size, this.#scratch);
      } catch (e) {
        const reason = e instanceof VtdDescriptorError ? e.message : `descriptor unreadable: ${(e as Error)?.message}`;
        return this.#stopAt(headIndex, position, reason, processed, "guest");
      }
      byType[d.type]++;
      try {
        this.#submitRequests(d, position);
        if (d.type === "wait") {
          this.#submitWait(d, position);
          if (d.fence || window.pendingWaits >= this.#maxWaits) {
            const failedAt = window.settle();
            if (failedAt >= 0) return this.#stop(headIndex, failedAt, HOST_FAILURE, processed, "host");
          }
        } else if (d.type === "pasid-cache" || d.type === "context-cache") {
          // A configuration change: what was queued before it goes out first, then the VMM re-reads the tables.
          const failedAt = window.settle();
          if (failedAt >= 0) return this.#stop(headIndex, failedAt, HOST_FAILURE, processed, "host");
          this.hooks.configChanged?.(d);
        } else if (d.type === "page-group-response") {
          this.hooks.pageGroupResponse?.(d);
        } else if (d.type === "interrupt-entry-cache") {
          this.hooks.interruptEntryCache?.(d);
        } else if (d.type === "device-tlb" || d.type === "pasid-device-tlb") {
          this.hooks.deviceTlb?.(d);
        }
      } catch (e) {
        if (e instanceof HostFailure) return this.#stop(headIndex, e.position, HOST_FAILURE, e.position, "host");
        // The sink refused a request (e.g. a plugin's RequestError) or a hook threw: IQE at this descriptor.
        return this.#stopAt(headIndex, position, `refused: ${(e as Error)?.message}`, processed, "refused");
      }
      processed++;
    }
    const failedAt = window.settle();
    if (failedAt >= 0) return this.#stop(headIndex, failedAt, HOST_FAILURE, failedAt, "host");
    this.iqh = iqt;
    const result = this.#result;
    result.processed = processed;
    result.waitsCompleted = window.completed;
    return result;
  }

  /** Queue a wait; a sink at its own wait limit is drained once and asked again (queues of any size go through). */
  #submitWait(d: VtdDescriptor & { type: "wait" }, position: number): void {
    const flags = (d.statusWrite ? 1 : 0) | (d.interrupt ? 2 : 0);
    try {
      this.#window.wait(position, flags, d.statusData, d.statusAddress);
    } catch (e) {
      if (!(e instanceof LimitError)) throw e;
      const failedAt = this.#window.settle();
      if (failedAt >= 0) throw new HostFailure(failedAt);
      this.#window.wait(position, flags, d.statusData, d.statusAddress);
    }
  }

  /**
   * Stop at a descriptor that failed before reaching the host (`position`): what was queued before it is drained,
   * the waits before it complete unless a host failure came earlier, and nothing after it is kept.
   */
  #stopAt(
    headIndex: number,
    position: number,
    reason: string,
    processed: number,
    cause: "guest" | "refused",
  ): DoorbellResult {
    const failedAt = this.#window.settle(position);
    if (failedAt < position) return this.#stop(headIndex, failedAt, HOST_FAILURE, failedAt, "host");
    return this.#stop(headIndex, position, reason, processed, cause);
  }

  /** Stop with IQE at queue position `position` of this doorbell. */
  #stop(
    headIndex: number,
    position: number,
    reason: string,
    processed: number,
    cause: "guest" | "host" | "refused",
  ): DoorbellResult {
    this.telemetry.errors[cause]++;
    return this.#iqe((headIndex + position) % this.entries, reason, processed, this.#window.completed);
  }

  // Per doorbell, reused so that a doorbell allocates nothing once these have grown.
  readonly #scratch = new VtdDescriptorScratch();
  readonly #bytes16 = new Uint8Array(16);
  readonly #bytes32 = new Uint8Array(32);
  readonly #result = { processed: 0, waitsCompleted: 0 };
  readonly #status = new Uint8Array(4);
  readonly #statusView = new DataView(this.#status.buffer);
  // The request objects handed to the sink, refilled per descriptor.
  readonly #pasidAll = { op: "invalidate" as const, domain: 0, scope: { kind: "pasid" as const, pasid: 0 } };
  readonly #pasidRange = {
    op: "invalidate" as const,
    domain: 0,
    scope: { kind: "pasid-range" as const, pasid: 0, firstPage: 0, pages: 1 },
    leaf: false,
  };
  readonly #ridRange = {
    op: "invalidate" as const,
    domain: 0,
    scope: { kind: "range" as const, firstPage: 0, pages: 1 },
    noPasid: true,
    leaf: false,
  };
  readonly #ridAll = { op: "invalidate" as const, domain: 0, scope: { kind: "all" as const }, noPasid: true };

  /** A wait's completion: flags bit 0 = status write, bit 1 = interrupt. */
  #completeWait(flags: number, data: number, address: number): void {
    if (flags & 1) {
      this.#statusView.setUint32(0, data, true);
      this.memory.write(address, this.#status);
    }
    if (flags & 2) this.hooks.interrupt?.();
  }

  /** Queue the relay requests a descriptor stands for (none for what the host does itself or the VMM handles). */
  #submitRequests(d: VtdDescriptor, position: number): void {
    switch (d.type) {
      case "pasid-iotlb": {
        // The RID_PASID's entry translates requests without PASID: its invalidations are the RID's ("rid").
        const route = this.#ridPasids.route(d.did, d.pasid);
        if (route !== "pasid") {
          this.telemetry.ridPasid++;
          if (d.granularity === "pasid") this.#submitRidAll(d.did, position);
          else this.#submitRidRange(d.did, d.page, d.am, d.ih, position);
          if (route === "rid") return;
        }
        if (d.granularity === "pasid") {
          const r = this.#pasidAll;
          r.domain = d.did;
          r.scope.pasid = d.pasid;
          this.#window.submit(r, position);
        } else {
          const r = this.#pasidRange;
          r.domain = d.did;
          r.scope.pasid = d.pasid;
          span(d.page, d.am, r.scope);
          r.leaf = d.ih;
          this.#window.submit(r, position);
        }
        return;
      }
      case "iotlb":
        // Second-stage (RID) translations; a global one reaches every domain.
        if (d.granularity === "page") return this.#submitRidRange(d.did, d.page, d.am, d.ih, position);
        if (d.granularity === "domain") return this.#submitRidAll(d.did, position);
        return this.#submitEveryDomain(position);
      default:
        // device-TLB (the kernel does ATS invalidation on VT-d), interrupt entry cache (the VMM's interrupt
        // remapping), waits and configuration changes are handled around the relay (hooks).
        return;
    }
  }

  #submitRidRange(did: number, page: number, am: number, ih: boolean, position: number): void {
    const r = this.#ridRange;
    r.domain = did;
    span(page, am, r.scope);
    r.leaf = ih;
    this.#window.submit(r, position);
  }

  #submitRidAll(did: number, position: number): void {
    this.#ridAll.domain = did;
    this.#window.submit(this.#ridAll, position);
  }

  /** A global IOTLB invalidation: each assigned domain, the VMM's known domains, and the router's emulated ones. */
  #submitEveryDomain(position: number): void {
    const router = this.sink instanceof VtdDomainRouter ? this.sink : undefined;
    const known = this.hooks.domains?.() ?? NO_DOMAINS;
    const assigned = router?.domains() ?? NO_DOMAINS;
    for (let i = 0; i < assigned.length; i++) this.#submitRidAll(assigned[i], position);
    for (let i = 0; i < known.length; i++) {
      // The router sends a known but unassigned domain to its hook, which hears of the global one below anyway.
      if (router && router.sinkOf(known[i]) === undefined) continue;
      if (assigned.includes(known[i])) continue;
      this.#submitRidAll(known[i], position);
    }
    if (router) this.#window.track(router.submitEveryDomain(true), position);
    else if (known.length === 0) this.telemetry.globalUnrouted++;
  }
}

const NO_DOMAINS: readonly number[] = Object.freeze([]);

/** A host failure found while draining early (at a sink's wait limit): IQE at `position`. */
class HostFailure extends Error {
  constructor(readonly position: number) {
    super(`host failure at queue position ${position}`);
  }
}

const HOST_FAILURE = "host invalidation failed or wait status not writable";

/** 2^am pages at `page`, aligned down to the span (a misaligned address widens, never narrows), into `out`. */
function span(page: number, am: number, out: { firstPage: number; pages: number }): void {
  if (am < 31 && page >= 0 && page < 0x8000_0000) {
    // The common case in integer arithmetic (Linux's page-selective invalidations: am ≤ 9, pages below 2^31).
    const pages = 1 << am;
    out.firstPage = page & ~(pages - 1);
    out.pages = pages;
    return;
  }
  const pages = 2 ** Math.min(am, 52);
  const firstPage = Math.floor(page / pages) * pages;
  out.firstPage = firstPage;
  out.pages = Math.min(pages, PAGE_SPACE - firstPage);
}
