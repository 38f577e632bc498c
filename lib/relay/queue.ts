/**
 * The relay queue: one per guest vIOMMU, shared by the devices behind it. Guest requests go in as they are
 * decoded; {@linkcode RelayQueue.drain} (at the end of a doorbell, or when a wait needs it) sends everything
 * pending as one ioctl per host target and reports, per guest wait, whether everything before it succeeded.
 *
 * - Look-ahead across waits: a wait only needs the invalidations queued before it to be complete, so all the
 *   waits of one doorbell share one flush, instead of one ioctl per descriptor or a flush per sync.
 * - Coalescing: per unit (target, or SMMUv3 ASID) ranges merge, covered ranges vanish, long ones escalate.
 * - No fan-out: devices sharing a nested HWPT or vIOMMU share its unit, so one ioctl serves them all.
 * - Isolation: targets are keyed by guest domain; a request reaches only targets bound in its own domain.
 * - Failures map back to the guest requests merged into the failing entry; the entries after it are resent so
 *   nothing else is lost; EINTR/EAGAIN are retried; when the kernel's count cannot be trusted the whole batch is
 *   resent (invalidations are idempotent).
 *
 * @module
 */
import type { Backend, InvalidateStatus } from "../host/backend.ts";
import { EntryWriter } from "../compile/entries.ts";
import { ENTRY_LENGTH, type Format, FORMAT_SPECS, MAX_ENTRIES_PER_CALL } from "../compile/formats.ts";
import { compileAtcInv } from "../compile/smmuv3.ts";
import { Errno } from "../uapi/errno.ts";
import { LimitError } from "../kernel/errors.ts";
import {
  type InvalidateRequest,
  type PasidOrRid,
  type Request,
  type RequestLimits,
  type Scope,
  validateRequest,
} from "../request/request.ts";
import { type Binding, BindingTable } from "./bindings.ts";
import { DrainOutcome, type DrainReport, type RequestFailure } from "./outcome.ts";
import { type DomainRoutes, RouteTable, type Unit } from "./routes.ts";
import { requestFailure, sendBatch } from "./send.ts";
import { latencyBucket, newQueueTelemetry, type QueueTelemetry } from "./telemetry.ts";

export type { Binding } from "./bindings.ts";
export type { QueueTelemetry, UnroutedCounts } from "./telemetry.ts";

/** Tuning; the defaults suit the recorded guest workloads. */
export interface QueueOptions {
  /** Ranges per unit before escalating to whole-space (default 64). */
  readonly maxRanges?: number;
  /** Pages per unit before escalating (default 2^18 = 1 GiB; SMMUv3 without RIL: 64). */
  readonly maxPages?: number;
  /** The SMMU supports range invalidation (IDR3.RIL). */
  readonly smmuRil?: boolean;
  /** Entries per ioctl (default and maximum: the kernel's 2^19; more is a {@linkcode LimitError}). Longer batches are split. */
  readonly maxEntriesPerCall?: number;
  /** Request validation limits (PASID width). */
  readonly limits?: RequestLimits;
  /** Retries of EINTR/EAGAIN per ioctl (default 3). */
  readonly transientRetries?: number;
  /**
   * Waits that may be pending at once (default 65,536); one more is a {@linkcode LimitError}. Invalidations need no
   * cap of their own: the size threshold below drains them.
   */
  readonly maxPendingWaits?: number;
  /** Drain by itself once this many invalidations are pending (default 4096): a size threshold. */
  readonly maxPendingInvalidations?: number;
  /** Drain by itself at a submit once the oldest pending invalidation is this old (default: never). */
  readonly maxAgeMs?: number;
  /** Coalesce (default). Off: one host entry per guest request and no escalation, for policy comparisons. */
  readonly coalesce?: boolean;
  /**
   * Time one drain in this many for the latency histogram (a power of two; default 16, 1 = every drain). A clock read
   * costs about as much as the rest of a one-invalidation drain, so timing every drain would double the hot path.
   */
  readonly latencySampling?: number;
  /**
   * Strict routing: an invalidation for a domain with assigned devices that reaches no host target (nothing bound
   * at its PASID) fails its request with ENOENT, so the guest's next wait reports it. Off by default: a guest
   * invalidating a PASID it has not bound (or has just unbound) asks for nothing the host holds, and Linux does
   * that routinely; the count in {@linkcode QueueTelemetry.unrouted} says how often it happened either way.
   */
  readonly strictRouting?: boolean;
  /**
   * Called with each invalidation for a domain no assigned device is in — a domain the VMM emulates — which the
   * relay cannot serve; counted in `telemetry.unrouted.emulatedDomain` whether or not a hook is given.
   */
  readonly onEmulated?: (request: InvalidateRequest) => void;
}

