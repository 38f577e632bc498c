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
import { DrainOutcome, type DrainReport } from "../../core/outcome.ts";
import { PAGE_SPACE, type Request } from "../../core/request.ts";
import { decodeVtdDescriptor, type VtdDescriptor, VtdDescriptorError, VtdDescriptorScratch } from "./descriptors.ts";

/** FSTS bits the queue sets (write 1 to clear). */
export const FSTS = { IQE: 1 << 4, ICE: 1 << 5, ITE: 1 << 6 } as const;

/** Guest-physical memory, bounds-checked by the VMM (throw for anything outside guest RAM). */
export interface GuestMemory {
  read(gpa: number, length: number): Uint8Array;
  write(gpa: number, bytes: Uint8Array): void;
  /** Copy `out.length` bytes at `gpa` into `out` (optional: lets a doorbell read descriptors without allocating). */
  readInto?(gpa: number, out: Uint8Array): void;
}

/**
 * Where requests go: a relay queue, or a plugin in front of one. Request objects handed to `submit` are reused by
 * the front end once it returns: a sink that keeps one must copy it.
 */
export interface RelaySink {
  submit(request: Request): number;
  drain(): DrainReport;
  /** The allocation-free drain (optional; a front end falls back to `drain`). */
  drainInto?(out: DrainOutcome): DrainOutcome;
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

/** What one doorbell did (a successful doorbell's result object is reused: read it before the next one). */
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
    this.#head = headIndex;
    this.#completed = 0;
    let processed = 0;
    const bytes = size === 32 ? this.#bytes32 : this.#bytes16;
    // Queue order from IQH, across the wrap.
    for (let index = headIndex; index !== tailIndex; index = (index + 1) % this.entries) {
      let d: VtdDescriptor;
      try {
        const gpa = this.base + index * size;
        if (this.memory.readInto) this.memory.readInto(gpa, bytes);
        else bytes.set(this.memory.read(gpa, size));
        d = decodeVtdDescriptor(bytes, 0, size, this.#scratch);
      } catch (e) {
        const failedAt = this.#settle();
        if (failedAt >= 0) return this.#iqe(failedAt, HOST_FAILURE, processed, this.#completed);
        const reason = e instanceof VtdDescriptorError ? e.message : `descriptor unreadable: ${(e as Error).message}`;
        return this.#iqe(index, reason, processed, this.#completed);
      }
      this.#submitRequests(d, index);
      if (d.type === "wait") {
        this.#queueWait(d, index);
        if (d.fence) {
          const failedAt = this.#settle();
          if (failedAt >= 0) return this.#iqe(failedAt, HOST_FAILURE, processed, this.#completed);
        }
      } else if (d.type === "pasid-cache" || d.type === "context-cache") {
        // A configuration change: what was queued before it goes out first, then the VMM re-reads the tables.
        const failedAt = this.#settle();
        if (failedAt >= 0) return this.#iqe(failedAt, HOST_FAILURE, processed, this.#completed);
        this.hooks.configChanged?.(d);
      } else if (d.type === "page-group-response") {
        this.hooks.pageGroupResponse?.(d);
      }
      processed++;
    }
    const failedAt = this.#settle();
    if (failedAt >= 0) {
      return this.#iqe(failedAt, HOST_FAILURE, (failedAt - headIndex + this.entries) % this.entries, this.#completed);
    }
    this.iqh = this.iqt;
    const result = this.#result;
    result.processed = processed;
    result.waitsCompleted = this.#completed;
    return result;
  }

  // Per doorbell, reused so that a doorbell allocates nothing once these have grown.
  readonly #scratch = new VtdDescriptorScratch();
  readonly #bytes16 = new Uint8Array(16);
  readonly #bytes32 = new Uint8Array(32);
  readonly #outcome = new DrainOutcome();
  readonly #result = { processed: 0, waitsCompleted: 0 };
  readonly #status = new Uint8Array(4);
  readonly #statusView = new DataView(this.#status.buffer);
  #head = 0;
  #completed = 0;
  /** Requests queued since the last drain: sequence number → descriptor index (sequence numbers ascend). */
  readonly #originSeq: number[] = [];
  readonly #originIndex: number[] = [];
  #origins = 0;
  /** Waits queued since the last drain: their descriptor index and what completing them does. */
  readonly #waitIndex: number[] = [];
  readonly #waitFlags: number[] = [];
  readonly #waitData: number[] = [];
  readonly #waitAddress: number[] = [];
  #waits = 0;
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
  readonly #sync = { op: "sync" as const };

