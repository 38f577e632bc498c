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
import { PAGE_SPACE } from "../../request/request.ts";
import { type RelaySink, RelayWindow, type WaitCompleter } from "../window.ts";
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

export type { RelaySink } from "../window.ts";

/** Guest-visible side effects the VMM carries out. Descriptors handed to a hook are reused once it returns: copy to keep. */
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

  readonly #window: RelayWindow;

  constructor(readonly memory: GuestMemory, readonly sink: RelaySink, readonly hooks: VtdQueueHooks = {}) {
    const completer: WaitCompleter = {
      completeWait: (flags, data, address) => this.#completeWait(flags, data, address),
    };
    this.#window = new RelayWindow(sink, completer);
  }

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
    const n = this.entries;
    const window = this.#window;
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
        const failedAt = window.settle();
        if (failedAt >= 0) return this.#stop(headIndex, failedAt, HOST_FAILURE, processed);
        const reason = e instanceof VtdDescriptorError ? e.message : `descriptor unreadable: ${(e as Error).message}`;
        return this.#stop(headIndex, position, reason, processed);
      }
      this.#submitRequests(d, position);
      if (d.type === "wait") {
        window.wait(position, (d.statusWrite ? 1 : 0) | (d.interrupt ? 2 : 0), d.statusData, d.statusAddress);
        if (d.fence) {
          const failedAt = window.settle();
          if (failedAt >= 0) return this.#stop(headIndex, failedAt, HOST_FAILURE, processed);
        }
      } else if (d.type === "pasid-cache" || d.type === "context-cache") {
        // A configuration change: what was queued before it goes out first, then the VMM re-reads the tables.
        const failedAt = window.settle();
        if (failedAt >= 0) return this.#stop(headIndex, failedAt, HOST_FAILURE, processed);
        this.hooks.configChanged?.(d);
      } else if (d.type === "page-group-response") {
        this.hooks.pageGroupResponse?.(d);
      }
      processed++;
    }
    const failedAt = window.settle();
    if (failedAt >= 0) return this.#stop(headIndex, failedAt, HOST_FAILURE, failedAt);
    this.iqh = this.iqt;
    const result = this.#result;
    result.processed = processed;
    result.waitsCompleted = window.completed;
    return result;
  }

  /** Stop with IQE at queue position `position` of this doorbell. */
  #stop(headIndex: number, position: number, reason: string, processed: number): DoorbellResult {
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
      case "pasid-iotlb":
        if (d.granularity === "pasid") {
          const r = this.#pasidAll;
          r.domain = d.did;
          r.scope.pasid = d.pasid;
          this.#window.submit(r, position);
          return;
        } else {
          const r = this.#pasidRange;
          r.domain = d.did;
          r.scope.pasid = d.pasid;
          span(d.page, d.am, r.scope);
          r.leaf = d.ih;
          this.#window.submit(r, position);
          return;
        }
      case "iotlb":
        // Second-stage (RID) translations; a global one reaches every domain the VMM knows.
        if (d.granularity === "page") {
          const r = this.#ridRange;
          r.domain = d.did;
          span(d.page, d.am, r.scope);
          r.leaf = d.ih;
          this.#window.submit(r, position);
          return;
        }
        if (d.granularity === "domain") {
          this.#ridAll.domain = d.did;
          this.#window.submit(this.#ridAll, position);
          return;
        }
        for (const domain of this.hooks.domains?.() ?? []) {
          this.#ridAll.domain = domain;
          this.#window.submit(this.#ridAll, position);
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
