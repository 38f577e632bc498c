/**
 * The guest side of an emulated SMMUv3 event queue (EVTQ_BASE / EVTQ_PROD / EVTQ_CONS): the VMM posts 32-byte event
 * records — from the host's vEVENTQ — into guest memory at PROD, and the guest consumes them by moving CONS. When
 * the queue is full, or the host itself lost events, the model toggles PROD.OVFLG, the architected way to tell the
 * guest that events were lost (SMMUv3 7.4), and counts them; it never writes past CONS.
 *
 * Record layout (SMMUv3 7.3): dword 0 = event type [7:0], SSV [11], SubstreamID [31:12], StreamID [63:32]; the other
 * dwords are type-specific. From an SMMUv3 vEVENTQ the kernel hands over the record with the StreamID already
 * replaced by the virtual one; the selftest's vEVENT carries only a virtual id, which
 * {@linkcode selftestEventRecord} turns into an F_TRANSLATION record for that StreamID.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { SmmuEventQueue, selftestEventRecord } from "./evtq.ts";
 * const ram = new Uint8Array(1 << 16);
 * const memory = { read: (a: number, n: number) => ram.slice(a, a + n), write: (a: number, b: Uint8Array) => ram.set(b, a) };
 * const q = new SmmuEventQueue(memory);
 * q.writeBase(0x1000 | 2); // 4 entries at 0x1000
 * q.post(selftestEventRecord(0x88));
 * assert.equal(q.prod, 1);
 * assert.equal(new DataView(ram.buffer).getUint32(0x1004, true), 0x88); // StreamID, dword 0 bits 63:32
 * ```
 *
 * @module
 */
import { writePageAddress } from "../../uapi/struct.ts";
import type { GuestMemory } from "../../memory/guest_memory.ts";
import { SmmuOutputQueue } from "./outq.ts";
import type { HostPageFault } from "../vtd/prq.ts";
import type { SmmuCommand } from "./commands.ts";
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
import { SnapshotFields as F } from "../../device/snapshot.ts";

/** The event queue in a snapshot: registers, the last STAG and, in stall mode, the stalls the guest may answer. */
export interface SmmuEvtqState extends SmmuOutputQueueState {
  /** The last stall tag given out. */
  readonly stag: number;
  /** Stalls answered to the old host before the snapshot (stall mode only). */
  readonly stalls?: PageRequestState;
}

/** Event types iommu-relay writes (SMMUv3 Table 7-3). */
export const SMMU_EVENT = { F_TRANSLATION: 0x10, F_PERMISSION: 0x13 } as const;

/** Counters of an {@linkcode SmmuEventQueue}. */
export interface EvtqTelemetry {
  /** Records written into the guest's queue. */
  posted: number;
  /** Records not written: the guest queue was full, or the host had lost them. */
  lost: number;
  /** OVFLG toggles. */
  overflows: number;
}

/** One guest EVTQ. */
export class SmmuEventQueue extends SmmuOutputQueue {
  /** Records posted and lost, and overflows signalled. */
  readonly telemetry: EvtqTelemetry = { posted: 0, lost: 0, overflows: 0 };

  #stalls?: PageRequestTracker;
  #stag = 0;

  /**
   * An EVTQ writing 32-byte records into `memory` (guest RAM). `hooks.interrupt` is the SMMU's event queue interrupt,
   * raised after each record written and each overflow signalled; `hooks.now` is the clock, in ms, for stall
   * deadlines (default `Date.now`).
   */
  constructor(memory: GuestMemory, readonly hooks: { interrupt?(): void; now?(): number } = {}) {
    super(memory, 32);
  }

  /**
   * Stall mode (the SMMUv3 way to fault recoverably without PRI): host faults become stalled F_TRANSLATION
   * records with a STAG, which the guest answers with CMD_RESUME (RETRY → the host's SUCCESS, TERMINATE or ABORT →
   * INVALID). Unknown, double and post-unbind answers are refused; silence is answered INVALID after `timeoutMs`.
   */
  enableStalls(respond: HostResponder, timeoutMs = 10_000, timeoutCode = 1): void {
    this.#stalls = new PageRequestTracker(respond, () => this.hooks.now?.() ?? Date.now(), timeoutMs, timeoutCode);
  }

  /** Stall-mode counters (undefined before {@linkcode SmmuEventQueue.enableStalls}). */
  get stallTelemetry(): PageRequestTelemetry | undefined {
    return this.#stalls?.telemetry;
  }

