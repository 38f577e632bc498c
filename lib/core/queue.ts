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
import {
  type Backend,
  ENTRY_LENGTH,
  type Format,
  type InvalidateStatus,
  MAX_ENTRIES_PER_CALL,
} from "../backend/backend.ts";
import { EntryWriter } from "../compile/entries.ts";
import { compileSelftest, compileSelftestViommu } from "../compile/selftest.ts";
import { compileAtcInv, compileSmmuv3, type SmmuUnit } from "../compile/smmuv3.ts";
import { compileVtd } from "../compile/vtd.ts";
import { compileShadow } from "../compile/shadow.ts";
import { errnoName } from "../uapi/errno.ts";
import { PendingSet } from "./pending.ts";
import { DrainOutcome, type DrainReport, type RequestFailure } from "./outcome.ts";
import { LimitError } from "./errors.ts";
import {
  type InvalidateRequest,
  type PasidOrRid,
  type Request,
  type RequestLimits,
  type Scope,
  validateRequest,
} from "./request.ts";

/** Where a (domain, PASID) is bound on the host. */
export interface Binding {
  /** The host object invalidations go to: nested HWPT (VT-d, selftest) or vIOMMU (SMMUv3). */
  readonly targetId: number;
  readonly format: Format;
  /** SMMUv3: the ASID of the guest context descriptor at this PASID. */
  readonly asid?: number;
  /** vIOMMU formats: the device's virtual id (its vDEVICE), which entries name. */
  readonly vdevId?: number;
  /** SMMUv3: the device has ATS enabled, so its ATC needs ATC_INV (the VMM's job on SMMUv3). */
  readonly ats?: boolean;
}

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
}

export type { DrainReport, RequestFailure, WaitOutcome } from "./outcome.ts";

/** Counters, readable at any time. */
export interface QueueTelemetry {
  requestsIn: number;
  invalidationsIn: number;
  waitsIn: number;
  drains: number;
  ioctls: number;
  entriesOut: number;
  failures: number;
  resends: number;
  /** Drains a size or age threshold triggered. */
  thresholdDrains: number;
  /**
   * Drain latency histogram over the timed drains (one in `latencySampling`): bucket i counts drains that took
   * < 2^i µs (last bucket: the rest).
   */
  readonly latencyUs: number[];
}

interface Unit {
  readonly key: string | number;
  readonly targetId: number;
  readonly format: Format;
  readonly pasid: PasidOrRid;
  readonly smmu?: SmmuUnit;
  readonly vdevId?: number;
  /** An ATC unit: ATC_INV for one device stream (sent after the target's TLB invalidations). */
  readonly atc?: { readonly vsid: number; readonly ssid: number | undefined };
  readonly pending: PendingSet;
  readonly group: TargetGroup;
}

/** One host target's units (in creation order) and the writer its batches are compiled into. */
interface TargetGroup {
  readonly targetId: number;
  readonly format: Format;
  readonly units: Unit[];
}

/** A domain's routes, resolved once per binding change: which units a request of each scope reaches. */
interface DomainRoutes {
  /** PASID-scoped requests (pasid, pasid-range): the units bound at that PASID, ATC units included. */
  readonly byPasid: Map<PasidOrRid, Unit[]>;
  /** Every PASID and the RID (all, range). */
  readonly every: Unit[];
  /** The RID only (all, range with NO_PASID). */
  readonly ridOnly: Unit[];
}

const EINTR = 4, EAGAIN = 11, ENOMEM = 12, EINVAL = 22, EOPNOTSUPP = 95;
const EVERY_ASID: SmmuUnit = Object.freeze({ kind: "every-asid" });
const smmuAsid = (b: Binding): SmmuUnit => ({ kind: "asid", asid: b.asid ?? 0 });

/**
 * One guest vIOMMU's queue.
 *
 * @example
 * ```ts
 * import { RelayQueue } from "./queue.ts";
 * import { ModelHost } from "../model/host.ts";
 * const host = new ModelHost();
 * const hwpt = host.createTarget("vtd-s1");
 * const q = new RelayQueue(host);
 * q.bind(1, 5, { targetId: hwpt, format: "vtd-s1" });
 * q.submit({ op: "invalidate", domain: 1, scope: { kind: "pasid-range", pasid: 5, firstPage: 0x7f000, pages: 512 } });
 * q.submit({ op: "sync" });
 * const report = q.drain();
 * console.log(report.ioctls, report.waits[0].ok, host.covered(hwpt, 0x7f100)); // 1 true true
 * ```
 */
