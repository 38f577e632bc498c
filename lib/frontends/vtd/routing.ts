/**
 * Per-domain sinks for one guest VT-d unit, wired the way a VMM wires it: the domains of assigned devices are
 * served by those devices' sinks (their plugins, or a relay queue), and every other domain — the devices the VMM
 * emulates itself — by the VMM's {@linkcode EmulatedDomains} hook. A request for a domain no sink serves goes to that
 * hook and is counted: it never throws for being foreign, and never vanishes.
 *
 * The router is itself a {@linkcode RelaySink}, so the invalidation queue model drives it unchanged: it numbers the
 * requests in one sequence of its own, drains every sink it used, and maps each sink's failures back to its own
 * numbers. Sinks may share one relay queue (plugins of one `RelayHost` do): a failure is then found under whichever
 * sink submitted that request, whichever sink's drain reported it. Sinks with sequence spaces of their own could in
 * principle report a number another sink also used; the router then fails both requests — a spurious guest error,
 * never a lost one.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { VtdDomainRouter } from "./routing.ts";
 * import { RelayQueue } from "../../relay/queue.ts";
 * import { ModelHost } from "../../host/model.ts";
 * const host = new ModelHost();
 * const relay = new RelayQueue(host);
 * const nvme = host.createTarget("vtd-s1");
 * relay.bind(3, "rid", { targetId: nvme, format: "vtd-s1" });
 * const emulated: number[] = [];
 * const router = new VtdDomainRouter({ invalidate: (r) => void emulated.push(r.domain), invalidateEveryDomain() {} });
 * router.assign(3, relay);
 * router.submit({ op: "invalidate", domain: 3, scope: { kind: "range", firstPage: 0xfffdf, pages: 1 }, noPasid: true });
 * router.submit({ op: "invalidate", domain: 5, scope: { kind: "all" }, noPasid: true }); // an emulated device's domain
 * assert.equal(router.drain().failures.length, 0);
 * assert.equal(host.covered(nvme, 0xfffdf), true);
 * assert.deepEqual(emulated, [5]);
 * assert.equal(router.telemetry.emulated, 1);
 * ```
 *
 * @module
 */
import { Errno } from "../../uapi/errno.ts";
import { DrainOutcome, type DrainReport, type RequestFailure } from "../../relay/outcome.ts";
import type { InvalidateRequest, Request } from "../../request/request.ts";
import type { RelaySink } from "../window.ts";

/** A VT-d global invalidation (IOTLB or PASID-cache, global granularity): every domain of the unit. */
export interface EveryDomainInvalidation {
  /** Discriminant: reaches every domain of the unit, assigned or emulated. */
  readonly op: "invalidate-every-domain";
  /** Only the no-PASID translations (a global IOTLB invalidation); false: every PASID too. */
  readonly noPasid: boolean;
}

/**
 * The VMM's own domains: invalidations for devices the VMM emulates (their IOTLB models, or nothing to do). Called
 * synchronously at the descriptor; the request objects are reused once it returns. Throwing fails the request: the
 * guest sees the architected queue error at that descriptor.
 */
export interface EmulatedDomains {
  /** An invalidation of one domain no assigned device serves. */
  invalidate(request: InvalidateRequest): void;
  /** A global invalidation: every domain the VMM emulates (the assigned ones get theirs through their sinks). */
  invalidateEveryDomain(request: EveryDomainInvalidation): void;
}

/** What the router did, by where it went. Every invalidation submitted is counted in exactly one of these. */
export interface VtdRouterTelemetry {
  /** Invalidations handed to an assigned domain's sink. */
  assigned: number;
  /** Invalidations handed to the emulated-domains hook (one per global invalidation). */
  emulated: number;
  /** Invalidations a sink or the hook threw for (they fail, so the guest sees an error). */
  refused: number;
}

/** One sink's requests since its last drain: its sequence numbers and ours, both ascending. */
interface SinkRecord {
  readonly sink: RelaySink;
  readonly outcome: DrainOutcome;
  readonly theirs: number[];
  readonly ours: number[];
  count: number;
}

const { EIO } = Errno.values;

/** Routes one VT-d unit's requests to per-domain sinks and the emulated-domains hook. */
export class VtdDomainRouter implements RelaySink {
  /** Counters, readable at any time. */
  readonly telemetry: VtdRouterTelemetry = { assigned: 0, emulated: 0, refused: 0 };
  readonly #byDomain = new Map<number, SinkRecord>();
  /** Distinct sinks, in assignment order. */
  readonly #records: SinkRecord[] = [];
  /** Assigned domains (reused: rebuilt on assign/release). */
  readonly #domains: number[] = [];
  /** Requests the hook failed since the last drain (our sequence numbers). */
  readonly #hookFailed: number[] = [];
  readonly #outcome = new DrainOutcome();
  /** Waits since the last drain (our sequence numbers). */
  readonly #waitSeqs: number[] = [];
  #waits = 0;
  readonly #every = { op: "invalidate-every-domain" as const, noPasid: true };
  #seq = 0;

  /** A router with no domain assigned yet; requests for unassigned domains go to `emulated`. */
  constructor(readonly emulated: EmulatedDomains) {}

