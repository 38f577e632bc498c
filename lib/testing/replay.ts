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
import type { RelayQueue } from "../core/queue.ts";
import type { InvalidateRequest } from "../core/request.ts";
import type { ModelHost } from "../model/host.ts";
import type { Workload } from "./workloads.ts";

/** What a replay produced. */
export interface ReplayResult {
  readonly workload: string;
  readonly descriptors: number;
  readonly doorbells: number;
  readonly drains: number;
  readonly ioctls: number;
  readonly entries: number;
  readonly failures: number;
  /** Host ioctls and entries per 1,000 guest descriptors. */
  readonly ioctlsPer1000: number;
  readonly entriesPer1000: number;
  /** Drains whose coverage was checked against the in-process host. */
  readonly checkedDrains: number;
}

/** Where a request's invalidation must show up: (target, asid) and the pages to probe. */
export type CoverageProbe = (request: InvalidateRequest) => { targetId: number; asid?: number; pages: number[] }[];

/** Replay `workload` through `queue`. */
export function replay(
  workload: Workload,
  queue: RelayQueue,
  opts: { ioctlNs: number; host?: ModelHost; probe?: CoverageProbe },
): ReplayResult {
  let busyUntil = 0;
  let drains = 0, ioctls = 0, entries = 0, failures = 0, checked = 0;
  let pending: InvalidateRequest[] = [];
  const drain = (now: number) => {
    const report = queue.drain();
    drains++;
    ioctls += report.ioctls;
    entries += report.entries;
    failures += report.failures.length;
    busyUntil = now + report.ioctls * opts.ioctlNs;
    if (opts.host && opts.probe) {
      for (const r of pending) {
        for (const { targetId, asid, pages } of opts.probe(r)) {
          for (const page of pages) {
            if (!opts.host.covered(targetId, page, asid)) {
              throw new Error(
                `${workload.name}: under-invalidation: page ${page} of target ${targetId} (${JSON.stringify(r.scope)})`,
              );
            }
          }
        }
      }
      opts.host.resetCoverage();
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
  };
}
