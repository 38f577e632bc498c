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
import type { DrainReport } from "../../core/queue.ts";
import { PAGE_SPACE, type Request } from "../../core/request.ts";
import { decodeVtdDescriptor, type VtdDescriptor, VtdDescriptorError } from "./descriptors.ts";

/** FSTS bits the queue sets (write 1 to clear). */
export const FSTS = { IQE: 1 << 4, ICE: 1 << 5, ITE: 1 << 6 } as const;

/** Guest-physical memory, bounds-checked by the VMM (throw for anything outside guest RAM). */
export interface GuestMemory {
  read(gpa: number, length: number): Uint8Array;
  write(gpa: number, bytes: Uint8Array): void;
}

/** Where requests go: a relay queue, or a plugin in front of one. */
export interface RelaySink {
  submit(request: Request): number;
  drain(): DrainReport;
}

/** Guest-visible side effects the VMM carries out. */
export interface VtdQueueHooks {
  /** A wait with IF set completed: raise the invalidation-completion interrupt. */
  interrupt?(): void;
  /** PASID-cache or context-cache invalidation: the guest changed PASID or context entries; re-read them (binds). */
  configChanged?(descriptor: VtdDescriptor & { type: "pasid-cache" | "context-cache" }): void;
  /** A page group response (for the fault path). */
  pageGroupResponse?(descriptor: VtdDescriptor & { type: "page-group-response" }): void;
  /** Domains a global IOTLB invalidation reaches (default: none known, so it reaches nothing). */
  domains?(): readonly number[];
}

/** What one doorbell did. */
export interface DoorbellResult {
  /** Descriptors consumed (IQH moved past them). */
  readonly processed: number;
  /** Waits completed (status written / interrupt raised). */
  readonly waitsCompleted: number;
  /** Set when the queue stopped with IQE. */
  readonly error?: { readonly index: number; readonly reason: string };
}

/**
 * One guest VT-d unit's invalidation queue.
 *
 * @example
 * ```ts
 * import { VtdInvalidationQueue } from "./queue.ts";
 * import { RelayQueue } from "../../core/queue.ts";
 * import { ModelHost } from "../../model/host.ts";
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
 * console.log(qi.writeIqt(2 * 16), new DataView(ram.buffer).getUint32(0x8000, true).toString(16)); // { processed: 2, waitsCompleted: 1 } cafe
 * ```
 */
export class VtdInvalidationQueue {
  /** Queue base (guest-physical), descriptor size and entries, from IQA. */
  base = 0;
  descriptorSize: 16 | 32 = 16;
  entries = 256;
  /** IQH and IQT as byte offsets, as the registers hold them. */
  iqh = 0;
  iqt = 0;
  /** Fault status bits owned by the queue (IQE, ICE, ITE). */
  fsts = 0;

  constructor(readonly memory: GuestMemory, readonly sink: RelaySink, readonly hooks: VtdQueueHooks = {}) {}

  /** IQA: base [63:12], DW [11] (256-bit descriptors), QS [2:0] (2^QS 4 KiB pages). Resets IQH. */
  writeIqa(value: number): void {
    const qs = value % 8;
    this.descriptorSize = Math.floor(value / 2048) % 2 === 1 ? 32 : 16;
    this.base = Math.floor(value / 4096) * 4096;
    this.entries = (2 ** qs * 4096) / this.descriptorSize;
    this.iqh = 0;
    this.iqt = 0;
  }

  /** FSTS write: 1s clear the queue's error bits. Clearing IQE lets the queue run again. */
  writeFsts(value: number): void {
    this.fsts &= ~(value & (FSTS.IQE | FSTS.ICE | FSTS.ITE));
  }

