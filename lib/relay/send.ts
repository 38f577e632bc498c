/**
 * Sending one compiled batch to one host target, and attributing what failed to the guest requests merged into
 * the failing entry. EINTR/EAGAIN are retried; when the kernel names the failing entry, the entries after it are
 * resent so nothing else is lost; when its count cannot be trusted (SMMUv3 errors other than validation ones,
 * ENOMEM with nothing handled, a count past the batch) the whole batch is resent once (invalidations are
 * idempotent), and a second failure fails every request of the batch with the position unknown.
 *
 * @module
 */
import type { EntryWriter } from "../compile/entries.ts";
import type { Format } from "../compile/formats.ts";
import { Errno, errnoName } from "../uapi/errno.ts";
import type { Backend, InvalidateStatus } from "../host/backend.ts";
import type { RequestFailure } from "./outcome.ts";

const { EINTR, EAGAIN, ENOMEM, EINVAL, EOPNOTSUPP } = Errno.values;

/** How the sender retries. */
export interface SendPolicy {
  /** Entries per call (the kernel's cap or lower). */
  readonly maxEntriesPerCall: number;
  /** Retries of EINTR/EAGAIN per call. */
  readonly transientRetries: number;
}

/** What the sender counts. */
export interface SendCounters {
  /** Batches sent again after a failure (the entries after the failing one, or the whole batch once when the handled count cannot be trusted). */
  resends: number;
}

/**
 * Send `w`'s entries to `targetId`; returns the calls made and appends failures (unordered, possibly one request
 * more than once) to `failures`. `status` is reused scratch.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { EntryWriter } from "../compile/entries.ts";
 * import { ModelHost } from "../host/model.ts";
 * import { sendBatch } from "./send.ts";
 * const host = new ModelHost();
 * const hwpt = host.createTarget("selftest");
 * const w = new EntryWriter(8);
 * w.append([1]); // one zeroed selftest entry: slot 0
 * const failures: import("./outcome.ts").RequestFailure[] = [];
 * const calls = sendBatch(host, hwpt, "selftest", w, { maxEntriesPerCall: 16, transientRetries: 3 },
 *   { errno: 0, handled: 0 }, failures, { resends: 0 });
 * assert.equal(calls, 1);
 * assert.equal(failures.length, 0);
 * ```
 */
export function sendBatch(
  backend: Backend,
  targetId: number,
  format: Format,
  w: EntryWriter,
  policy: SendPolicy,
  status: InvalidateStatus,
  failures: RequestFailure[],
  counters: SendCounters,
): number {
  let ioctls = 0;
  let from = 0;
  let resentWhole = false;
  while (from < w.count) {
    const count = Math.min(w.count - from, policy.maxEntriesPerCall);
    let tries = 0;
    do {
      status.errno = 0;
      status.handled = 0;
      backend.invalidate(targetId, format, w.tail(from), count, status);
      ioctls++;
    } while ((status.errno === EINTR || status.errno === EAGAIN) && tries++ < policy.transientRetries);
    if (status.errno === 0) {
      from += count;
      continue;
    }
    const validation = status.errno === EINVAL || status.errno === EOPNOTSUPP;
    const unknown = (status.errno === ENOMEM && status.handled === 0) ||
      (format === "smmuv3" && !validation) || status.handled >= count;
    if (unknown && !resentWhole) {
      // The kernel's count cannot be trusted: resend everything of this batch once.
      resentWhole = true;
      counters.resends++;
      continue;
    }
    if (unknown) {
      // Still failing: every request of the unsent part fails, with the position unknown.
      const seen = new Set<number>();
      for (let i = from; i < from + count; i++) {
        for (let k = w.originsFrom(i); k < w.originsTo(i); k++) {
          const seq = w.originAt(k);
          if (seen.has(seq)) continue;
          seen.add(seq);
          failures.push(requestFailure(seq, status.errno, targetId, i, true));
        }
      }
      from += count;
      continue;
    }
    // A known position: the entry at `handled` failed; the ones after it were not attempted — resend them.
    const failing = from + status.handled;
    for (let k = w.originsFrom(failing); k < w.originsTo(failing); k++) {
      failures.push(requestFailure(w.originAt(k), status.errno, targetId, failing, false));
    }
    counters.resends += failing + 1 < w.count ? 1 : 0;
    from = failing + 1;
  }
  return ioctls;
}

/** A failure record (EINVAL/EOPNOTSUPP say the entry itself is wrong, so a resend cannot help). */
export function requestFailure(
  seq: number,
  errno: number,
  targetId: number,
  entryIndex: number,
  positionUnknown: boolean,
): RequestFailure {
  const retrySafe = errno !== EINVAL && errno !== EOPNOTSUPP;
  return { seq, errno, errnoName: errnoName(errno), targetId, entryIndex, positionUnknown, retrySafe };
}
