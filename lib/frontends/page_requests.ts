/**
 * Page-request group bookkeeping shared by the guest-side fault queues (VT-d PRQ, SMMUv3 PRIQ): which host groups
 * wait for the guest, their deadlines, and why a guest answer is refused. Guest answers are hostile input: one for
 * no pending group, a second one, or one after the PASID was unbound is refused — never forwarded to the host.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { PageRequestTracker } from "./page_requests.ts";
 * const sent: [number, number][] = [];
 * const t = new PageRequestTracker((cookie, code) => sent.push([cookie, code]), () => 0, 1000);
 * t.open("10/5/3", 77);
 * assert.equal(t.answer("10/5/3", 0), undefined);
 * assert.equal(t.answer("10/5/3", 0), "already-answered");
 * assert.deepEqual(sent, [[77, 0]]);
 * ```
 *
 * @module
 */

/** Host page response codes (`enum iommufd_page_response_code`). */
export const HOST_RESPONSE = { SUCCESS: 0, INVALID: 1 } as const;

/** Where answers to the host go (an iommufd fault queue's `respond`). */
export type HostResponder = (cookie: number, code: number) => void;

/** Why a guest response was refused. */
export type RefusedResponse = "no-such-group" | "already-answered" | "pasid-unbound";

/** Counters, and the timeout policy in force. */
export interface PageRequestTelemetry {
  /** How long the guest has to answer a group, ms. */
  readonly timeoutMs: number;
  /** The response code sent to the host for a group the guest did not answer in time (`HOST_RESPONSE`). */
  readonly timeoutCode: number;
  /** Page requests written to the guest's queue. */
  delivered: number;
  /** Groups the guest answered (its answer forwarded to the host). */
  answered: number;
  /** Guest answers refused: no such pending group, already answered, or its PASID was unbound. */
  refused: number;
  /** Groups answered for the guest with `timeoutCode` because their time ran out. */
  timedOut: number;
  /** Requests dropped because the guest's queue was full (answered INVALID at once). */
  overflows: number;

  /** Requests that could not be written to the guest's queue (not guest RAM), answered at once. */
  undeliverable: number;
  /**
   * Groups answered to the host before a snapshot ({@linkcode PageRequestTracker.quiesce}): the guest had them and
   * may still answer, but the host that asked is going away.
   */
  quiesced: number;
  /** Guest answers to such groups (before or after a restore): accepted, not forwarded (the host was answered). */
  lateAnswers: number;
}

/** A group the old host was answered for before a snapshot: the guest may still answer it until its deadline. */
export interface CarriedGroup {
  /** The queue model's key (requester/PASID/group). */
  readonly key: string;
  /** Its PASID group, for unbinds. */
  readonly pasidKey: string;
  /** What was left of its deadline when the snapshot was taken, ms. */
  readonly remainingMs: number;
}

/** A tracker's part of a snapshot: the groups the guest may still answer. Host cookies are never in it. */
export interface PageRequestState {
  /** Groups quiesced (answered to the old host) that the guest has not answered yet. */
  readonly carried: readonly CarriedGroup[];
}

/** Keys remembered for the refusal reason; older ones are forgotten (the answer is "no-such-group" then). */
const REMEMBERED = 4096;

/** Groups waiting for the guest, by a key the queue model builds (requester/PASID/group). */
export class PageRequestTracker {
  /** Counters and the timeout policy, readable at any time. */
  readonly telemetry: PageRequestTelemetry;
  readonly #pending = new Map<string, { cookie: number; deadline: number; pasidKey: string }>();
  /** Groups answered to the host already (before a snapshot) that the guest still holds. */
  readonly #carried = new Map<string, { deadline: number; pasidKey: string }>();
  readonly #answered = new Set<string>();
  readonly #unbound = new Set<string>();

  /** `respond` answers the host; `now` is the clock deadlines are measured on (ms). */
  constructor(
    readonly respond: HostResponder,
    readonly now: () => number,
    /** How long the guest has to answer, ms. */
    readonly timeoutMs: number,
    /** What the host is told when the guest stays silent (default INVALID: the device gives up on the page). */
    readonly timeoutCode: number = HOST_RESPONSE.INVALID,
  ) {
    this.telemetry = {
      timeoutMs,
      timeoutCode,
      delivered: 0,
      answered: 0,
      refused: 0,
      timedOut: 0,
      overflows: 0,
      undeliverable: 0,
      quiesced: 0,
      lateAnswers: 0,
    };
  }

