/**
 * One doorbell's relay window, shared by the queue front ends (VT-d invalidation queue, SMMUv3 command queue): the
 * requests queued since the last drain with the queue position each came from, and the waits (VT-d wait descriptors,
 * CMD_SYNCs) with what completing them writes. {@linkcode RelayWindow.settle} drains the sink once, finds the earliest
 * position whose host invalidation failed, and completes, in order, the waits before it.
 *
 * Positions are queue order within one doorbell (0 at the head); every store is reused, so after warm-up a
 * doorbell allocates nothing.
 *
 * @module
 */
import { DrainOutcome, type DrainReport } from "../relay/outcome.ts";
import type { Request } from "../request/request.ts";

/**
 * Where requests go: a relay queue, or a plugin in front of one. Request objects handed to `submit` are reused by
 * the front end once it returns: a sink that keeps one must copy it.
 */
export interface RelaySink {
  /**
   * Queue a request; returns its sequence number (ascending). A plugin returns undefined for binds and unbinds, which
   * a front end never sends here.
   */
  submit(request: Request): number | undefined;
  /** Send everything queued; report waits and failures since the last drain. */
  drain(): DrainReport;
  /** The allocation-free drain (optional; a front end falls back to `drain`). */
  drainInto?(out: DrainOutcome): DrainOutcome;
}

/** Carries out a wait's guest-visible completion; throws when its status address is not guest RAM. */
export interface WaitCompleter {
  /** Complete one wait as its descriptor asks: write `data` to guest-physical `address` and/or raise the interrupt, per the vendor's `flags`. */
  completeWait(flags: number, data: number, address: number): void;
}

/**
 * The window.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { RelayWindow } from "./window.ts";
 * import { RelayQueue } from "../relay/queue.ts";
 * import { ModelHost } from "../host/model.ts";
 * const host = new ModelHost();
 * const relay = new RelayQueue(host);
 * relay.bind(1, 5, { targetId: host.createTarget("vtd-s1"), format: "vtd-s1" });
 * const written: number[] = [];
 * const window = new RelayWindow(relay, { completeWait: (_flags, data) => void written.push(data) });
 * window.submit({ op: "invalidate", domain: 1, scope: { kind: "pasid", pasid: 5 } }, 0);
 * window.wait(1, 1, 0xcafe, 0x8000);
 * assert.equal(window.settle(), -1);
 * assert.equal(window.completed, 1);
 * assert.deepEqual(written, [0xcafe]);
 * ```
 */
export class RelayWindow {
  /** Waits completed since {@linkcode RelayWindow.begin}. */
  completed = 0;
  readonly #outcome = new DrainOutcome();
  readonly #seqs: number[] = [];
  readonly #positions: number[] = [];
  #requests = 0;
  readonly #waitPositions: number[] = [];
  readonly #waitFlags: number[] = [];
  readonly #waitData: number[] = [];
  readonly #waitAddresses: number[] = [];
  #waits = 0;
  readonly #sync = { op: "sync" as const };

  /** A window over `sink`; waits that complete are carried out through `completer`. */
  constructor(readonly sink: RelaySink, readonly completer: WaitCompleter) {}

  /** A new doorbell. */
  begin(): void {
    this.completed = 0;
  }

  /** Queue `request`, which came from queue position `position`. Whatever the sink throws is thrown here. */
  submit(request: Request, position: number): void {
    const seq = this.sink.submit(request);
    if (seq !== undefined) this.track(seq, position);
  }

  /**
   * Record that the sink's request `seq` (submitted some other way, e.g. one of a router's own methods) came from
   * `position`. Sequence numbers must ascend, as the sink's own do.
   */
  track(seq: number, position: number): void {
    this.#seqs[this.#requests] = seq;
    this.#positions[this.#requests++] = position;
  }

  /** Waits queued since the last settle. */
  get pendingWaits(): number {
    return this.#waits;
  }

  /** Queue a wait at `position`; settle completes it with (flags, data, address) unless something before it failed. */
  wait(position: number, flags: number, data: number, address: number): void {
    this.sink.submit(this.#sync);
    const k = this.#waits++;
    this.#waitPositions[k] = position;
    this.#waitFlags[k] = flags;
    this.#waitData[k] = data;
    this.#waitAddresses[k] = address;
  }

  /**
   * Drain, then complete the waits before the earliest failure; returns the earliest failing position (a failed
   * invalidation, or a wait whose completion could not be written), or -1. `stopAt` (default -1: none) is a position
   * that failed before reaching the sink (a descriptor the front end refused, a sink that threw): no wait after it
   * completes. A sink whose drain throws fails every request of the window (the host may not have seen them). Either
   * way the window is empty afterwards, so a stale wait can never complete at a later doorbell.
   */
  settle(stopAt = -1): number {
    const sink = this.sink;
    let failedAt = stopAt;
    try {
      if (sink.drainInto) {
        const failures = sink.drainInto(this.#outcome).failures;
        for (let i = 0; i < failures.length; i++) failedAt = earlier(failedAt, this.#positionOf(failures[i].seq));
      } else {
        for (const f of sink.drain().failures) failedAt = earlier(failedAt, this.#positionOf(f.seq));
      }
    } catch {
      for (let i = 0; i < this.#requests; i++) failedAt = earlier(failedAt, this.#positions[i]);
      if (this.#requests === 0 && this.#waits > 0) failedAt = earlier(failedAt, this.#waitPositions[0]);
    }
    for (let k = 0; k < this.#waits; k++) {
      const position = this.#waitPositions[k];
      if (failedAt >= 0 && position > failedAt) continue;
      try {
        this.completer.completeWait(this.#waitFlags[k], this.#waitData[k], this.#waitAddresses[k]);
      } catch {
        // Not guest RAM: the queue stops there, as at any bad descriptor.
        failedAt = earlier(failedAt, position);
        continue;
      }
      this.completed++;
    }
    this.#requests = 0;
    this.#waits = 0;
    return failedAt;
  }

  /** The position a request came from, or -1 (sequence numbers ascend: a binary search). */
  #positionOf(seq: number): number {
    let lo = 0, hi = this.#requests;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.#seqs[mid] < seq) lo = mid + 1;
      else hi = mid;
    }
    return lo < this.#requests && this.#seqs[lo] === seq ? this.#positions[lo] : -1;
  }
}

/** The earlier of two positions (-1 = none). */
function earlier(a: number, b: number): number {
  if (b < 0) return a;
  return a < 0 || b < a ? b : a;
}