  /** Serve guest domain `did` with `sink` (an assigned device's plugin, or a relay queue). Replaces an earlier sink. */
  assign(did: number, sink: RelaySink): void {
    let record = this.#records.find((r) => r.sink === sink);
    if (!record) {
      this.#records.push(record = { sink, outcome: new DrainOutcome(), theirs: [], ours: [], count: 0 });
    }
    this.#byDomain.set(did, record);
    this.#rebuild();
  }

  /** Domain `did` is no longer an assigned device's: its requests go to the emulated-domains hook again. */
  release(did: number): void {
    this.#byDomain.delete(did);
    this.#rebuild();
  }

  #rebuild(): void {
    this.#domains.length = 0;
    for (const did of this.#byDomain.keys()) this.#domains.push(did);
  }

  /** The sink serving `did`, or undefined when the VMM emulates it. */
  sinkOf(did: number): RelaySink | undefined {
    return this.#byDomain.get(did)?.sink;
  }

  /** The domains assigned devices serve (do not keep the array: it changes with assign/release). */
  domains(): readonly number[] {
    return this.#domains;
  }

  /** Route a request: invalidations by domain; waits are the router's own (it drains every sink it used). */
  submit(request: Request): number {
    const seq = ++this.#seq;
    if (request.op === "sync") {
      this.#waitSeqs[this.#waits++] = seq;
      return seq;
    }
    const record = this.#byDomain.get(request.domain);
    if (record) {
      let theirs: number | undefined;
      try {
        theirs = record.sink.submit(request) ?? -1;
      } catch (e) {
        this.telemetry.refused++;
        throw e;
      }
      if (request.op === "invalidate") this.telemetry.assigned++;
      record.theirs[record.count] = theirs;
      record.ours[record.count++] = seq;
      return seq;
    }
    if (request.op !== "invalidate") {
      throw new TypeError(`${request.op} for domain ${request.domain}: no assigned device serves it`);
    }
    this.#toHook(() => this.emulated.invalidate(request), seq);
    return seq;
  }

  /** A global invalidation: the emulated domains' part (the queue model sends each assigned domain its own). */
  submitEveryDomain(noPasid: boolean): number {
    const seq = ++this.#seq;
    this.#every.noPasid = noPasid;
    this.#toHook(() => this.emulated.invalidateEveryDomain(this.#every), seq);
    return seq;
  }

  #toHook(call: () => void, seq: number): void {
    this.telemetry.emulated++;
    try {
      call();
    } catch (e) {
      this.telemetry.refused++;
      this.#hookFailed.push(seq);
      throw e;
    }
  }

  /** Drain every sink and merge their reports, in sequence numbers of this router. */
  drain(): DrainReport {
    return this.drainInto(this.#outcome).toReport();
  }

  /** Drain every sink used since the last drain; failures carry the router's sequence numbers. */
  drainInto(out: DrainOutcome): DrainOutcome {
    out.reset();
    const records = this.#records;
    for (let r = 0; r < records.length; r++) {
      const record = records[r];
      if (record.count === 0) continue;
      let failures: readonly RequestFailure[];
      try {
        failures = record.sink.drainInto
          ? record.sink.drainInto(record.outcome).failures
          : record.sink.drain().failures;
      } catch {
        // The drain itself failed: nothing of this sink's can be trusted to have reached the host.
        for (let i = 0; i < record.count; i++) out.failures.push(hostFailure(record.ours[i]));
        continue;
      }
      for (let i = 0; i < failures.length; i++) this.#attribute(failures[i], out);
    }
    for (let i = 0; i < this.#hookFailed.length; i++) out.failures.push(hostFailure(this.#hookFailed[i]));
    this.#hookFailed.length = 0;
    for (let r = 0; r < records.length; r++) records[r].count = 0;
    if (out.failures.length > 1) out.failures.sort((a, b) => a.seq - b.seq);
    const first = out.failures.length ? out.failures[0].seq : 0;
    for (let i = 0; i < this.#waits; i++) {
      out.addWait(this.#waitSeqs[i], first && first < this.#waitSeqs[i] ? first : 0);
    }
    this.#waits = 0;
    return out;
  }

  /** A sink's failure under every record that submitted that sequence number (shared queues report each other's). */
  #attribute(f: RequestFailure, out: DrainOutcome): void {
    const records = this.#records;
    for (let r = 0; r < records.length; r++) {
      const record = records[r];
      const i = indexOf(record.theirs, record.count, f.seq);
      if (i >= 0) out.failures.push({ ...f, seq: record.ours[i] });
    }
  }
}

function hostFailure(seq: number): RequestFailure {
  return { seq, errno: EIO, errnoName: "EIO", targetId: -1, entryIndex: -1, positionUnknown: true, retrySafe: true };
}

/** Index of `seq` in the ascending first `count` entries of `seqs`, or -1. */
function indexOf(seqs: readonly number[], count: number, seq: number): number {
  let lo = 0, hi = count;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (seqs[mid] < seq) lo = mid + 1;
    else hi = mid;
  }
  return lo < count && seqs[lo] === seq ? lo : -1;
}
