/**
 * What one drain of a relay queue did, in a reusable form for hot paths: {@linkcode RelayQueue.drainInto} fills the
 * same {@linkcode DrainOutcome} drain after drain, so a VMM's doorbell allocates nothing once its buffers have grown.
 * {@linkcode RelayQueue.drain} returns the plain, immutable {@linkcode DrainReport} instead.
 *
 * @module
 */

/** A guest request the host failed to carry out. */
export interface RequestFailure {
  /** The guest request's sequence number. */
  readonly seq: number;
  /** errno (positive) and its name. */
  readonly errno: number;
  /** The errno's symbolic name, e.g. `EINVAL`. */
  readonly errnoName: string;
  /** The host target and the failing entry's index in the batch sent to it. */
  readonly targetId: number;
  /** Index of the failing entry in that batch (the kernel's handled count). */
  readonly entryIndex: number;
  /** The kernel's handled count could not be trusted (the whole batch was resent and failed again). */
  readonly positionUnknown: boolean;
  /**
   * Resending could succeed: the error was not a validation error (EINVAL/EOPNOTSUPP say the entry itself is
   * wrong). Invalidations are idempotent, so a resend never hurts.
   */
  readonly retrySafe: boolean;
}

/** The outcome of a wait. */
export interface WaitOutcome {
  /** The wait's sequence number, as `submit` returned it. */
  readonly seq: number;
  /** Every invalidation queued before this wait was carried out. */
  readonly ok: boolean;
  /** The earliest failed request before the wait, if any. */
  readonly firstFailed?: number;
}

/** What one drain did. */
export interface DrainReport {
  /** Host ioctls made (retries included). */
  readonly ioctls: number;
  /** Host entries sent (first attempts). */
  readonly entries: number;
  /** Guest invalidations covered by this drain. */
  readonly invalidations: number;
  /**
   * Of those, invalidations that reached no host target (see `QueueTelemetry.unrouted` for the reasons): they were
   * counted, handed to the VMM's emulated-domain hook, or (strict routing) failed — never silently dropped.
   */
  readonly unrouted: number;
  /** Requests that failed, earliest first. */
  readonly failures: readonly RequestFailure[];
  /** Every wait submitted since the previous drain, in order. */
  readonly waits: readonly WaitOutcome[];
}

/**
 * A drain's outcome, refilled in place by each {@linkcode RelayQueue.drainInto}: valid until the next drain into it.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { DrainOutcome } from "./outcome.ts";
 * import { RelayQueue } from "./queue.ts";
 * import { ModelHost } from "../host/model.ts";
 * const host = new ModelHost();
 * const q = new RelayQueue(host);
 * q.bind(1, 5, { targetId: host.createTarget("vtd-s1"), format: "vtd-s1" });
 * const outcome = new DrainOutcome();
 * q.submit({ op: "invalidate", domain: 1, scope: { kind: "pasid", pasid: 5 } });
 * const wait = q.submit({ op: "sync" });
 * q.drainInto(outcome);
 * assert.equal(outcome.ioctls, 1);
 * assert.equal(outcome.waitCount, 1);
 * assert.equal(outcome.waitSeq(0), wait);
 * assert.ok(outcome.waitOk(0));
 * ```
 */
export class DrainOutcome {
  /** Host ioctls made (retries included). */
  ioctls = 0;
  /** Host entries sent (first attempts). */
  entries = 0;
  /** Guest invalidations covered. */
  invalidations = 0;
  /** Of those, invalidations that reached no host target. */
  unrouted = 0;
  /** Requests that failed, earliest first, each once (an empty array when none failed). */
  readonly failures: RequestFailure[] = [];
  /** Waits submitted since the previous drain. */
  waitCount = 0;
  #seq = new Float64Array(16);
  /** The earliest failed request before each wait, or 0 (sequence numbers start at 1). */
  #firstFailed = new Float64Array(16);

  /** Start a new drain's outcome. */
  reset(): void {
    this.ioctls =
      this.entries =
      this.invalidations =
      this.unrouted =
      this.waitCount =
        0;
    if (this.failures.length) this.failures.length = 0;
  }

  /** Append a wait (the queue's job). */
  addWait(seq: number, firstFailed: number): void {
    if (this.waitCount === this.#seq.length) {
      const seqs = new Float64Array(this.#seq.length * 2), failed = new Float64Array(this.#seq.length * 2);
      seqs.set(this.#seq);
      failed.set(this.#firstFailed);
      this.#seq = seqs;
      this.#firstFailed = failed;
    }
    this.#seq[this.waitCount] = seq;
    this.#firstFailed[this.waitCount++] = firstFailed;
  }

  /** Wait `i`'s sequence number. */
  waitSeq(i: number): number {
    return this.#seq[i];
  }

  /** Whether everything queued before wait `i` was carried out. */
  waitOk(i: number): boolean {
    return this.#firstFailed[i] === 0;
  }

  /** The earliest failed request before wait `i`, if any. */
  waitFirstFailed(i: number): number | undefined {
    return this.#firstFailed[i] === 0 ? undefined : this.#firstFailed[i];
  }

  /** A plain, immutable copy (allocates). */
  toReport(): DrainReport {
    const waits: WaitOutcome[] = [];
    for (let i = 0; i < this.waitCount; i++) {
      const seq = this.#seq[i], first = this.#firstFailed[i];
      waits.push(first === 0 ? { seq, ok: true } : { seq, ok: false, firstFailed: first });
    }
    return {
      ioctls: this.ioctls,
      entries: this.entries,
      invalidations: this.invalidations,
      unrouted: this.unrouted,
      failures: [...this.failures],
      waits,
    };
  }
}