export type { DrainReport, RequestFailure, WaitOutcome } from "./outcome.ts";

const { EINTR, EAGAIN, ENOENT } = Errno.values;

/** Everyone's outcomes: the owner a VMM-wide drain reports for. */
export const EVERY_OWNER: number = -1;

/**
 * One guest vIOMMU's queue.
 *
 * Outcomes belong to their owners: a device layer submits with its own owner id ({@linkcode RelayQueue.newOwner}),
 * and `drain(owner)` reports only that owner's waits and failures. Everything pending is sent by every drain and
 * every barrier, but other owners' waits stay pending and their failures are kept for them, so no drain or
 * binding change of one device discards another's outcome. `drain()` without an owner reports everyone's.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { RelayQueue } from "./queue.ts";
 * import { ModelHost } from "../host/model.ts";
 * const host = new ModelHost();
 * const hwpt = host.createTarget("vtd-s1");
 * const q = new RelayQueue(host);
 * q.bind(1, 5, { targetId: hwpt, format: "vtd-s1" });
 * q.submit({ op: "invalidate", domain: 1, scope: { kind: "pasid-range", pasid: 5, firstPage: 0x7f000, pages: 512 } });
 * q.submit({ op: "sync" });
 * const report = q.drain();
 * assert.equal(report.ioctls, 1);
 * assert.ok(report.waits[0].ok);
 * assert.ok(host.covered(hwpt, 0x7f100));
 * ```
 */