  /** Whether descriptor `a` comes after `b` in queue order from this doorbell's head. */
  #after(a: number, b: number): boolean {
    const n = this.entries, h = this.#head;
    return (a - h + n) % n > (b - h + n) % n;
  }

  #submit(request: Request, index: number): void {
    const seq = this.sink.submit(request);
    this.#originSeq[this.#origins] = seq;
    this.#originIndex[this.#origins++] = index;
  }

  #queueWait(d: VtdDescriptor & { type: "wait" }, index: number): void {
    this.sink.submit(this.#sync);
    const k = this.#waits++;
    this.#waitIndex[k] = index;
    this.#waitFlags[k] = (d.statusWrite ? 1 : 0) | (d.interrupt ? 2 : 0);
    this.#waitData[k] = d.statusData;
    this.#waitAddress[k] = d.statusAddress;
  }

  /** The descriptor a failed request came from, or -1 (sequence numbers ascend: a binary search). */
  #originOf(seq: number): number {
    let lo = 0, hi = this.#origins;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.#originSeq[mid] < seq) lo = mid + 1;
      else hi = mid;
    }
    return lo < this.#origins && this.#originSeq[lo] === seq ? this.#originIndex[lo] : -1;
  }

  /**
   * Drain what is queued and complete the waits before the earliest failure; returns the earliest failing
   * descriptor in queue order (a failed invalidation, or a wait whose status address is not guest RAM), or -1.
   */
  #settle(): number {
    const sink = this.sink;
    let failedAt = -1;
    if (sink.drainInto) {
      const failures = sink.drainInto(this.#outcome).failures;
      for (let i = 0; i < failures.length; i++) failedAt = this.#earlier(failedAt, this.#originOf(failures[i].seq));
    } else {
      for (const f of sink.drain().failures) failedAt = this.#earlier(failedAt, this.#originOf(f.seq));
    }
    for (let k = 0; k < this.#waits; k++) {
      const index = this.#waitIndex[k];
      if (failedAt >= 0 && this.#after(index, failedAt)) continue;
      try {
        this.#completeWait(this.#waitFlags[k], this.#waitData[k], this.#waitAddress[k]);
      } catch {
        // The status address is not guest RAM: stop there, as with any bad descriptor.
        failedAt = this.#earlier(failedAt, index);
        continue;
      }
      this.#completed++;
    }
    this.#origins = 0;
    this.#waits = 0;
    return failedAt;
  }

  /** The earlier of two descriptor indices in queue order (-1 = none). */
  #earlier(a: number, b: number): number {
    if (b < 0) return a;
    return a < 0 || this.#after(a, b) ? b : a;
  }

  #completeWait(flags: number, data: number, address: number): void {
    if (flags & 1) {
      this.#statusView.setUint32(0, data, true);
      this.memory.write(address, this.#status);
    }
    if (flags & 2) this.hooks.interrupt?.();
  }

  /** Queue the relay requests a descriptor stands for (none for what the host does itself or the VMM handles). */
  #submitRequests(d: VtdDescriptor, index: number): void {
    switch (d.type) {
      case "pasid-iotlb":
        if (d.granularity === "pasid") {
          const r = this.#pasidAll;
          r.domain = d.did;
          r.scope.pasid = d.pasid;
          this.#submit(r, index);
          return;
        } else {
          const r = this.#pasidRange;
          r.domain = d.did;
          r.scope.pasid = d.pasid;
          span(d.page, d.am, r.scope);
          r.leaf = d.ih;
          this.#submit(r, index);
          return;
        }
      case "iotlb":
        // Second-stage (RID) translations; a global one reaches every domain the VMM knows.
        if (d.granularity === "page") {
          const r = this.#ridRange;
          r.domain = d.did;
          span(d.page, d.am, r.scope);
          r.leaf = d.ih;
          this.#submit(r, index);
          return;
        }
        if (d.granularity === "domain") {
          this.#ridAll.domain = d.did;
          this.#submit(this.#ridAll, index);
          return;
        }
        for (const domain of this.hooks.domains?.() ?? []) {
          this.#ridAll.domain = domain;
          this.#submit(this.#ridAll, index);
        }
        return;
      default:
        // device-TLB (the kernel does ATS invalidation on VT-d), interrupt entry cache (the VMM's interrupt
        // remapping), waits and configuration changes are handled around the relay.
        return;
    }
  }
}

const HOST_FAILURE = "host invalidation failed or wait status not writable";

/** 2^am pages at `page`, aligned down to the span (a misaligned address widens, never narrows), into `out`. */
function span(page: number, am: number, out: { firstPage: number; pages: number }): void {
  const pages = 2 ** Math.min(am, 52);
  const firstPage = Math.floor(page / pages) * pages;
  out.firstPage = firstPage;
  out.pages = Math.min(pages, PAGE_SPACE - firstPage);
}
