/**
 * Adaptive batching across vCPU Workers by flat combining over a SharedArrayBuffer.
 *
 * Every Worker holds a {@linkcode SharedRelay} over the same shared memory and its own {@linkcode RelayQueue}
 * (on its own backend: the shim's fd numbers are process-wide, so each Worker can issue the ioctl itself).
 * When a doorbell finds the relay idle, its Worker takes the lock and relays inline — no thread hop. While a
 * Worker holds the lock (its ioctl in flight), other Workers write their requests into ring slots and wait; the
 * lock holder picks up every ready slot, sends them as the next, larger batch, writes each slot's outcome and
 * wakes the waiters. A waiter that finds the lock free after a timeout combines by itself, so nothing waits on a
 * Worker that went away.
 *
 * The binding table lives in the shared memory too, versioned: binding changes happen under the lock (so they
 * are barriers for every Worker), and each combiner reloads the table when the version moved.
 *
 * A SharedRelay is also a front end's sink: it has the `submit` / `drain` / `drainInto` of a relay sink (matched
 * structurally, so this layer needs nothing of the front ends'), so a vCPU Worker gives its own VT-d invalidation
 * queue or SMMUv3 command queue model a SharedRelay and serves its doorbell exits itself: the requests a doorbell
 * submits are copied, and its drain relays them as one {@linkcode SharedRelay.doorbellInto}.
 *
 * @module
 */
import { Errno } from "../uapi/errno.ts";
import { FORMATS } from "../compile/formats.ts";
import type { Binding, RelayQueue } from "./queue.ts";
import { DrainOutcome, type DrainReport } from "./outcome.ts";
import { requestFailure } from "./send.ts";
import { type PasidOrRid, type Request, validateRequest } from "../request/request.ts";

const SCOPES = ["all", "pasid", "range", "pasid-range"] as const;

/** Sizes of the shared region. */
export interface SharedRelayLayout {
  /** Request slots in the ring. */
  readonly slots: number;
  /** Bindings the shared table can hold. */
  readonly bindings: number;
}

// Int32 header: [0] lock, [1] binding version, [2] binding count, [3] combines, [4] remote requests relayed.
const H_LOCK = 0, H_VERSION = 1, H_COUNT = 2, H_COMBINES = 3, H_REMOTE = 4, HEADER = 8;
// Per slot, Int32: state, kind (0 invalidate, 1 sync), domain, scope, pasid, flags, outcome errno, ticket.
const S_STATE = 0, S_KIND = 1, S_DOMAIN = 2, S_SCOPE = 3, S_PASID = 4, S_FLAGS = 5, S_ERRNO = 6, S_TICKET = 7;
const SLOT_INTS = 8;
// Slot states.
const FREE = 0, WRITING = 1, READY = 2, TAKEN = 3, DONE = 4;
// Per binding, Int32: domain, pasid (-1 = rid), targetId, format, asid (-1 none), vdevId (-1 none), ats.
const B_INTS = 8;

/** Bytes of shared memory a layout needs. */
export function sharedRelayBytes(layout: SharedRelayLayout): number {
  return float64Offset(layout) + layout.slots * 2 * 8; // + two float64 per slot: firstPage, pages
}

function int32Count(layout: SharedRelayLayout): number {
  return HEADER + layout.slots * SLOT_INTS + layout.bindings * B_INTS;
}

function float64Offset(layout: SharedRelayLayout): number {
  return Math.ceil((int32Count(layout) * 4) / 8) * 8;
}

/** What one doorbell's requests came to, in order (waits carry whether everything before them succeeded). */
export interface DoorbellOutcome {
  /** Per request: 0 = done, else the errno its invalidation failed with (a failed wait: EIO). */
  readonly errnos: readonly number[];
  /** Whether this Worker combined (relayed inline) rather than handing its requests to another Worker. */
  readonly combined: boolean;
}

/**
 * A doorbell's outcome refilled in place by {@linkcode SharedRelay.doorbellInto}: the allocation-free form of
 * {@linkcode DoorbellOutcome}, valid until the next doorbell into it.
 */
export class SharedDoorbell {
  /** Requests of the doorbell. */
  count = 0;
  /** Whether this Worker combined (relayed inline). */
  combined = false;
  #errnos = new Int32Array(16);

  /** Request `i`'s outcome: 0 = done, else the errno its invalidation failed with (a failed wait: EIO). */
  errno(i: number): number {
    return this.#errnos[i];
  }