  /** IQT write: the doorbell. Processes IQH..IQT unless IQE is pending. */
  writeIqt(value: number): DoorbellResult {
    this.iqt = value;
    return this.process();
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
    if (this.iqt % size !== 0 || this.iqt / size >= this.entries || this.iqt > 0x7ffff) {
      return this.#iqe(headIndex, `IQT 0x${this.iqt.toString(16)} is misaligned or beyond the queue`, 0, 0);
    }
    const tailIndex = this.iqt / size;
    // Per queued request: the descriptor it came from; waits also carry their descriptor.
    const origin = new Map<number, number>();
    const waits: { seq: number; index: number; d: VtdDescriptor & { type: "wait" } }[] = [];
    let processed = 0, completed = 0;
    const hostFailure = "host invalidation failed or wait status not writable";
    // Queue order from IQH, across the wrap.
    const after = (a: number, b: number) =>
      (a - headIndex + this.entries) % this.entries > (b - headIndex + this.entries) % this.entries;
    const settle = (): { failedAt?: number } => {
      const report = this.sink.drain();
      // The earliest failing descriptor in queue order.
      let failedAt: number | undefined;
      for (const f of report.failures) {
        const index = origin.get(f.seq);
        if (index !== undefined && (failedAt === undefined || after(failedAt, index))) failedAt = index;
      }
      for (const w of waits.splice(0)) {
        if (failedAt !== undefined && after(w.index, failedAt)) continue;
        try {
          this.#completeWait(w.d);
        } catch {
          // The status address is not guest RAM: stop there, as with any bad descriptor.
          if (failedAt === undefined || after(failedAt, w.index)) failedAt = w.index;
          continue;
        }
        completed++;
      }
      origin.clear();
      return { failedAt };
    };
    for (let index = headIndex; index !== tailIndex; index = (index + 1) % this.entries) {
      let d: VtdDescriptor;
      try {
        d = decodeVtdDescriptor(this.memory.read(this.base + index * size, size), 0, size);
      } catch (e) {
        const { failedAt } = settle();
        if (failedAt !== undefined) return this.#iqe(failedAt, hostFailure, processed, completed);
        const reason = e instanceof VtdDescriptorError ? e.message : `descriptor unreadable: ${(e as Error).message}`;
        return this.#iqe(index, reason, processed, completed);
      }
      for (const request of this.#requests(d)) origin.set(this.sink.submit(request), index);
      if (d.type === "wait") {
        waits.push({ seq: this.sink.submit({ op: "sync" }), index, d });
        if (d.fence) {
          const { failedAt } = settle();
          if (failedAt !== undefined) return this.#iqe(failedAt, hostFailure, processed, completed);
        }
      } else if (d.type === "pasid-cache" || d.type === "context-cache") {
        // A configuration change: what was queued before it goes out first, then the VMM re-reads the tables.
        const { failedAt } = settle();
        if (failedAt !== undefined) return this.#iqe(failedAt, hostFailure, processed, completed);
        this.hooks.configChanged?.(d);
      } else if (d.type === "page-group-response") {
        this.hooks.pageGroupResponse?.(d);
      }
      processed++;
    }
    const { failedAt } = settle();
    if (failedAt !== undefined) {
      return this.#iqe(
        failedAt,
        hostFailure,
        (failedAt - headIndex + this.entries) % this.entries,
        completed,
      );
    }
    this.iqh = this.iqt;
    return { processed, waitsCompleted: completed };
  }

  #completeWait(d: VtdDescriptor & { type: "wait" }): void {
    if (d.statusWrite) {
      const status = new Uint8Array(4);
      new DataView(status.buffer).setUint32(0, d.statusData, true);
      this.memory.write(d.statusAddress, status);
    }
    if (d.interrupt) this.hooks.interrupt?.();
  }

  /** The relay requests a descriptor stands for (empty for what the host does itself or the VMM handles). */
  #requests(d: VtdDescriptor): Request[] {
    switch (d.type) {
      case "pasid-iotlb":
        if (d.granularity === "pasid") {
          return [{ op: "invalidate", domain: d.did, scope: { kind: "pasid", pasid: d.pasid } }];
        }
        return [{
          op: "invalidate",
          domain: d.did,
          scope: { kind: "pasid-range", pasid: d.pasid, ...span(d.page, d.am) },
          leaf: d.ih,
        }];
      case "iotlb":
        // Second-stage (RID) translations; a global one reaches every domain the VMM knows.
        if (d.granularity === "page") {
          return [{
            op: "invalidate",
            domain: d.did,
            scope: { kind: "range", ...span(d.page, d.am) },
            noPasid: true,
            leaf: d.ih,
          }];
        }
        if (d.granularity === "domain") {
          return [{ op: "invalidate", domain: d.did, scope: { kind: "all" }, noPasid: true }];
        }
        return (this.hooks.domains?.() ?? []).map((domain) => ({
          op: "invalidate",
          domain,
          scope: { kind: "all" },
          noPasid: true,
        }));
      default:
        // device-TLB (the kernel does ATS invalidation on VT-d), interrupt entry cache (the VMM's interrupt
        // remapping), waits and configuration changes are handled around the relay.
        return [];
    }
  }
}

/** 2^am pages at `page`, aligned down to the span (a misaligned address widens, never narrows). */
function span(page: number, am: number): { firstPage: number; pages: number } {
  const pages = 2 ** Math.min(am, 52);
  const firstPage = Math.floor(page / pages) * pages;
  return { firstPage, pages: Math.min(pages, PAGE_SPACE - firstPage) };
}