export class RelayQueue {
  /** Counters, readable at any time. */
  readonly telemetry: QueueTelemetry = newQueueTelemetry();
  readonly #bindings = new BindingTable();
  readonly #routes: RouteTable;
  /** Domains with assigned devices (reference-counted by the device layer). */
  readonly #claimed = new Map<number, number>();
  readonly #writers = new Map<Format, EntryWriter>();
  /** Targets whose TLB invalidation batches are sent twice (a host erratum). */
  readonly #repeat = new Set<number>();
  readonly #status: InvalidateStatus = { errno: 0, handled: 0 };
  #seq = 0;
  #oldest = 0;
  #nextOwner = 1;
  /** What drains and barriers sent that no report has carried yet. */
  #carried = { ioctls: 0, entries: 0, invalidations: 0, unrouted: 0 };
  /** Failures not yet reported to their owners, and those owners. */
  readonly #carriedFailures: RequestFailure[] = [];
  readonly #carriedOwners: number[] = [];
  /** This flush's failures before attribution (reused; emptied only when it held any). */
  readonly #failed: RequestFailure[] = [];
  /** Pending waits: [0, #waitCount) of sequence-number and owner arrays that never shrink. */
  readonly #waitSeqs: number[] = [];
  readonly #waitOwners: number[] = [];
  #waitCount = 0;
  #invalidations = 0;
  #unrouted = 0;
  /** The owner of each recent sequence number (made on the first owned submit): seq & #ownerMask. */
  #owners: Uint32Array | undefined;
  #ownerMask = 0;
  /** What drain() fills before copying it into a plain report. */
  readonly #outcome = new DrainOutcome();
  readonly #filtered: RequestFailure[] = [];
  readonly #opts: Required<Omit<QueueOptions, "limits" | "onEmulated">> & {
    limits?: RequestLimits;
    onEmulated?: (request: InvalidateRequest) => void;
  };

  /** A queue sending to `backend`; `options` sets thresholds, limits and hooks (defaults: drain only when asked). */
  constructor(readonly backend: Backend, options: QueueOptions = {}) {
    this.#opts = {
      maxRanges: options.maxRanges ?? 64,
      maxPages: options.maxPages ?? 1 << 18,
      smmuRil: options.smmuRil ?? false,
      maxEntriesPerCall: entriesPerCall(options.maxEntriesPerCall),
      maxPendingWaits: options.maxPendingWaits ?? 65_536,
      transientRetries: options.transientRetries ?? 3,
      maxPendingInvalidations: options.maxPendingInvalidations ?? 4096,
      maxAgeMs: options.maxAgeMs ?? Infinity,
      coalesce: options.coalesce ?? true,
      latencySampling: sampling(options.latencySampling),
      strictRouting: options.strictRouting ?? false,
      limits: options.limits,
      onEmulated: options.onEmulated,
    };
    this.#routes = new RouteTable(this.#opts);
  }

  /**
   * Send every TLB invalidation and configuration batch to `targetId` a second time after the first returned: the
   * SMMUv3 erratum the kernel reports as `IOMMU_HW_INFO_ARM_SMMUV3_ERRATA_REPEAT_TLBI_CFGI` ("user space must issue
   * TLBI/CFGI+SYNC commands twice"; the kernel ends each batch with its own CMD_SYNC). ATC invalidations are not
   * repeated.
   */
  repeatInvalidations(targetId: number): void {
    this.#repeat.add(targetId);
  }

  /** A new owner id for a device layer's requests (owners' outcomes are reported to them only). */
  newOwner(): number {
    return this.#nextOwner++;
  }

  /** Record that an assigned device is in `domain` (its invalidations are then never "emulated"). */
  claimDomain(domain: number): void {
    this.#claimed.set(domain, (this.#claimed.get(domain) ?? 0) + 1);
  }

  /** Undo {@linkcode RelayQueue.claimDomain}. */
  releaseDomain(domain: number): void {
    const n = (this.#claimed.get(domain) ?? 1) - 1;
    if (n > 0) this.#claimed.set(domain, n);
    else this.#claimed.delete(domain);
  }

  /** Domains with bindings or assigned devices, ascending: what a global flush reaches. */
  domains(): number[] {
    const all = new Set([...this.#bindings.domains(), ...this.#claimed.keys()]);
    return [...all].sort((a, b) => a - b);
  }

  /** The targets bound at (domain, pasid). */
  bindings(domain: number, pasid: PasidOrRid): readonly Binding[] {
    return this.#bindings.get(domain, pasid);
  }

  /**
   * Record that (domain, pasid) is also served by `binding` (a no-op if an equal binding is there). A barrier:
   * what is pending is sent first, so no invalidation queued before the change is routed by the new table; the
   * outcomes stay with their owners' next drain.
   */
  bind(domain: number, pasid: PasidOrRid, binding: Binding): void {
    this.#barrier();
    this.#bindings.add(domain, pasid, binding);
  }

  /**
   * Forget the bindings equal to `binding` at (domain, pasid), or every binding there when omitted. A barrier, like
   * {@linkcode RelayQueue.bind}.
   */
  unbind(domain: number, pasid: PasidOrRid, binding?: Binding): void {
    this.#barrier();
    this.#bindings.remove(domain, pasid, binding);
    this.#routes.prune(this.#bindings);
  }

  /** Forget every binding (a barrier). */
  resetBindings(): void {
    this.#barrier();
    this.#bindings.clear();
    this.#routes.prune(this.#bindings);
  }

  /**
   * Send configuration commands (e.g. SMMUv3 CFGI_CD) to a target now, after sending what is pending (a
   * barrier). Returns the kernel's status; EINTR/EAGAIN are retried.
   */
  command(targetId: number, format: Format, entries: EntryWriter): InvalidateStatus {
    this.#barrier();
    const status: InvalidateStatus = { errno: 0, handled: 0 };
    const times = this.#repeat.has(targetId) ? 2 : 1;
    for (let time = 0; time < times; time++) {
      if (time === 1) {
        if (failedStatus(status)) break; // the erratum asks for a second send of what succeeded
        this.telemetry.errataRepeats++;
      }
      let tries = 0;
      do {
        this.backend.invalidate(targetId, format, entries.tail(0), entries.count, status);
        this.telemetry.ioctls++;
      } while ((status.errno === EINTR || status.errno === EAGAIN) && tries++ < this.#opts.transientRetries);
    }
    return status;
  }

  /**
   * A barrier: send everything pending now, keeping each wait and failure for its owner's next drain. The device
   * layer calls it before changing what a PASID is attached to, so nothing queued for the old table reaches the new.
   */
  barrier(): void {
    this.#barrier();
  }

  #barrier(): void {
    this.telemetry.barriers++;
    this.#flush(null, EVERY_OWNER);
  }

  /** Queue a guest request (validated; throws RequestError) for `owner`. Returns its sequence number. */
  submit(request: Request, owner = 0): number {
    validateRequest(request, this.#opts.limits);
    const seq = ++this.#seq;
    this.telemetry.requestsIn++;
    switch (request.op) {
      case "sync":
        if (this.#waitCount >= this.#opts.maxPendingWaits) {
          --this.#seq;
          this.telemetry.requestsIn--;
          throw new LimitError(
            "pending-waits",
            this.#opts.maxPendingWaits,
            "drain the queue before queueing more waits",
          );
        }
        this.telemetry.waitsIn++;
        this.#waitSeqs[this.#waitCount] = seq;
        this.#waitOwners[this.#waitCount++] = owner;
        break;
      case "invalidate":
        this.telemetry.invalidationsIn++;
        if (owner !== 0 || this.#owners !== undefined) this.#setOwner(seq, owner);
        if (this.#invalidations === 0 && this.#opts.maxAgeMs !== Infinity) this.#oldest = performance.now();
        this.#invalidations++;
        this.#route(request, seq, owner);
        if (
          this.#invalidations >= this.#opts.maxPendingInvalidations ||
          (this.#opts.maxAgeMs !== Infinity && performance.now() - this.#oldest >= this.#opts.maxAgeMs)
        ) {
          this.telemetry.thresholdDrains++;
          this.#flush(null, EVERY_OWNER);
        }
        break;
      default:
        throw new Error(`${request.op} is the device layer's job: use AssignedDevice, which calls bind/unbind here`);
    }
    return seq;
  }

  #setOwner(seq: number, owner: number): void {
    if (this.#owners === undefined) {
      // Sequence numbers between two flushes span at most the pending waits and invalidations.
      let size = 1024;
      while (size < this.#opts.maxPendingWaits + this.#opts.maxPendingInvalidations + 2) size *= 2;
      this.#owners = new Uint32Array(size);
      this.#ownerMask = size - 1;
    }
    this.#owners[seq & this.#ownerMask] = owner;
  }

  #ownerOf(seq: number): number {
    return this.#owners === undefined ? 0 : this.#owners[seq & this.#ownerMask];
  }

  #route(r: InvalidateRequest, seq: number, owner: number): void {
    const routes = this.#routes.resolve(r.domain, this.#bindings);
    const s = r.scope;
    const units = routes === undefined
      ? undefined
      : s.kind === "pasid" || s.kind === "pasid-range"
      ? routes.byPasid.get(s.pasid)
      : r.noPasid
      ? routes.ridOnly
      : routes.every;
    if (units === undefined || units.length === 0) return this.#unroutable(r, seq, owner, routes);
    const leaf = r.leaf ?? false;
    for (let i = 0; i < units.length; i++) this.#add(units[i], s, leaf, seq);
  }

  /** An invalidation no binding serves: counted by reason, handed to the VMM or (strict) failed. */
  #unroutable(r: InvalidateRequest, seq: number, owner: number, routes: DomainRoutes | undefined): void {
    this.#unrouted++;
    if (routes === undefined && !this.#claimed.has(r.domain)) {
      this.telemetry.unrouted.emulatedDomain++;
      this.#opts.onEmulated?.(r);
      return;
    }
    this.telemetry.unrouted.noBinding++;
    if (!this.#opts.strictRouting) return;
    this.#carriedFailures.push(requestFailure(seq, ENOENT, -1, -1, false));
    this.#carriedOwners.push(owner);
  }

  #add(unit: Unit, s: Scope, leaf: boolean, seq: number): void {
    if (s.kind === "range" || s.kind === "pasid-range") unit.pending.addRange(s.firstPage, s.pages, leaf, seq);
    else unit.pending.addAll(seq);
  }

  #writer(format: Format): EntryWriter {
    let w = this.#writers.get(format);
    if (!w) this.#writers.set(format, w = new EntryWriter(ENTRY_LENGTH[format]));
    return w;
  }

  /**
   * Send everything pending; report `owner`'s waits and failures (everyone's by default) in a fresh, plain report
   * (see drainInto for the hot path).
   */
  drain(owner: number = EVERY_OWNER): DrainReport {
    this.#flush(this.#outcome, owner);
    return this.#outcome.toReport();
  }

  /**
   * Send everything pending and refill `out` with what happened to `owner`'s requests (everyone's by default): the
   * allocation-free form of {@linkcode RelayQueue.drain}, for a VMM's doorbell path.
   */
  drainInto(out: DrainOutcome, owner: number = EVERY_OWNER): DrainOutcome {
    this.#flush(out, owner);
    return out;
  }

  /**
   * Send everything pending. Without `out` (a barrier or threshold drain) the waits stay pending and the counts
   * and failures are carried to the next drain's outcome.
   */
  #flush(out: DrainOutcome | null, owner: number): void {
    const timed = (++this.#drainCount & (this.#opts.latencySampling - 1)) === 0;
    const start = timed ? performance.now() : 0;
    const failed = this.#failed;
    if (failed.length) failed.length = 0;
    this.#sendAll(failed);
    const ioctls = this.#sentIoctls, entries = this.#sentEntries;
    const carried = this.#carried;
    carried.ioctls += ioctls;
    carried.entries += entries;
    carried.invalidations += this.#invalidations;
    carried.unrouted += this.#unrouted;
    this.#invalidations = this.#unrouted = 0;
    for (let i = 0; i < failed.length; i++) {
      this.#carriedFailures.push(failed[i]);
      this.#carriedOwners.push(this.#ownerOf(failed[i].seq));
    }
    if (out === null) {
      this.#account(timed ? latencyBucket(start) : -1, ioctls, entries, 0);
      return;
    }
    out.reset();
    out.ioctls = carried.ioctls;
    out.entries = carried.entries;
    out.invalidations = carried.invalidations;
    out.unrouted = carried.unrouted;
    carried.ioctls =
      carried.entries =
      carried.invalidations =
      carried.unrouted =
        0;
    if (this.#carriedFailures.length) this.#takeFailures(owner, out.failures);
    const failures = out.failures;
    let kept = 0;
    for (let i = 0; i < this.#waitCount; i++) {
      const seq = this.#waitSeqs[i], waitOwner = this.#waitOwners[i];
      if (owner !== EVERY_OWNER && waitOwner !== owner) {
        // Another owner's wait: its invalidations were sent; it is reported at that owner's drain.
        this.#waitSeqs[kept] = seq;
        this.#waitOwners[kept++] = waitOwner;
        continue;
      }
      let first = 0;
      // failures is ascending by seq: the first one before the wait is the earliest.
      if (failures.length && failures[0].seq < seq) first = failures[0].seq;
      out.addWait(seq, first);
    }
    this.#waitCount = kept;
    this.#account(timed ? latencyBucket(start) : -1, ioctls, entries, failures.length);
  }

  /** Move `owner`'s carried failures (everyone's for EVERY_OWNER), unique and ascending by seq, into `out`. */
  #takeFailures(owner: number, out: RequestFailure[]): void {
    const all = this.#carriedFailures, owners = this.#carriedOwners, mine = this.#filtered;
    mine.length = 0;
    let kept = 0;
    for (let i = 0; i < all.length; i++) {
      if (owner === EVERY_OWNER || owners[i] === owner) mine.push(all[i]);
      else {
        all[kept] = all[i];
        owners[kept++] = owners[i];
      }
    }
    all.length = owners.length = kept;
    uniqueBySeq(mine, out);
    mine.length = 0;
  }

  /**
   * Compile and send every pending unit, one batch per target and pass; counts go to #sentIoctls/#sentEntries. Kept
   * out of #flush so that #flush stays small enough for V8 to inline its clock reads (a boxed double otherwise).
   */
  #sendAll(failed: RequestFailure[]): void {
    let ioctls = 0;
    let entries = 0;
    const groups = this.#routes.groups;
    const ril = this.#opts.smmuRil;
    for (let g = 0; g < groups.length; g++) {
      const { targetId, format, units } = groups[g];
      let pending = false;
      for (let i = 0; i < units.length && !pending; i++) pending = !units[i].pending.empty;
      if (!pending) continue;
      const w = this.#writer(format);
      const compile = FORMAT_SPECS[format].compile;
      // TLB invalidations first; ATC invalidations in a second call, once the TLB ones completed (the ioctl is
      // synchronous), so a device cannot refill its ATC from a stale TLB entry.
      for (let pass = 0; pass < 2; pass++) {
        const atcPass = pass === 1;
        w.reset();
        for (let i = 0; i < units.length; i++) {
          const u = units[i];
          if ((u.atc !== undefined) !== atcPass || u.pending.empty) continue;
          if (u.atc) compileAtcInv(u.pending, u.atc.vsid, u.atc.ssid, w);
          else compile(u.pending, u, ril, w);
          u.pending.clear();
        }
        if (w.count === 0) continue;
        entries += w.count;
        ioctls += sendBatch(this.backend, targetId, format, w, this.#opts, this.#status, failed, this.telemetry);
        if (!atcPass && this.#repeat.size !== 0 && this.#repeat.has(targetId)) {
          this.telemetry.errataRepeats++;
          ioctls += sendBatch(this.backend, targetId, format, w, this.#opts, this.#status, failed, this.telemetry);
        }
      }
    }
    this.#sentIoctls = ioctls;
    this.#sentEntries = entries;
  }

  #sentIoctls = 0;
  #sentEntries = 0;

  #drainCount = 0;

  /** Count a drain; `bucket` is its latency histogram bucket, or -1 for an untimed drain (an integer: a double would be boxed here). */
  #account(bucket: number, ioctls: number, entries: number, failures: number): void {
    const t = this.telemetry;
    t.drains++;
    t.ioctls += ioctls;
    t.entriesOut += entries;
    t.failures += failures;
    if (bucket >= 0) t.latencyUs[Math.min(t.latencyUs.length - 1, bucket)]++;
  }

  /** Whether anything is pending (invalidations, waits or unreported failures). */
  get pending(): boolean {
    return this.#waitCount > 0 || this.#carriedFailures.length > 0 || this.#routes.pending;
  }

  /**
   * Forget `owner`'s unreported waits and failures: its device is gone, so nobody is left to tell. Its
   * invalidations were sent (or are sent by the next drain) all the same.
   */
  releaseOwner(owner: number): void {
    let kept = 0;
    for (let i = 0; i < this.#waitCount; i++) {
      if (this.#waitOwners[i] === owner) continue;
      this.#waitSeqs[kept] = this.#waitSeqs[i];
      this.#waitOwners[kept++] = this.#waitOwners[i];
    }
    this.#waitCount = kept;
    if (this.#carriedFailures.length) this.#takeFailures(owner, []); // taken, and told to nobody
  }

  /** Whether `owner` has waits or failures not yet reported. */
  pendingFor(owner: number): boolean {
    for (let i = 0; i < this.#waitCount; i++) if (this.#waitOwners[i] === owner) return true;
    return this.#carriedOwners.includes(owner);
  }
}

/**
 * `failures` ascending by sequence number, each request once with its earliest failure (a request merged into
 * entries of several targets may fail more than once), into `out`.
 */
function uniqueBySeq(failures: RequestFailure[], out: RequestFailure[]): void {
  const sorted = failures.map((f, i) => ({ f, i })).sort((a, b) => a.f.seq - b.f.seq || a.i - b.i);
  for (const { f } of sorted) if (out.length === 0 || out[out.length - 1].seq !== f.seq) out.push(f);
}

function failedStatus(status: InvalidateStatus): boolean {
  return status.errno !== 0;
}

function sampling(n: number | undefined): number {
  if (n === undefined) return 16;
  if (!Number.isInteger(n) || n < 1 || n > 2 ** 20 || (n & (n - 1)) !== 0) {
    throw new RangeError(`latencySampling must be a power of two from 1 to 2^20, not ${n}`);
  }
  return n;
}

function entriesPerCall(n: number | undefined): number {
  if (n === undefined) return MAX_ENTRIES_PER_CALL;
  if (!Number.isInteger(n) || n < 1 || n > MAX_ENTRIES_PER_CALL) {
    throw new LimitError(
      "entries-per-call",
      MAX_ENTRIES_PER_CALL,
      `the kernel takes 1..2^19 entries per call, not ${n}`,
    );
  }
  return n;
}