  /** Start a doorbell of `count` requests, all done until told otherwise. */
  reset(count: number): void {
    if (count > this.#errnos.length) this.#errnos = new Int32Array(Math.max(count, this.#errnos.length * 2));
    this.#errnos.fill(0, 0, count);
    this.count = count;
  }

  /** Record request `i`'s errno (the relay's job). */
  setErrno(i: number, errno: number): void {
    this.#errnos[i] = errno;
  }
}

/**
 * One Worker's handle on the shared relay.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { RelayQueue } from "./queue.ts";
 * import { ModelHost } from "../host/model.ts";
 * import { SharedRelay, sharedRelayBytes } from "./shared.ts";
 * const layout = { slots: 64, bindings: 16 };
 * const sab = new SharedArrayBuffer(sharedRelayBytes(layout));
 * const host = new ModelHost();
 * const t = host.createTarget("vtd-s1");
 * const relay = new SharedRelay(sab, layout, new RelayQueue(host));
 * relay.bind(1, "rid", { targetId: t, format: "vtd-s1" });
 * const out = relay.doorbell([{ op: "invalidate", domain: 1, scope: { kind: "all" } }, { op: "sync" }]);
 * assert.deepEqual(out.errnos, [0, 0]);
 * assert.equal(out.combined, true);
 * ```
 */
export class SharedRelay {
  readonly #i32: Int32Array;
  readonly #f64: Float64Array;
  readonly #slotBase: number;
  readonly #bindBase: number;
  #version = -1;
  #ticket = 0;
  // Reused by every doorbell, so that after warm-up one allocates nothing.
  readonly #drained = new DrainOutcome();
  readonly #own = new SharedDoorbell();
  readonly #taken: Int32Array;
  readonly #claimed: Int32Array;
  /** Per request of a combined batch, in submit order: its sequence number and where it came from. */
  #seqs = new Float64Array(64);
  /** >= 0: the index of one of this Worker's own requests; < 0: -(slot + 1). */
  #where = new Int32Array(64);
  /** The request objects ring slots are read into (the queue keeps none once submit returns). */
  readonly #slotRequests = {
    all: { op: "invalidate" as const, domain: 0, scope: { kind: "all" as const }, noPasid: false, leaf: false },
    pasid: {
      op: "invalidate" as const,
      domain: 0,
      scope: { kind: "pasid" as const, pasid: 0 },
      noPasid: false,
      leaf: false,
    },
    range: {
      op: "invalidate" as const,
      domain: 0,
      scope: { kind: "range" as const, firstPage: 0, pages: 1 },
      noPasid: false,
      leaf: false,
    },
    "pasid-range": {
      op: "invalidate" as const,
      domain: 0,
      scope: { kind: "pasid-range" as const, pasid: 0, firstPage: 0, pages: 1 },
      noPasid: false,
      leaf: false,
    },
  };
  readonly #sync = { op: "sync" as const };
  // The sink side (submit / drainInto): the requests submitted since the last drain, copied into pooled objects.
  readonly #sinkRequests: Request[] = [];
  #sinkCount = 0;
  /** The sequence number of the first request since the last drain, minus one. */
  #sinkBase = 0;
  readonly #sinkPool: SinkRequest[] = [];
  readonly #sinkOut = new SharedDoorbell();
  readonly #sinkOutcome = new DrainOutcome();
  #sinkIoctls = 0;
  #sinkEntries = 0;

  /** The relay side over `sab` (at least {@linkcode sharedRelayBytes}(`layout`) bytes): doorbells rung in it are submitted to `queue`. */
  constructor(sab: SharedArrayBuffer, readonly layout: SharedRelayLayout, readonly queue: RelayQueue) {
    if (sab.byteLength < sharedRelayBytes(layout)) throw new RangeError("shared buffer too small for the layout");
    this.#i32 = new Int32Array(sab, 0, int32Count(layout));
    this.#f64 = new Float64Array(sab, float64Offset(layout), layout.slots * 2);
    this.#slotBase = HEADER;
    this.#bindBase = HEADER + layout.slots * SLOT_INTS;
    this.#taken = new Int32Array(layout.slots);
    this.#claimed = new Int32Array(layout.slots);
  }

