/**
 * The host's fault and event queues as async iterables: `for await` over a vEVENTQ or a fault queue, with a bounded
 * read buffer, lost-record accounting and clean shutdown. Waiting uses the shim's nonblocking poll (a worker thread),
 * so the event loop stays live; each wait is bounded (`pollMs`), so an abort is noticed within that time and the
 * fd is never closed under a pending poll.
 *
 * Lost events are reported as what they are — a `lost` item with the count the sequence numbers prove, and whether
 * the kernel's LOST_EVENTS flag said so — never folded into a real event.
 *
 * @example
 * ```ts ignore
 * const ac = new AbortController();
 * let dropped = 0;
 * for await (const item of veventStream(queue, { payloadSize: 4, signal: ac.signal })) {
 *   if (item.type === "lost") dropped += item.count; // proven missing by the sequence numbers
 *   else deliver(item.sequence, item.payload); // the VMM's own event injection
 * }

 * ```
 *
 * @module
 */
import { Errno } from "../uapi/errno.ts";
import { KernelError } from "./errors.ts";
import type { FaultQueue, Veventq } from "./iommufd.ts";
import type { IommuHwptPgfault } from "../uapi/mod.ts";

/** What a vEVENTQ stream yields. */
export type VeventItem =
  | { readonly type: "event"; readonly sequence: number; readonly payload: Uint8Array }
  | {
    readonly type: "lost";
    /** The LOST_EVENTS header's sequence (the last one dropped), or the first seen after an unflagged gap. */
    readonly sequence: number;
    /** Events the sequence numbers prove missing. */
    readonly count: number;
    /** Whether the kernel's LOST_EVENTS flag was seen. */
    readonly flagged: boolean;
  };

/** Counters of a stream, readable while it runs. */
export interface StreamStats {
  /** Events yielded to the consumer (`lost` items not counted). */
  delivered: number;
  /** Events proven missing by sequence gaps. */
  lost: number;
  /** LOST_EVENTS headers seen. */
  lostFlags: number;
  /** `read(2)` calls on the queue's fd. */
  reads: number;
}

/** Sequence numbers wrap at INT_MAX (the kernel counts in a signed int). */
const SEQ_SPAN = 2 ** 31;

const { EAGAIN } = Errno.values;

async function readable(
  q: { iommufd: { shim: { pollAsync(fd: number, e: number, t: number): Promise<number> } }; fd: number },
  ms: number,
): Promise<boolean> {
  const r = await q.iommufd.shim.pollAsync(q.fd, 1, ms);
  if (r === -4) return false; // EINTR: look again
  if (r < 0) throw new KernelError(r, "poll queue", "poll");
  return (r & 1) !== 0;
}

/**
 * Events of `queue` (`payloadSize`: the type's payload, e.g. 4 for the selftest, 32 for SMMUv3). `bufferBytes`
 * bounds one read (default 64 KiB). Ends when `signal` aborts or the queue's fd reports an error/hang-up.
 */
export async function* veventStream(
  queue: Veventq,
  opts: { payloadSize: number; bufferBytes?: number; signal?: AbortSignal; pollMs?: number; stats?: StreamStats },
): AsyncGenerator<VeventItem> {
  const buffer = new Uint8Array(opts.bufferBytes ?? 1 << 16);
  const stats = opts.stats ?? { delivered: 0, lost: 0, lostFlags: 0, reads: 0 };
  let expected: number | undefined;
  while (!opts.signal?.aborted) {
    if (!(await readable(queue, opts.pollMs ?? 100))) continue;
    if (opts.signal?.aborted) return;
    let records;
    try {
      records = queue.readEvents(buffer, opts.payloadSize);
    } catch (e) {
      if (e instanceof KernelError && e.errno === EAGAIN) continue;
      throw e;
    }
    stats.reads++;
    for (const r of records) {
      if (r.lostEvents) {
        // Every dropped event took a sequence number; the LOST_EVENTS header carries the last one dropped.
        stats.lostFlags++;
        const count = expected === undefined ? 1 : (r.sequence - expected + 1 + SEQ_SPAN) % SEQ_SPAN;
        stats.lost += count;
        expected = (r.sequence + 1) % SEQ_SPAN;
        yield { type: "lost", sequence: r.sequence, count, flagged: true };
        continue;
      }
      // A gap without the flag (the reader fell behind a wrap, or a header was merged): still counted, unflagged.
      const gap = expected === undefined ? 0 : (r.sequence - expected + SEQ_SPAN) % SEQ_SPAN;
      if (gap > 0) {
        stats.lost += gap;
        yield { type: "lost", sequence: r.sequence, count: gap, flagged: false };
      }
      expected = (r.sequence + 1) % SEQ_SPAN;
      stats.delivered++;
      yield { type: "event", sequence: r.sequence, payload: r.payload };
    }
  }
}

/** Fault records of `queue`, one read per record (the kernel keeps undelivered faults; none are dropped). */
export async function* faultStream(
  queue: FaultQueue,
  opts: { signal?: AbortSignal; pollMs?: number; stats?: StreamStats } = {},
): AsyncGenerator<ReturnType<typeof IommuHwptPgfault.decode>> {
  const stats = opts.stats ?? { delivered: 0, lost: 0, lostFlags: 0, reads: 0 };
  while (!opts.signal?.aborted) {
    if (!(await readable(queue, opts.pollMs ?? 100))) continue;
    if (opts.signal?.aborted) return;
    let f;
    try {
      f = queue.readFault();
    } catch (e) {
      if (e instanceof KernelError && e.errno === EAGAIN) continue;
      throw e;
    }
    stats.reads++;
    stats.delivered++;
    yield f;
  }
}
