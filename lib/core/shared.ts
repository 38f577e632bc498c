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
 * @module
 */
import type { Format } from "../backend/backend.ts";
import type { Binding, DrainReport, RelayQueue } from "./queue.ts";
import type { InvalidateRequest, PasidOrRid, Request } from "./request.ts";

const FORMATS: readonly Format[] = ["vtd-s1", "smmuv3", "selftest", "selftest-viommu"];
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
 * One Worker's handle on the shared relay.
 *
 * @example
 * ```ts
 * import { RelayQueue } from "./queue.ts";
 * import { ModelHost } from "../model/host.ts";
 * import { SharedRelay, sharedRelayBytes } from "./shared.ts";
 * const layout = { slots: 64, bindings: 16 };
 * const sab = new SharedArrayBuffer(sharedRelayBytes(layout));
 * const host = new ModelHost();
 * const t = host.createTarget("vtd-s1");
 * const relay = new SharedRelay(sab, layout, new RelayQueue(host));
 * relay.bind(1, "rid", { targetId: t, format: "vtd-s1" });
 * const out = relay.doorbell([{ op: "invalidate", domain: 1, scope: { kind: "all" } }, { op: "sync" }]);
 * console.log(out.errnos, out.combined); // [ 0, 0 ] true
 * ```
 */
export class SharedRelay {
  readonly #i32: Int32Array;
  readonly #f64: Float64Array;
  readonly #slotBase: number;
  readonly #bindBase: number;
  #version = -1;
  #ticket = 0;

  constructor(sab: SharedArrayBuffer, readonly layout: SharedRelayLayout, readonly queue: RelayQueue) {
    if (sab.byteLength < sharedRelayBytes(layout)) throw new RangeError("shared buffer too small for the layout");
    this.#i32 = new Int32Array(sab, 0, int32Count(layout));
    this.#f64 = new Float64Array(sab, float64Offset(layout), layout.slots * 2);
    this.#slotBase = HEADER;
    this.#bindBase = HEADER + layout.slots * SLOT_INTS;
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
    if (this.#tryLock()) return { errnos: this.#combine(requests), combined: true };
    // An ioctl is in flight in another Worker: hand the requests over and wait.
    const slots = this.#publish(requests);
    if (!slots) {
      // The ring is full: wait for the lock and relay ourselves.
      this.#lock();
      return { errnos: this.#combine(requests), combined: true };
    }
    const last = this.#slotBase + slots[slots.length - 1] * SLOT_INTS + S_STATE;
    for (;;) {
      if (Atomics.load(this.#i32, last) === DONE) break;
      Atomics.wait(this.#i32, last, Atomics.load(this.#i32, last), 2);
      if (Atomics.load(this.#i32, last) !== DONE && this.#tryLock()) {
        // The lock holder finished without our slots (or went away): combine ourselves; that takes our slots too.
        this.#combine([]);
      }
    }
    const errnos = slots.map((s) => Atomics.load(this.#i32, this.#slotBase + s * SLOT_INTS + S_ERRNO));
    for (const s of slots) Atomics.store(this.#i32, this.#slotBase + s * SLOT_INTS + S_STATE, FREE);
    return { errnos, combined: false };
  }

  #publish(requests: readonly Request[]): number[] | undefined {
    const claimed: number[] = [];
    for (let s = 0; s < this.layout.slots && claimed.length < requests.length; s++) {
      if (Atomics.compareExchange(this.#i32, this.#slotBase + s * SLOT_INTS + S_STATE, FREE, WRITING) === FREE) {
        claimed.push(s);
      }
    }
    if (claimed.length < requests.length) {
      for (const s of claimed) Atomics.store(this.#i32, this.#slotBase + s * SLOT_INTS + S_STATE, FREE);
      return undefined;
    }
    const ticket = ++this.#ticket;
    requests.forEach((r, k) => {
      const at = this.#slotBase + claimed[k] * SLOT_INTS;
      const i = this.#i32;
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
      } else {
        throw new TypeError(`${r.op}: binds and unbinds go through SharedRelay.bind/unbind`);
      }
    });
    // Ready in doorbell order, all at once, so a combiner never takes half a doorbell.
    for (const s of claimed) Atomics.store(this.#i32, this.#slotBase + s * SLOT_INTS + S_STATE, READY);
    return claimed;
  }

  #readSlot(s: number): Request {
    const at = this.#slotBase + s * SLOT_INTS;
    const i = this.#i32;
    if (Atomics.load(i, at + S_KIND) === 1) return { op: "sync" };
    const kind = SCOPES[Atomics.load(i, at + S_SCOPE)];
    const pasid = Atomics.load(i, at + S_PASID);
    const firstPage = this.#f64[s * 2], pages = this.#f64[s * 2 + 1];
    const scope = kind === "all"
      ? { kind }
      : kind === "pasid"
      ? { kind, pasid }
      : kind === "range"
      ? { kind, firstPage, pages }
      : { kind, pasid, firstPage, pages };
    const flags = Atomics.load(i, at + S_FLAGS);
    return {
      op: "invalidate",
      domain: Atomics.load(i, at + S_DOMAIN),
      scope,
      noPasid: (flags & 1) !== 0,
      leaf: (flags & 2) !== 0,
    } as InvalidateRequest;
  }

  /** Holding the lock: relay `own` plus every ready slot, batch after batch, then unlock. Returns own errnos. */
  #combine(own: readonly Request[]): number[] {
    let ownErrnos: number[] = [];
    try {
      Atomics.add(this.#i32, H_COMBINES, 1);
      this.#syncBindings();
      let first = true;
      for (;;) {
        const taken: number[] = [];
        for (let s = 0; s < this.layout.slots; s++) {
          const at = this.#slotBase + s * SLOT_INTS + S_STATE;
          if (Atomics.compareExchange(this.#i32, at, READY, TAKEN) === READY) taken.push(s);
        }
        taken.sort((a, b) =>
          Atomics.load(this.#i32, this.#slotBase + a * SLOT_INTS + S_TICKET) -
          Atomics.load(this.#i32, this.#slotBase + b * SLOT_INTS + S_TICKET)
        );
        const mine = first ? own : [];
        first = false;
        if (taken.length === 0 && mine.length === 0) break;
        const seqs = new Map<number, { slot?: number; own?: number }>();
        mine.forEach((r, k) => seqs.set(this.queue.submit(r), { own: k }));
        for (const s of taken) seqs.set(this.queue.submit(this.#readSlot(s)), { slot: s });
        const report = this.queue.drain();
        Atomics.add(this.#i32, H_REMOTE, taken.length);
        const errnos = outcome(report, [...seqs.keys()]);
        ownErrnos = mine.map(() => 0);
        [...seqs.values()].forEach((where, k) => {
          if (where.own !== undefined) ownErrnos[where.own] = errnos[k];
          else {
            const at = this.#slotBase + where.slot! * SLOT_INTS;
            Atomics.store(this.#i32, at + S_ERRNO, errnos[k]);
            Atomics.store(this.#i32, at + S_STATE, DONE);
            Atomics.notify(this.#i32, at + S_STATE);
          }
        });
      }
    } finally {
      this.#unlock();
    }
    return ownErrnos;
  }
}

/** Per submitted sequence number: 0, or the errno of its failure (a wait after a failure: EIO). */
function outcome(report: DrainReport, seqs: number[]): number[] {
  const failed = new Map(report.failures.map((f) => [f.seq, f.errno]));
  const waits = new Map(report.waits.map((w) => [w.seq, w.ok]));
  return seqs.map((seq) => failed.get(seq) ?? (waits.get(seq) === false ? 5 : 0));
}