  /** Times a Worker combined, and requests relayed for other Workers, over all Workers. */
  get stats(): { combines: number; remoteRequests: number } {
    return { combines: Atomics.load(this.#i32, H_COMBINES), remoteRequests: Atomics.load(this.#i32, H_REMOTE) };
  }

  #tryLock(): boolean {
    return Atomics.compareExchange(this.#i32, H_LOCK, 0, 1) === 0;
  }

  #lock(): void {
    while (!this.#tryLock()) Atomics.wait(this.#i32, H_LOCK, 1, 1);
  }

  #unlock(): void {
    Atomics.store(this.#i32, H_LOCK, 0);
    Atomics.notify(this.#i32, H_LOCK, 1);
  }

  /** Add a binding to the shared table (a barrier for every Worker). */
  bind(domain: number, pasid: PasidOrRid, b: Binding): void {
    this.#lock();
    try {
      this.#syncBindings();
      // The format crosses Workers as its index in the one format table.
      if (!FORMATS.includes(b.format)) throw new TypeError(`unknown format ${b.format}`);
      this.queue.bind(domain, pasid, b);
      const n = Atomics.load(this.#i32, H_COUNT);
      if (n >= this.layout.bindings) throw new RangeError(`the shared binding table is full (${n})`);
      const at = this.#bindBase + n * B_INTS;
      const row = [
        domain,
        pasid === "rid" ? -1 : pasid,
        b.targetId,
        FORMATS.indexOf(b.format),
        b.asid ?? -1,
        b.vdevId ?? -1,
        b.ats ? 1 : 0,
      ];
      row.forEach((v, i) => Atomics.store(this.#i32, at + i, v));
      Atomics.store(this.#i32, H_COUNT, n + 1);
      this.#version = Atomics.add(this.#i32, H_VERSION, 1) + 1;
    } finally {
      this.#unlock();
    }
  }

  /** Remove every binding at (domain, pasid) from the shared table (a barrier for every Worker). */
  unbind(domain: number, pasid: PasidOrRid): void {
    this.#lock();
    try {
      this.#syncBindings();
      this.queue.unbind(domain, pasid);
      const p = pasid === "rid" ? -1 : pasid;
      const n = Atomics.load(this.#i32, H_COUNT);
      const kept: number[][] = [];
      for (let i = 0; i < n; i++) {
        const at = this.#bindBase + i * B_INTS;
        const row = Array.from({ length: B_INTS }, (_, k) => Atomics.load(this.#i32, at + k));
        if (!(row[0] === domain && row[1] === p)) kept.push(row);
      }
      kept.forEach((row, i) => row.forEach((v, k) => Atomics.store(this.#i32, this.#bindBase + i * B_INTS + k, v)));
      Atomics.store(this.#i32, H_COUNT, kept.length);
      this.#version = Atomics.add(this.#i32, H_VERSION, 1) + 1;
    } finally {
      this.#unlock();
    }
  }

  /** Under the lock: make the local queue's bindings match the shared table. */
  #syncBindings(): void {
    const version = Atomics.load(this.#i32, H_VERSION);
    if (version === this.#version) return;
    const n = Atomics.load(this.#i32, H_COUNT);
    const rows: number[][] = [];
    for (let i = 0; i < n; i++) {
      const at = this.#bindBase + i * B_INTS;
      rows.push(Array.from({ length: B_INTS }, (_, k) => Atomics.load(this.#i32, at + k)));
    }
    this.queue.resetBindings();
    for (const r of rows) {
      this.queue.bind(r[0], r[1] === -1 ? "rid" : r[1], {
        targetId: r[2],
        format: FORMATS[r[3]],
        ...(r[4] >= 0 ? { asid: r[4] } : {}),
        ...(r[5] >= 0 ? { vdevId: r[5] } : {}),
        ...(r[6] ? { ats: true } : {}),
      });
    }
    this.#version = version;
  }

  /**
   * Relay one doorbell's requests (invalidations and waits; binds go through {@linkcode SharedRelay.bind}).
   * Returns when every one of them is complete.
   */
  doorbell(requests: readonly Request[]): DoorbellOutcome {
    const out = this.doorbellInto(requests, this.#own);
    return { errnos: Array.from({ length: out.count }, (_, i) => out.errno(i)), combined: out.combined };
  }

  /** The same, refilling `out` in place: the allocation-free form for a vCPU's doorbell. */
  doorbellInto(requests: readonly Request[], out: SharedDoorbell): SharedDoorbell {
    return this.#doorbell(requests, requests.length, out);
  }

  /**
   * Queue a request for this Worker's next drain (the relay sink's `submit`): an invalidation or a wait, validated
   * and copied (the caller may reuse its object). Vendor hints are not carried (no Worker-to-Worker field holds
   * them; no kernel interface takes them). Returns the request's sequence number, ascending per handle.
   */
  submit(request: Request): number {
    if (request.op !== "invalidate" && request.op !== "sync") {
      throw new TypeError(`${request.op}: binds and unbinds go through SharedRelay.bind/unbind`);
    }
    validateRequest(request);
    const k = this.#sinkCount++;
    if (request.op === "sync") this.#sinkRequests[k] = this.#sync;
    else {
      if (k === this.#sinkPool.length) this.#sinkPool.push(new SinkRequest());
      const copy = this.#sinkPool[k];
      copy.fill(request);
      this.#sinkRequests[k] = copy.request;
    }
    return this.#sinkBase + k + 1;
  }

  /** Relay what was submitted since the last drain as one doorbell; a plain report (allocates; see drainInto). */
  drain(): DrainReport {
    return this.drainInto(this.#sinkOutcome).toReport();
  }

  /**
   * Relay what was submitted since the last drain as one doorbell (combining with other Workers' doorbells, or
   * handing them to the Worker whose ioctl is in flight) and refill `out`: the failed invalidations of this handle
   * and its waits. A wait is reported failed when anything relayed before it in the same host batch failed — its own
   * failed invalidation (`firstFailed`), or another Worker's in a combined batch (then `firstFailed` is the wait
   * itself). `ioctls` and `entries` are what this Worker's queue sent since its last drain (for other Workers'
   * requests too when it combined); `unrouted` is not known here (0: see each queue's telemetry).
   */
  drainInto(out: DrainOutcome): DrainOutcome {
    const n = this.#sinkCount, base = this.#sinkBase;
    const result = this.#doorbell(this.#sinkRequests, n, this.#sinkOut);
    this.#sinkCount = 0;
    this.#sinkBase = base + n;
    out.reset();
    const t = this.queue.telemetry;
    out.ioctls = t.ioctls - this.#sinkIoctls;
    out.entries = t.entriesOut - this.#sinkEntries;
    this.#sinkIoctls = t.ioctls;
    this.#sinkEntries = t.entriesOut;
    let firstFailed = 0, invalidations = 0;
    for (let k = 0; k < n; k++) {
      const seq = base + k + 1, errno = result.errno(k);
      if (this.#sinkRequests[k] === this.#sync) {
        out.addWait(seq, errno === 0 ? 0 : firstFailed !== 0 ? firstFailed : seq);
        continue;
      }
      invalidations++;
      if (errno !== 0) {
        out.failures.push(requestFailure(seq, errno, -1, -1, true));
        if (firstFailed === 0) firstFailed = seq;
      }
    }
    out.invalidations = invalidations;
    return out;
  }

  #doorbell(requests: readonly Request[], count: number, out: SharedDoorbell): SharedDoorbell {
    for (let k = 0; k < count; k++) {
      const op = requests[k].op;
      if (op !== "invalidate" && op !== "sync") {
        throw new TypeError(`${op}: binds and unbinds go through SharedRelay.bind/unbind`);
      }
    }
    out.reset(count);
    out.combined = true;
    if (this.#tryLock()) {
      this.#combine(requests, count, out);
      return out;
    }
    // An ioctl is in flight in another Worker: hand the requests over and wait.
    const claimed = this.#publish(requests, count);
    if (claimed === 0) {
      // The ring is full: wait for the lock and relay ourselves.
      this.#lock();
      this.#combine(requests, count, out);
      return out;
    }
    out.combined = false;
    // Wait for every slot of the doorbell, not only its last: a combiner scanning the ring may take a later slot
    // (the wait) in one pass and an earlier one (an invalidation it passed before it was READY) in its next, so the
    // last slot being DONE does not mean the ones before it were relayed.
    for (let k = 0; k < claimed;) {
      const at = this.#slotBase + this.#claimed[k] * SLOT_INTS + S_STATE;
      const state = Atomics.load(this.#i32, at);
      if (state === DONE) {
        k++;
        continue;
      }
      Atomics.wait(this.#i32, at, state, 2);
      if (Atomics.load(this.#i32, at) !== DONE && this.#tryLock()) {
        // The lock holder finished without our slots (or went away): combine ourselves; that takes our slots too.
        this.#combine(NONE, 0, null);
      }
    }
    for (let k = 0; k < claimed; k++) {
      const at = this.#slotBase + this.#claimed[k] * SLOT_INTS;
      out.setErrno(k, Atomics.load(this.#i32, at + S_ERRNO));
      Atomics.store(this.#i32, at + S_STATE, FREE);
    }
    return out;
  }

  /** Claim one ring slot per request (into #claimed) and write them; returns how many, or 0 when the ring is full. */
  #publish(requests: readonly Request[], count: number): number {
    const claimed = this.#claimed;
    let n = 0;
    for (let s = 0; s < this.layout.slots && n < count; s++) {
      if (Atomics.compareExchange(this.#i32, this.#slotBase + s * SLOT_INTS + S_STATE, FREE, WRITING) === FREE) {
        claimed[n++] = s;
      }
    }
    if (n < count) {
      for (let k = 0; k < n; k++) Atomics.store(this.#i32, this.#slotBase + claimed[k] * SLOT_INTS + S_STATE, FREE);
      return 0;
    }
    const ticket = ++this.#ticket;
    const i = this.#i32;
    for (let k = 0; k < n; k++) {
      const r = requests[k];
      const at = this.#slotBase + claimed[k] * SLOT_INTS;
      Atomics.store(i, at + S_TICKET, ticket * 1024 + k); // keeps one doorbell's requests in order
      if (r.op === "sync") {
        Atomics.store(i, at + S_KIND, 1);
      } else if (r.op === "invalidate") {
        const s = r.scope;
        Atomics.store(i, at + S_KIND, 0);
        Atomics.store(i, at + S_DOMAIN, r.domain);
        Atomics.store(i, at + S_SCOPE, SCOPES.indexOf(s.kind));
        Atomics.store(i, at + S_PASID, s.kind === "pasid" || s.kind === "pasid-range" ? s.pasid : 0);
        Atomics.store(i, at + S_FLAGS, (r.noPasid ? 1 : 0) | (r.leaf ? 2 : 0));
        this.#f64[claimed[k] * 2] = s.kind === "range" || s.kind === "pasid-range" ? s.firstPage : 0;
        this.#f64[claimed[k] * 2 + 1] = s.kind === "range" || s.kind === "pasid-range" ? s.pages : 0;
      }
    }
    // Ready in doorbell order, all at once, so a combiner never takes half a doorbell.
    for (let k = 0; k < n; k++) Atomics.store(i, this.#slotBase + claimed[k] * SLOT_INTS + S_STATE, READY);
    return n;
  }

  /** Slot `s`'s request, in the reused object of its kind. */
  #readSlot(s: number): Request {
    const at = this.#slotBase + s * SLOT_INTS;
    const i = this.#i32;
    if (Atomics.load(i, at + S_KIND) === 1) return this.#sync;
    const r = this.#slotRequests[SCOPES[Atomics.load(i, at + S_SCOPE)]];
    const flags = Atomics.load(i, at + S_FLAGS);
    r.domain = Atomics.load(i, at + S_DOMAIN);
    r.noPasid = (flags & 1) !== 0;
    r.leaf = (flags & 2) !== 0;
    const scope = r.scope;
    if (scope.kind === "pasid" || scope.kind === "pasid-range") scope.pasid = Atomics.load(i, at + S_PASID);
    if (scope.kind === "range" || scope.kind === "pasid-range") {
      scope.firstPage = this.#f64[s * 2];
      scope.pages = this.#f64[s * 2 + 1];
    }
    return r;
  }

  /** Note that the request with sequence number `seq` came from `where` (see #where). */
  #track(n: number, seq: number, where: number): void {
    if (n === this.#seqs.length) {
      const seqs = new Float64Array(n * 2), wheres = new Int32Array(n * 2);
      seqs.set(this.#seqs);
      wheres.set(this.#where);
      this.#seqs = seqs;
      this.#where = wheres;
    }
    this.#seqs[n] = seq;
    this.#where[n] = where;
  }

  /**
   * Holding the lock: relay `own` plus every ready slot, batch after batch, then unlock. Own errnos go to `out`
   * (null: no own requests).
   */
  #combine(own: readonly Request[], ownCount: number, out: SharedDoorbell | null): void {
    try {
      Atomics.add(this.#i32, H_COMBINES, 1);
      // The version check stays here, not in the (large, cold) reload: calling it only to compare allocated on every
      // combine (measured with the allocation probe).
      if (Atomics.load(this.#i32, H_VERSION) !== this.#version) this.#syncBindings();
      let first = true;
      const taken = this.#taken;
      for (;;) {
        let count = 0;
        for (let s = 0; s < this.layout.slots; s++) {
          const at = this.#slotBase + s * SLOT_INTS + S_STATE;
          // A plain load first: a compare-exchange on each of the ring's slots, twice per combine, cost more than the
          // rest of an uncontended doorbell.
          if (Atomics.load(this.#i32, at) === READY && Atomics.compareExchange(this.#i32, at, READY, TAKEN) === READY) {
            taken[count++] = s;
          }
        }
        this.#sortByTicket(count);
        const mine = first ? ownCount : 0;
        first = false;
        if (count === 0 && mine === 0) break;
        let n = 0;
        for (let k = 0; k < mine; k++) this.#track(n++, this.queue.submit(own[k]), k);
        for (let k = 0; k < count; k++) this.#track(n++, this.queue.submit(this.#readSlot(taken[k])), -(taken[k] + 1));
        const drained = this.queue.drainInto(this.#drained);
        Atomics.add(this.#i32, H_REMOTE, count);
        // Sequence numbers ascend in submit order, as do the failures and the waits: one walk matches them.
        const failures = drained.failures;
        let f = 0, w = 0;
        for (let k = 0; k < n; k++) {
          const seq = this.#seqs[k];
          while (f < failures.length && failures[f].seq < seq) f++;
          while (w < drained.waitCount && drained.waitSeq(w) < seq) w++;
          const errno = f < failures.length && failures[f].seq === seq
            ? failures[f].errno
            : w < drained.waitCount && drained.waitSeq(w) === seq && !drained.waitOk(w)
            ? EIO
            : 0;
          const where = this.#where[k];
          if (where >= 0) out?.setErrno(where, errno);
          else {
            const at = this.#slotBase + (-where - 1) * SLOT_INTS;
            Atomics.store(this.#i32, at + S_ERRNO, errno);
            Atomics.store(this.#i32, at + S_STATE, DONE);
            Atomics.notify(this.#i32, at + S_STATE);
          }
        }
      }
    } finally {
      this.#unlock();
    }
  }

  /** Sort #taken[0, count) by slot ticket (insertion sort: a few slots, and no comparator closure). */
  #sortByTicket(count: number): void {
    const taken = this.#taken, i32 = this.#i32, base = this.#slotBase;
    for (let a = 1; a < count; a++) {
      const slot = taken[a], ticket = Atomics.load(i32, base + slot * SLOT_INTS + S_TICKET);
      let b = a - 1;
      while (b >= 0 && Atomics.load(i32, base + taken[b] * SLOT_INTS + S_TICKET) > ticket) {
        taken[b + 1] = taken[b];
        b--;
      }
      taken[b + 1] = slot;
    }
  }
}

const NONE: readonly Request[] = [];

/** A submitted request's copy (the sink side): one object per scope kind, refilled, so a copy allocates nothing. */
class SinkRequest {
  readonly all = { op: "invalidate" as const, domain: 0, scope: { kind: "all" as const }, noPasid: false, leaf: false };
  readonly pasid = {
    op: "invalidate" as const,
    domain: 0,
    scope: { kind: "pasid" as const, pasid: 0 },
    noPasid: false,
    leaf: false,
  };
  readonly range = {
    op: "invalidate" as const,
    domain: 0,
    scope: { kind: "range" as const, firstPage: 0, pages: 1 },
    noPasid: false,
    leaf: false,
  };
  readonly pasidRange = {
    op: "invalidate" as const,
    domain: 0,
    scope: { kind: "pasid-range" as const, pasid: 0, firstPage: 0, pages: 1 },
    noPasid: false,
    leaf: false,
  };
  /** The filled copy. */
  request: Request = this.all;

  fill(r: Request & { op: "invalidate" }): void {
    const s = r.scope;
    const c = s.kind === "all"
      ? this.all
      : s.kind === "pasid"
      ? this.pasid
      : s.kind === "range"
      ? this.range
      : this.pasidRange;
    c.domain = r.domain;
    c.noPasid = r.noPasid === true;
    c.leaf = r.leaf === true;
    if (s.kind === "pasid" || s.kind === "pasid-range") (c.scope as { pasid: number }).pasid = s.pasid;
    if (s.kind === "range" || s.kind === "pasid-range") {
      (c.scope as { firstPage: number; pages: number }).firstPage = s.firstPage;
      (c.scope as { firstPage: number; pages: number }).pages = s.pages;
    }
    this.request = c;
  }
}
/** A wait after a failure. */
const { EIO } = Errno.values;