  /** Post a host fault as a stalled event (`rid` is the StreamID). False when not written (answered INVALID). */
  postStall(f: HostPageFault): boolean {
    const stalls = this.#stalls;
    if (!stalls) throw new Error("stall mode is off: call enableStalls first");
    const stag = this.#stag = (this.#stag + 1) & 0xffff;
    const r = new Uint8Array(32);
    const v = new DataView(r.buffer);
    v.setUint32(
      0,
      SMMU_EVENT.F_TRANSLATION | (f.pasid !== undefined ? 1 << 11 : 0) | (((f.pasid ?? 0) & 0xfffff) << 12),
      true,
    );
    v.setUint32(4, f.rid >>> 0, true);
    // dword 1: STAG [15:0], Stall [31], PnU [32], InD [34], RnW [35] (1 = read)
    v.setUint32(8, (stag | (1 << 31)) >>> 0, true);
    v.setUint32(12, (f.priv ? 1 : 0) | (f.exec ? 4 : 0) | (f.write ? 0 : 8), true);
    writePageAddress(v, 16, f.page);
    if (!this.post(r)) {
      stalls.overflow(f.cookie);
      return false;
    }
    stalls.telemetry.delivered++;
    stalls.open(`${f.rid}/${stag}`, f.cookie, `${f.rid}/${f.pasid ?? "-"}`);
    return true;
  }

  /** The guest's CMD_RESUME (RESP 1 = RETRY). Undefined, or why it was refused. */
  guestResume(c: SmmuCommand & { op: "resume" }): RefusedResponse | undefined {
    if (!this.#stalls) return "no-such-group";
    return this.#stalls.answer(`${c.sid}/${c.stag}`, c.resp, 1);
  }

  /** The substream was unbound: its stalled transactions are terminated; later resumes are refused. */
  pasidUnbound(sid: number, ssid: number): void {
    this.#stalls?.unbound(`${sid}/${ssid}`);
  }

  /** Before a snapshot: answer the host for every stall the guest has not resumed (default SUCCESS: retry). */
  quiesce(code: number = HOST_RESPONSE.SUCCESS): number {
    return this.#stalls?.quiesce(code) ?? 0;
  }

  /** Registers, STAG and carried stalls ({@linkcode SmmuEventQueue.quiesce} first). */
  saveState(): SmmuEvtqState {
    return { ...this.saveQueueState(), stag: this.#stag, ...(this.#stalls ? { stalls: this.#stalls.state() } : {}) };
  }

  /** Check a snapshot's state without changing anything; the function returned sets it. Stalls need stall mode on. */
  prepareRestore(json: unknown, path = "smmuEvtq"): () => void {
    const registers = this.prepareQueueRestore(json, path);
    const o = json as Record<string, unknown>;
    const stag = F.u32(o.stag, `${path}.stag`);
    if (stag > 0xffff) F.malformed(`${path}.stag`, "a 16-bit stall tag");
    if (o.stalls !== undefined && !this.#stalls) {
      F.malformed(`${path}.stalls`, "a queue with stall mode on (enableStalls)");
    }
    const stalls = o.stalls === undefined
      ? undefined
      : pageRequestStateFromJson(o.stalls, `${path}.stalls`, this.#stalls!.timeoutMs);
    return () => {
      registers();
      this.#stag = stag;
      if (stalls) this.#stalls!.restoreState(stalls);
    };
  }

  /** Terminate stalls whose deadline passed. */
  expire(now?: number): number {
    return this.#stalls?.expire(now) ?? 0;
  }

  #overflow(count: number): void {
    this.telemetry.lost += count;
    if (this.raiseOverflow()) {
      this.telemetry.overflows++;
      this.hooks.interrupt?.();
    }
  }

  /** The host lost `count` events (its LOST_EVENTS flag or a sequence gap): tell the guest as an overflow. */
  hostLost(count: number): void {
    this.#overflow(Math.max(count, 0));
  }

  /** Write one 32-byte record at PROD; false (and an overflow) when the queue is full or the base is not RAM. */
  post(record: Uint8Array): boolean {
    if (record.length !== 32) throw new RangeError("an SMMUv3 event record is 32 bytes");
    if (!this.writeRecord(record)) {
      this.#overflow(1);
      return false;
    }
    this.telemetry.posted++;
    this.hooks.interrupt?.();
    return true;
  }
}

/** An F_TRANSLATION event for StreamID `virtId` (what the selftest's vEVENT, which carries only the id, becomes). */
export function selftestEventRecord(virtId: number, address = 0): Uint8Array {
  const r = new Uint8Array(32);
  const v = new DataView(r.buffer);
  v.setUint32(0, SMMU_EVENT.F_TRANSLATION, true);
  v.setUint32(4, virtId >>> 0, true);
  v.setUint32(16, address % 2 ** 32, true);
  v.setUint32(20, Math.floor(address / 2 ** 32), true);
  return r;
}
