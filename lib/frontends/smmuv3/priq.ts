/**
 * The guest side of PRI on SMMUv3: a register-level PRI queue (PRIQ_BASE / PRIQ_PROD / PRIQ_CONS) receiving host
 * page faults as 16-byte PRI records (layout as the Linux driver reads them, `arm-smmu-v3.h` `PRIQ_0_*`/`PRIQ_1_*`),
 * and the matching of the guest's CMD_PRI_RESP (decoded by the command queue) back to the host fault's cookie.
 *
 * Record: dword 0 = StreamID [31:0], SubstreamID [51:32], PRIV 58, EXEC 59, READ 60, WRITE 61, LAST 62, SSV 63;
 * dword 1 = PRG index [8:0], page address [63:12]. CMD_PRI_RESP codes: 0 deny, 1 fail, 2 success.
 *
 * Guest answers are hostile input (see `PageRequestTracker`); a full queue toggles PROD.OVFLG and answers the host
 * INVALID at once; an unanswered group is answered INVALID at its deadline.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { SmmuPriQueue } from "./priq.ts";
 * const ram = new Uint8Array(1 << 16);
 * const memory = { read: (a: number, n: number) => ram.slice(a, a + n), write: (a: number, b: Uint8Array) => ram.set(b, a) };
 * const answers: [number, number][] = [];
 * const priq = new SmmuPriQueue(memory, (cookie, code) => answers.push([cookie, code]));
 * priq.writeBase(0x3000 | 3); // 8 entries
 * priq.deliver({ rid: 0x88, pasid: 5, page: 0x7f000, read: true, write: false, exec: false, priv: false, lastInGroup: true, grpid: 3, cookie: 77 });
 * assert.equal(priq.prod, 1);
 * assert.equal(priq.guestResponse({ op: "pri-resp", sid: 0x88, ssid: 5, grpid: 3, resp: 2 }), undefined); // accepted
 * assert.deepEqual(answers, [[77, 0]]); // the guest's success (2) is the host's SUCCESS (0)
 * ```
 *
 * @module
 */
import { writePageAddress } from "../../uapi/struct.ts";
import type { GuestMemory } from "../../memory/guest_memory.ts";
import type { HostPageFault } from "../vtd/prq.ts";
import type { SmmuCommand } from "./commands.ts";
import { SmmuOutputQueue } from "./outq.ts";
import {
  HOST_RESPONSE,
  type HostResponder,
  type PageRequestState,
  type PageRequestTelemetry,
  PageRequestTracker,
  type RefusedResponse,
} from "../page_requests.ts";
import type { SmmuOutputQueueState } from "./outq.ts";
import { pageRequestStateFromJson } from "../vtd/prq.ts";

/** The PRI queue in a snapshot: registers and the groups the guest may still answer. */
export interface SmmuPriqState extends SmmuOutputQueueState {
  /** Groups answered to the old host before the snapshot. */
  readonly groups: PageRequestState;
}

/** CMD_PRI_RESP's success code. */
const PRI_RESP_SUCC = 2;

/** One guest PRI queue. */
export class SmmuPriQueue extends SmmuOutputQueue {
  readonly #groups: PageRequestTracker;

  /**
   * A PRIQ writing 16-byte records into `memory` (guest RAM); `respond` answers the host's faults by cookie.
   * `hooks.interrupt` is the SMMU's PRI queue interrupt, raised after each record written and each full-queue drop;
   * `hooks.now` is the clock, in ms, for group deadlines (default `Date.now`).
   */
  constructor(
    memory: GuestMemory,
    readonly respond: HostResponder,
    readonly hooks: { interrupt?(): void; now?(): number } = {},
    /** How long the guest has to answer, ms (default 10 s). */
    readonly timeoutMs = 10_000,
    /** The host response for a group the guest never answers (default INVALID). */
    timeoutCode = 1,
  ) {
    super(memory, 16);
    this.#groups = new PageRequestTracker(respond, () => this.hooks.now?.() ?? Date.now(), timeoutMs, timeoutCode);
  }

  /** Page requests delivered, groups answered, refused, timed out and dropped, and the timeout policy. */
  get telemetry(): PageRequestTelemetry {
    return this.#groups.telemetry;
  }

  #key(sid: number, ssid: number | undefined, grpid: number): string {
    return `${sid}/${ssid ?? "-"}/${grpid}`;
  }

  /** Deliver a host fault (`rid` is the StreamID). False when the queue was full (answered INVALID, OVFLG). */
  deliver(f: HostPageFault): boolean {
    const e = new Uint8Array(16);
    const v = new DataView(e.buffer);
    v.setUint32(0, f.rid >>> 0, true);
    v.setUint32(
      4,
      (((f.pasid ?? 0) & 0xfffff) | (f.priv ? 1 << 26 : 0) | (f.exec ? 1 << 27 : 0) | (f.read ? 1 << 28 : 0) |
        (f.write ? 1 << 29 : 0) | (f.lastInGroup ? 1 << 30 : 0) | (f.pasid !== undefined ? 1 << 31 : 0)) >>> 0,
      true,
    );
    writePageAddress(v, 8, f.page, f.grpid & 0x1ff);
    if (!this.writeRecord(e)) {
      this.raiseOverflow();
      this.#groups.overflow(f.lastInGroup ? f.cookie : undefined);
      this.hooks.interrupt?.();
      return false;
    }
    this.#groups.telemetry.delivered++;
    if (f.lastInGroup) this.#groups.open(this.#key(f.rid, f.pasid, f.grpid), f.cookie, `${f.rid}/${f.pasid ?? "-"}`);
    this.hooks.interrupt?.();
    return true;
  }

  /** The guest's CMD_PRI_RESP. Undefined, or why it was refused. */
  guestResponse(c: SmmuCommand & { op: "pri-resp" }): RefusedResponse | undefined {
    return this.#groups.answer(this.#key(c.sid, c.ssid, c.grpid), c.resp, PRI_RESP_SUCC);
  }

  /** The substream was unbound: its pending groups are answered INVALID; later answers for them are refused. */
  pasidUnbound(sid: number, ssid: number): void {
    this.#groups.unbound(`${sid}/${ssid}`);
  }

  /** Before a snapshot: answer the host for every unanswered group (default SUCCESS), keeping them for the guest. */
  quiesce(code: number = HOST_RESPONSE.SUCCESS): number {
    return this.#groups.quiesce(code);
  }

  /** Registers and carried groups ({@linkcode SmmuPriQueue.quiesce} first). */
  saveState(): SmmuPriqState {
    return { ...this.saveQueueState(), groups: this.#groups.state() };
  }

  /** Check a snapshot's state without changing anything; the function returned sets it. */
  prepareRestore(json: unknown, path = "smmuPriq"): () => void {
    const registers = this.prepareQueueRestore(json, path);
    const groups = pageRequestStateFromJson(
      (json as Record<string, unknown>).groups,
      `${path}.groups`,
      this.#groups.timeoutMs,
    );
    return () => {
      registers();
      this.#groups.restoreState(groups);
    };
  }

  /** Answer INVALID for every group whose deadline passed. */
  expire(now?: number): number {
    return this.#groups.expire(now);
  }

  /** Groups delivered (their last request written) that the guest has not answered yet. */
  get pending(): number {
    return this.#groups.pending;
  }
}