  #remember(set: Set<string>, key: string): void {
    set.delete(key);
    set.add(key);
    if (set.size > REMEMBERED) set.delete(set.values().next().value!);
  }

  /** A group's last request reached the guest: it now waits for an answer. `pasidKey` groups it for unbinds. */
  open(key: string, cookie: number, pasidKey = ""): void {
    // A new group under a key still pending (the device reused its group index): the old one is not left hanging.
    const stale = this.#pending.get(key);
    if (stale) this.respond(stale.cookie, HOST_RESPONSE.INVALID);
    this.#answered.delete(key);
    this.#unbound.delete(key);
    this.#pending.set(key, { cookie, deadline: this.now() + this.timeoutMs, pasidKey });
  }

  /** The guest answered group `key`; `success` → SUCCESS, anything else INVALID. Undefined, or why it was refused. */
  answer(key: string, guestCode: number, success = 0): RefusedResponse | undefined {
    const p = this.#pending.get(key);
    if (!p && this.#carried.delete(key)) {
      // Its host was answered before a snapshot: the guest's answer is taken, and goes nowhere.
      this.#remember(this.#answered, key);
      this.telemetry.lateAnswers++;
      return undefined;
    }
    if (!p) {
      this.telemetry.refused++;
      return this.#unbound.has(key) ? "pasid-unbound" : this.#answered.has(key) ? "already-answered" : "no-such-group";
    }
    this.#pending.delete(key);
    this.#remember(this.#answered, key);
    this.respond(p.cookie, guestCode === success ? HOST_RESPONSE.SUCCESS : HOST_RESPONSE.INVALID);
    this.telemetry.answered++;
    return undefined;
  }

  /**
   * The queue was full (or, `full` false, not writable): the host is answered INVALID at once (iommu-relay's choice:
   * the device is not stuck).
   */
  overflow(cookie: number | undefined, full = true): void {
    if (full) this.telemetry.overflows++;
    if (cookie !== undefined) this.respond(cookie, HOST_RESPONSE.INVALID);
  }

  /** Whether group `key` waits for the guest. */
  isPending(key: string): boolean {
    return this.#pending.has(key);
  }

  /** The PASID was unbound: its pending groups are answered INVALID now; later guest answers are refused. */
  unbound(pasidKey: string): void {
    for (const [key, c] of this.#carried) {
      if (c.pasidKey !== pasidKey) continue;
      this.#carried.delete(key);
      this.#remember(this.#unbound, key);
    }
    for (const [key, p] of this.#pending) {
      if (p.pasidKey !== pasidKey) continue;
      this.#pending.delete(key);
      this.#remember(this.#unbound, key);
      this.respond(p.cookie, HOST_RESPONSE.INVALID);
    }
  }

  /** Answer INVALID for every group whose deadline passed. Returns how many. */
  expire(now: number = this.now()): number {
    for (const [key, c] of this.#carried) {
      // Answered to its host already: past its deadline the guest's answer is simply no longer expected.
      if (c.deadline <= now) this.#carried.delete(key);
    }
    let n = 0;
    for (const [key, p] of this.#pending) {
      if (p.deadline > now) continue;
      this.#pending.delete(key);
      this.#remember(this.#answered, key);
      this.respond(p.cookie, this.timeoutCode);
      this.telemetry.timedOut++;
      n++;
    }
    return n;
  }

  /** Groups waiting for the guest. */
  get pending(): number {
    return this.#pending.size;
  }

  /** Groups answered to an old host that the guest may still answer (carried across a snapshot). */
  get carried(): number {
    return this.#carried.size;
  }

  /**
   * Before a snapshot: answer every group still waiting for the guest to the host now, with `code` (default
   * SUCCESS: the device retries, and a page that is still not there faults again — to the new host, which delivers
   * it anew), and keep the groups so that the guest's answer, which may come after the restore, is accepted rather
   * than refused as hostile. Returns how many were answered.
   */
  quiesce(code: number = HOST_RESPONSE.SUCCESS): number {
    let n = 0;
    for (const [key, p] of this.#pending) {
      this.#pending.delete(key);
      this.#carried.set(key, { deadline: p.deadline, pasidKey: p.pasidKey });
      this.respond(p.cookie, code);
      this.telemetry.quiesced++;
      n++;
    }
    return n;
  }

  /** The snapshot part; groups still waiting for the host's answer must be quiesced first (their cookies die). */
  state(): PageRequestState {
    if (this.#pending.size) throw new Error(`${this.#pending.size} page request groups wait: quiesce first`);
    const now = this.now();
    return {
      carried: [...this.#carried].map(([key, c]) => ({
        key,
        pasidKey: c.pasidKey,
        remainingMs: Math.max(0, c.deadline - now),
      })),
    };
  }

  /** Take a snapshot's carried groups (their deadlines restart from what was left); nothing is answered. */
  restoreState(state: PageRequestState): void {
    const now = this.now();
    this.#carried.clear();
    for (const c of state.carried) this.#carried.set(c.key, { deadline: now + c.remainingMs, pasidKey: c.pasidKey });
  }
}
