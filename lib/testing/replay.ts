/**
 * Deterministic replay of a workload through a relay queue, with a modelled in-flight window: the relay is busy
 * for `ioctlNs` per host ioctl; a doorbell that arrives while it is idle is relayed inline (submit + drain at
 * once), one that arrives while it is busy accumulates and goes out with the next drain, when the busy period
 * ends. There is no real concurrency (a 2-core machine cannot show it); the clock is virtual.
 *
 * Every drain is checked against the in-process host when one is given: every page of every invalidation submitted
 * before the drain must be covered on every target it reached. Any miss throws.
 *
 * @module
 */
import type { RelayQueue } from "../relay/queue.ts";
import { type InvalidateRequest, PAGE_SPACE } from "../request/request.ts";
import { PendingSet } from "../request/pending.ts";
import type { ModelHost } from "../host/model.ts";
import type { Workload } from "./workloads.ts";

/** What a replay produced. */
export interface ReplayResult {
  /** The workload's name. */
  readonly workload: string;
  /** Guest descriptors replayed. */
  readonly descriptors: number;
  /** Doorbells (queue-tail writes) replayed. */
  readonly doorbells: number;
  /** Queue drains. */
  readonly drains: number;
  /** Host invalidation calls. */
  readonly ioctls: number;
  /** Host entries sent. */
  readonly entries: number;
  /** Guest requests reported failed. */
  readonly failures: number;
  /** Host ioctls and entries per 1,000 guest descriptors. */
  readonly ioctlsPer1000: number;
  /** Host entries per 1,000 guest descriptors. */
  readonly entriesPer1000: number;
  /** Drains whose coverage was checked against the in-process host. */
  readonly checkedDrains: number;
  /** Pages the host invalidated beyond what the guest asked for (range invalidations), summed over drains. */
  readonly overInvalidatedPages: number;
  /** Whole-space flushes of a target none of whose guest requests in that drain asked for the whole space. */
  readonly escalations: number;
}

/** Where a request's invalidation must show up: (target, asid) and the range (`pages` Infinity: the whole space). */
export type CoverageProbe = (
  request: InvalidateRequest,
) => { targetId: number; asid?: number; firstPage: number; pages: number }[];

/** What one drain did to the in-process host, against what the guest asked for. */
export interface DrainCoverage {
  /** Requested pages the host did not invalidate (first and last page of each range are probed). */
  readonly under: number;
  /** Pages invalidated beyond the ranges asked for. */
  readonly overPages: number;
  /** Whole-space flushes none of the drain's requests for that target asked for. */
  readonly escalations: number;
}

/**
 * Compare what `host` invalidated since its last reset with what `requests` asked for, then reset it. A target's
 * over-invalidation is its invalidated pages minus the union of the pages requested of it (the host covers that union
 * whenever nothing was under-invalidated); a whole-space flush nobody asked for is an escalation.
 */
export function checkDrain(
  host: ModelHost,
  probe: CoverageProbe,
  requests: readonly InvalidateRequest[],
): DrainCoverage {
  let under = 0, overPages = 0, escalations = 0;
  const asked = new Map<number, PendingSet>();
  for (const r of requests) {
    for (const { targetId, asid, firstPage, pages } of probe(r)) {
      let set = asked.get(targetId);
      if (!set) asked.set(targetId, set = new PendingSet(UNLIMITED));
      if (pages === Infinity) set.addAll(0);
      else set.addRange(firstPage, pages, false, 0);
      const probes = pages === Infinity ? [0, PAGE_SPACE - 1] : [firstPage, firstPage + pages - 1];
      for (const page of probes) if (!host.covered(targetId, page, asid)) under++;
    }
  }
  for (const [targetId, set] of asked) {
    const done = host.coverage(targetId);
    if (done.wholeSpace && !set.all) escalations++;
    else if (!done.wholeSpace) overPages += Math.max(0, done.pages - set.pages);
  }
  host.resetCoverage();
  return { under, overPages, escalations };
}

const UNLIMITED = { maxRanges: Number.MAX_SAFE_INTEGER, maxPages: Number.MAX_SAFE_INTEGER };

/** Replay `workload` through `queue`. */
export function replay(
  workload: Workload,
  queue: RelayQueue,
  opts: { ioctlNs: number; host?: ModelHost; probe?: CoverageProbe },
): ReplayResult {
  let busyUntil = 0;
  let drains = 0, ioctls = 0, entries = 0, failures = 0, checked = 0, overPages = 0, escalations = 0;
  let pending: InvalidateRequest[] = [];
  const drain = (now: number) => {
    const report = queue.drain();
    drains++;
    ioctls += report.ioctls;
    entries += report.entries;
    failures += report.failures.length;
    busyUntil = now + report.ioctls * opts.ioctlNs;
    if (opts.host && opts.probe) {
      const c = checkDrain(opts.host, opts.probe, pending);
      if (c.under > 0) {
        throw new Error(`${workload.name}: under-invalidation: ${c.under} probed pages missed at drain ${drains}`);
      }
      overPages += c.overPages;
      escalations += c.escalations;
      checked++;
    }
    pending = [];
  };
  for (const bell of workload.doorbells) {
    if (busyUntil > 0 && bell.at >= busyUntil && queue.pending) drain(busyUntil); // the in-flight ioctl ended
    for (const r of bell.requests) {
      queue.submit(r);
      if (r.op === "invalidate") pending.push(r);
    }
    if (bell.at >= busyUntil) drain(bell.at); // idle: relay inline
  }
  if (queue.pending) drain(busyUntil);
  const per1000 = (n: number) => (n * 1000) / workload.descriptors;
  return {
    workload: workload.name,
    descriptors: workload.descriptors,
    doorbells: workload.doorbells.length,
    drains,
    ioctls,
    entries,
    failures,
    ioctlsPer1000: per1000(ioctls),
    entriesPer1000: per1000(entries),
    checkedDrains: checked,
    overInvalidatedPages: overPages,
    escalations,
  };
}