export class RelayQueue {
  readonly telemetry: QueueTelemetry = {
    requestsIn: 0,
    invalidationsIn: 0,
    waitsIn: 0,
    drains: 0,
    ioctls: 0,
    entriesOut: 0,
    failures: 0,
    resends: 0,
    thresholdDrains: 0,
    latencyUs: new Array(24).fill(0),
  };
  /** domain → PASID → the targets bound there (devices of one domain may hold different tables at one PASID). */
  readonly #bindings = new Map<number, Map<PasidOrRid, Binding[]>>();
  readonly #units = new Map<string | number, Unit>();
  /** Each target's units, targets in the order their first unit was made: one batch per group and pass. */
  readonly #groups: TargetGroup[] = [];
  /** Per domain, resolved on first use after a binding change (so routing a request builds no keys). */
  readonly #routes = new Map<number, DomainRoutes>();
  readonly #writers = new Map<Format, EntryWriter>();
  readonly #status: InvalidateStatus = { errno: 0, handled: 0 };
  #seq = 0;
  #oldest = 0;
  /** What threshold drains inside submit did, reported with the next explicit drain (waits resolve there). */
  #carried = { ioctls: 0, entries: 0, invalidations: 0, failures: [] as RequestFailure[] };
  /** This drain's failures before deduplication (reused; emptied only when it held any). */
  readonly #failed: RequestFailure[] = [];
  /** Pending waits: [0, #waitCount) of a sequence-number array that never shrinks. */
  readonly #waitSeqs: number[] = [];
  #waitCount = 0;
  #invalidations = 0;
  /** What drain() fills before copying it into a plain report. */
  readonly #outcome = new DrainOutcome();
  readonly #opts: Required<Omit<QueueOptions, "limits">> & { limits?: RequestLimits };

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
      limits: options.limits,
    };
  }

  /** The targets bound at (domain, pasid). */
  bindings(domain: number, pasid: PasidOrRid): readonly Binding[] {
    return this.#bindings.get(domain)?.get(pasid) ?? [];
  }

  /**
   * Record that (domain, pasid) is also served by `binding` (a no-op if that target is already there). A
   * barrier: pending work is drained first (the report is returned), so no invalidation queued before the change
   * is routed by the new table.
   */
  bind(domain: number, pasid: PasidOrRid, binding: Binding): DrainReport {
    const report = this.drain();
    let table = this.#bindings.get(domain);
    if (!table) this.#bindings.set(domain, table = new Map());
    const list = table.get(pasid) ?? [];
    const same = (b: Binding) =>
      b.targetId === binding.targetId && b.asid === binding.asid && b.vdevId === binding.vdevId;
    if (!list.some(same)) list.push(binding);
    table.set(pasid, list);
    this.#routes.clear();
    return report;
  }

  /**
   * Forget `targetId` at (domain, pasid), or every target there when omitted. A barrier, like
   * {@linkcode RelayQueue.bind}.
   */
  unbind(domain: number, pasid: PasidOrRid, targetId?: number): DrainReport {
    const report = this.drain();
    const table = this.#bindings.get(domain);
    const list = table?.get(pasid);
    if (table && list) {
      const kept = targetId === undefined ? [] : list.filter((b) => b.targetId !== targetId);
      if (kept.length) table.set(pasid, kept);
      else table.delete(pasid);
    }
    this.#prune();
    return report;
  }

  /** Drop the (drained, empty) units of targets no binding names any more, so rebinding forever stays flat. */
  #prune(): void {
    this.#routes.clear();
    const live = new Set<number>();
    for (const table of this.#bindings.values()) {
      for (const list of table.values()) for (const b of list) live.add(b.targetId);
    }
    for (const [key, unit] of this.#units) {
      if (live.has(unit.targetId) || !unit.pending.empty) continue;
      this.#units.delete(key);
      const units = unit.group.units;
      units.splice(units.indexOf(unit), 1);
    }
    for (let g = this.#groups.length - 1; g >= 0; g--) {
      if (this.#groups[g].units.length === 0) this.#groups.splice(g, 1);
    }
  }

  /**
   * Send configuration commands (e.g. SMMUv3 CFGI_CD) to a target now, after draining what is pending (a
   * barrier). Returns the kernel's status; EINTR/EAGAIN are retried.
   */
  command(targetId: number, format: Format, entries: EntryWriter): InvalidateStatus {
    this.drain();
    const status: InvalidateStatus = { errno: 0, handled: 0 };
    let tries = 0;
    do {
      this.backend.invalidate(targetId, format, entries.tail(0), entries.count, status);
      this.telemetry.ioctls++;
    } while ((status.errno === EINTR || status.errno === EAGAIN) && tries++ < this.#opts.transientRetries);
    return status;
  }

  /** Forget every binding (pending work is drained first). */
  resetBindings(): DrainReport {
    const report = this.drain();
    this.#bindings.clear();
    this.#routes.clear();
    return report;
  }

  /** Forget one binding at (domain, pasid) (matched by target, ASID and virtual device). A barrier. */
  unbindTarget(domain: number, pasid: PasidOrRid, binding: Binding): DrainReport {
    const report = this.drain();
    const table = this.#bindings.get(domain);
    const kept = (table?.get(pasid) ?? []).filter((b) =>
      !(b.targetId === binding.targetId && b.asid === binding.asid && b.vdevId === binding.vdevId)
    );
    if (kept.length) table!.set(pasid, kept);
    else table?.delete(pasid);
    this.#prune();
    return report;
  }

  /** Queue a guest request (validated; throws RequestError). Returns its sequence number. */
  submit(request: Request): number {
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
        this.#waitSeqs[this.#waitCount++] = seq;
        break;
      case "invalidate":
        this.telemetry.invalidationsIn++;
        if (this.#invalidations === 0 && this.#opts.maxAgeMs !== Infinity) this.#oldest = performance.now();
        this.#invalidations++;
        this.#route(request, seq);
        if (
          this.#invalidations >= this.#opts.maxPendingInvalidations ||
          (this.#opts.maxAgeMs !== Infinity && performance.now() - this.#oldest >= this.#opts.maxAgeMs)
        ) {
          this.telemetry.thresholdDrains++;
          this.#flush(null);
        }
        break;
      default:
        throw new Error(`${request.op} is the device layer's job: use AssignedDevice, which calls bind/unbind here`);
    }
    return seq;
  }

  #unit(binding: Binding, pasid: PasidOrRid, smmu?: SmmuUnit): Unit {
    const key = smmu
      ? `${binding.targetId}/${smmu.kind === "asid" ? smmu.asid : "*"}`
      : binding.vdevId !== undefined
      ? `${binding.targetId}/v${binding.vdevId}/${pasid}`
      : binding.targetId; // the common case: a number, no string built per request
    let unit = this.#units.get(key);
    if (!unit) {
      const noRil = binding.format === "smmuv3" && !this.#opts.smmuRil;
      unit = {
        key,
        targetId: binding.targetId,
        format: binding.format,
        pasid,
        smmu,
        vdevId: binding.vdevId,
        group: this.#group(binding),
        pending: new PendingSet(
          this.#opts.coalesce
            ? {
              maxRanges: this.#opts.maxRanges,
              maxPages: noRil ? Math.min(64, this.#opts.maxPages) : this.#opts.maxPages,
            }
            : { maxRanges: Infinity, maxPages: Infinity, merge: false },
        ),
      };
      this.#units.set(key, unit);
      unit.group.units.push(unit);
    }
    return unit;
  }

  #group(binding: Binding): TargetGroup {
    let group = this.#groups.find((g) => g.targetId === binding.targetId);
    if (!group) this.#groups.push(group = { targetId: binding.targetId, format: binding.format, units: [] });
    return group;
  }

  #atcUnit(b: Binding, pasid: PasidOrRid): Unit {
    const key = `${b.targetId}/atc/${b.vdevId}/${pasid}`;
    let unit = this.#units.get(key);
    if (!unit) {
      unit = {
        key,
        targetId: b.targetId,
        format: b.format,
        pasid,
        atc: { vsid: b.vdevId ?? 0, ssid: pasid === "rid" ? undefined : pasid },
        group: this.#group(b),
        pending: new PendingSet({ maxRanges: this.#opts.maxRanges, maxPages: this.#opts.maxPages }),
      };
      this.#units.set(key, unit);
      unit.group.units.push(unit);
    }
    return unit;
  }

  #route(r: InvalidateRequest, seq: number): void {
    let routes = this.#routes.get(r.domain);
    if (!routes) {
      const table = this.#bindings.get(r.domain);
      if (!table) return;
      this.#routes.set(r.domain, routes = this.#resolve(table));
    }
    const s = r.scope;
    const units = s.kind === "pasid" || s.kind === "pasid-range"
      ? routes.byPasid.get(s.pasid)
      : r.noPasid
      ? routes.ridOnly
      : routes.every;
    if (!units) return;
    const leaf = r.leaf ?? false;
    for (let i = 0; i < units.length; i++) this.#add(units[i], s, leaf, seq);
  }

  /** The units each scope of a domain reaches, from its binding table. */
  #resolve(table: Map<PasidOrRid, Binding[]>): DomainRoutes {
    const byPasid = new Map<PasidOrRid, Unit[]>();
    const every: Unit[] = [], ridOnly: Unit[] = [];
    const seenVsmmu = new Set<number>();
    for (const [pasid, list] of table) {
      const atPasid: Unit[] = [];
      for (const b of list) {
        atPasid.push(this.#unit(b, pasid, b.format === "smmuv3" ? smmuAsid(b) : undefined));
        if (b.ats) atPasid.push(this.#atcUnit(b, pasid));
        // Every PASID and the RID (or only the RID with NO_PASID).
        if (b.ats) every.push(this.#atcUnit(b, pasid));
        if (b.format !== "smmuv3") every.push(this.#unit(b, pasid));
        else if (!seenVsmmu.has(b.targetId)) {
          // One NH_VAA / NH_ALL per vIOMMU covers every ASID at once.
          seenVsmmu.add(b.targetId);
          every.push(this.#unit(b, pasid, EVERY_ASID));
        }
        if (pasid !== "rid") continue;
        if (b.ats) ridOnly.push(this.#atcUnit(b, pasid));
        ridOnly.push(this.#unit(b, pasid, b.format === "smmuv3" ? smmuAsid(b) : undefined));
      }
      byPasid.set(pasid, atPasid);
    }
    return { byPasid, every, ridOnly };
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

  /** Send everything pending; report per wait (a fresh, plain report: see drainInto for the hot path). */
  drain(): DrainReport {
    this.#flush(this.#outcome);
    return this.#outcome.toReport();
  }

  /**
   * Send everything pending and refill `out` with what happened: the allocation-free form of
   * {@linkcode RelayQueue.drain}, for a VMM's doorbell path.
   */
  drainInto(out: DrainOutcome): DrainOutcome {
    this.#flush(out);
    return out;
  }

  /**
   * Send everything pending. Without `out` (a threshold drain inside submit) the waits stay pending and the counts
   * and failures are carried into the next explicit drain's outcome.
   */
  #flush(out: DrainOutcome | null): void {
    const timed = (++this.#drainCount & (this.#opts.latencySampling - 1)) === 0;
    const start = timed ? performance.now() : 0;
    const failed = this.#failed;
    if (failed.length) failed.length = 0;
    this.#sendAll(failed);
    const ioctls = this.#sentIoctls, entries = this.#sentEntries;
    const carried = this.#carried;
    const invalidations = this.#invalidations;
    this.#invalidations = 0;
    if (out === null) {
      carried.ioctls += ioctls;
      carried.entries += entries;
      carried.invalidations += invalidations;
      for (const f of failed) carried.failures.push(f);
      this.#account(timed ? latencyBucket(start) : -1, ioctls, entries, 0);
      return;
    }
    out.reset();
    out.ioctls = ioctls + carried.ioctls;
    out.entries = entries + carried.entries;
    out.invalidations = invalidations + carried.invalidations;
    carried.ioctls = carried.entries = carried.invalidations = 0;
    if (carried.failures.length) {
      failed.unshift(...carried.failures);
      carried.failures.length = 0;
    }
    if (failed.length) uniqueBySeq(failed, out.failures);
    const failures = out.failures;
    for (let i = 0; i < this.#waitCount; i++) {
      const seq = this.#waitSeqs[i];
      let first = 0;
      // failures is ascending by seq: the first one before the wait is the earliest.
      if (failures.length && failures[0].seq < seq) first = failures[0].seq;
      out.addWait(seq, first);
    }
    this.#waitCount = 0;
    this.#account(timed ? latencyBucket(start) : -1, ioctls, entries, failures.length);
  }

  /**
   * Compile and send every pending unit, one batch per target and pass; counts go to #sentIoctls/#sentEntries. Kept
   * out of #flush so that #flush stays small enough for V8 to inline its clock reads (a boxed double otherwise).
   */
  #sendAll(failed: RequestFailure[]): void {
    let ioctls = 0;
    let entries = 0;
    const groups = this.#groups;
    for (let g = 0; g < groups.length; g++) {
      const { targetId, format, units } = groups[g];
      let pending = false;
      for (let i = 0; i < units.length && !pending; i++) pending = !units[i].pending.empty;
      if (!pending) continue;
      const w = this.#writer(format);
      // TLB invalidations first; ATC invalidations in a second call, once the TLB ones completed (the ioctl is
      // synchronous), so a device cannot refill its ATC from a stale TLB entry.
      for (let pass = 0; pass < 2; pass++) {
        const atcPass = pass === 1;
        w.reset();
        for (let i = 0; i < units.length; i++) {
          const u = units[i];
          if ((u.atc !== undefined) !== atcPass || u.pending.empty) continue;
          if (u.atc) compileAtcInv(u.pending, u.atc.vsid, u.atc.ssid, w);
          else if (format === "vtd-s1") compileVtd(u.pending, w);
          else if (format === "selftest") compileSelftest(u.pending, u.pasid, w);
          else if (format === "selftest-viommu") compileSelftestViommu(u.pending, u.vdevId ?? 0, u.pasid, w);
          else if (format === "shadow") compileShadow(u.pending, w);
          else compileSmmuv3(u.pending, u.smmu!, this.#opts.smmuRil, w);
          u.pending.clear();
        }
        if (w.count === 0) continue;
        entries += w.count;
        ioctls += this.#send(targetId, format, w, failed);
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

  /** Send the writer's entries to one target; returns ioctls made; appends failures. */
  #send(targetId: number, format: Format, w: EntryWriter, failures: RequestFailure[]): number {
    const status = this.#status;
    let ioctls = 0;
    let from = 0;
    let resentWhole = false;
    while (from < w.count) {
      const count = Math.min(w.count - from, this.#opts.maxEntriesPerCall);
      let tries = 0;
      do {
        status.errno = 0;
        status.handled = 0;
        this.backend.invalidate(targetId, format, w.tail(from), count, status);
        ioctls++;
      } while ((status.errno === EINTR || status.errno === EAGAIN) && tries++ < this.#opts.transientRetries);
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
        this.telemetry.resends++;
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
            failures.push(this.#failure(seq, status.errno, targetId, i, true));
          }
        }
        from += count;
        continue;
      }
      // A known position: the entry at `handled` failed; the ones after it were not attempted — resend them.
      const failing = from + status.handled;
      for (let k = w.originsFrom(failing); k < w.originsTo(failing); k++) {
        failures.push(this.#failure(w.originAt(k), status.errno, targetId, failing, false));
      }
      this.telemetry.resends += failing + 1 < w.count ? 1 : 0;
      from = failing + 1;
    }
    return ioctls;
  }

  #failure(seq: number, errno: number, targetId: number, entryIndex: number, positionUnknown: boolean): RequestFailure {
    const retrySafe = errno !== EINVAL && errno !== EOPNOTSUPP;
    return { seq, errno, errnoName: errnoName(errno), targetId, entryIndex, positionUnknown, retrySafe };
  }

  /** Whether anything is pending (invalidations or waits). */
  get pending(): boolean {
    if (this.#waitCount > 0) return true;
    const groups = this.#groups;
    for (let g = 0; g < groups.length; g++) {
      const units = groups[g].units;
      for (let i = 0; i < units.length; i++) if (!units[i].pending.empty) return true;
    }
    return false;
  }
}

/** The latency histogram bucket of a drain that started at `start` (performance.now()): < 2^i µs. */
function latencyBucket(start: number): number {
  return Math.max(0, Math.ceil(Math.log2((performance.now() - start) * 1000 + 1))) | 0;
}

/**
 * `failures` ascending by sequence number, each request once with its earliest failure (a request merged into
 * entries of several targets may fail more than once), into `out`.
 */
function uniqueBySeq(failures: RequestFailure[], out: RequestFailure[]): void {
  const sorted = failures.map((f, i) => ({ f, i })).sort((a, b) => a.f.seq - b.f.seq || a.i - b.i);
  for (const { f } of sorted) if (out.length === 0 || out[out.length - 1].seq !== f.seq) out.push(f);
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
