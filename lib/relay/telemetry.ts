/**
 * A relay queue's counters and its drain-latency histogram.
 *
 * @module
 */

/** Why an invalidation reached no host target. */
export interface UnroutedCounts {
  /**
   * The request's domain has no assigned device: a domain the VMM emulates. Legitimate; handed to
   * {@linkcode QueueOptions.onEmulated} when the VMM gives one.
   */
  emulatedDomain: number;
  /** The domain has assigned devices but nothing is bound at the request's PASID (or RID). */
  noBinding: number;
}

/** Counters, readable at any time. */
export interface QueueTelemetry {
  /** Guest requests submitted (refused ones not counted). */
  requestsIn: number;
  /** Invalidation requests among them. */
  invalidationsIn: number;
  /** Waits (`sync`) among them. */
  waitsIn: number;
  /** Drains that ran, whatever triggered them. */
  drains: number;
  /** Batches sent to the backend (one `IOMMU_HWPT_INVALIDATE` each on the kernel). */
  ioctls: number;
  /** Host entries in those batches. */
  entriesOut: number;
  /** Guest requests reported failed. */
  failures: number;
  /** Batches sent again after a failure: the entries after the failing one, or the whole batch when the kernel's count could not be trusted. */
  resends: number;
  /** Drains a size or age threshold triggered. */
  thresholdDrains: number;
  /** Barriers (binding changes, configuration commands) that sent what was pending. */
  barriers: number;
  /** Batches sent a second time for a host erratum (`RelayQueue.repeatInvalidations`). */
  errataRepeats: number;
  /** Invalidations that reached no host target, by reason: nothing the guest asked for vanishes uncounted. */
  readonly unrouted: UnroutedCounts;
  /**
   * Drain latency histogram over the timed drains (one in `latencySampling`): bucket i counts drains that took
   * < 2^i µs (last bucket: the rest).
   */
  readonly latencyUs: number[];
}

/**
 * Fresh counters.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { newQueueTelemetry } from "./telemetry.ts";
 * const t = newQueueTelemetry();
 * assert.equal(t.unrouted.noBinding, 0);
 * assert.equal(t.latencyUs.length, 24);
 * ```
 */
export function newQueueTelemetry(): QueueTelemetry {
  return {
    requestsIn: 0,
    invalidationsIn: 0,
    waitsIn: 0,
    drains: 0,
    ioctls: 0,
    entriesOut: 0,
    failures: 0,
    resends: 0,
    thresholdDrains: 0,
    barriers: 0,
    errataRepeats: 0,
    unrouted: { emulatedDomain: 0, noBinding: 0 },
    latencyUs: new Array(24).fill(0),
  };
}

/** The latency histogram bucket of a drain that started at `start` (performance.now()): < 2^i µs. */
export function latencyBucket(start: number): number {
  return Math.max(0, Math.ceil(Math.log2((performance.now() - start) * 1000 + 1))) | 0;
}
