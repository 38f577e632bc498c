/**
 * The guest side of I/O page faults on VT-d: a register-level page request queue (PQA/PQH/PQT, PRS.PPR/PRO) that
 * receives host faults as 256-bit page request descriptors (layout as the Linux driver reads them,
 * `drivers/iommu/intel/prq.c` `struct page_req_dsc`), and the matching of the guest's page group responses (decoded
 * by the invalidation queue) back to the host fault's cookie.
 *
 * Guest answers are hostile input: a response to no pending group, a second response, or one after the PASID was
 * unbound is refused — never forwarded. A request the guest never answers is answered for it (INVALID) when its
 * deadline passes. A full queue sets PRS.PRO and answers the host INVALID at once: iommu-relay's documented
 * choice, so the device is not stuck.
 *
 * @module
 */
import { writePageAddress } from "../../uapi/struct.ts";
import type { GuestMemory } from "../../memory/guest_memory.ts";
import type { VtdDescriptor } from "./descriptors.ts";
import { VTD_RID_PASID_ZERO, type VtdRidPasidMap } from "./rid_pasid.ts";
import {
  HOST_RESPONSE,
  type HostResponder,
  type PageRequestState,
  type PageRequestTelemetry,
  PageRequestTracker,
  type RefusedResponse,
} from "../page_requests.ts";
import { SnapshotFields as F } from "../../device/snapshot.ts";

/** The page request queue in a snapshot: registers and the groups the guest may still answer. */
export interface VtdPrqState {
  /** PQA as last written. */
  readonly pqa: number;
  /** PQH, PQT (byte offsets) and PRS. */
  readonly pqh: number;
  /** PQT, the unit's tail. */
  readonly pqt: number;
  /** PRS (PPR, PRO). */
  readonly prs: number;
  /** Groups answered to the old host before the snapshot, with what was left of their deadlines. */
  readonly groups: PageRequestState;
}

/**
 * A tracker's snapshot part from JSON: each carried group's key, PASID key and remaining time, checked. A group
 * appears once, and no more time is left of it than the tracker gives a group (`timeoutMs`): what a snapshot this
 * library wrote holds, and a hostile one would otherwise keep a group open, and its guest's answer welcome, forever.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { pageRequestStateFromJson } from "./prq.ts";
 * const s = pageRequestStateFromJson({ carried: [{ key: "16/5/3", pasidKey: "16/5", remainingMs: 900 }] }, "prq", 1000);
 * assert.equal(s.carried[0].remainingMs, 900);
 * assert.throws(() => pageRequestStateFromJson({ carried: [{ key: "16/5/3", pasidKey: "16/5", remainingMs: 9e9 }] }, "prq", 1000));
 * ```
 */
export function pageRequestStateFromJson(json: unknown, path: string, timeoutMs: number): PageRequestState {
  const o = F.object(json, path);
  const keys = new Set<string>();
  return {
    carried: F.array(o.carried, `${path}.carried`).map((c, i) => {
      const at = `${path}.carried[${i}]`, g = F.object(c, at);
      const key = F.string(g.key, `${at}.key`);
      if (keys.has(key)) F.malformed(`${at}.key`, "a group carried once");
      keys.add(key);
      const remainingMs = F.uint(g.remainingMs, `${at}.remainingMs`);
      if (remainingMs > timeoutMs) F.malformed(`${at}.remainingMs`, `at most the ${timeoutMs} ms a group is given`);
      return { key, pasidKey: F.string(g.pasidKey, `${at}.pasidKey`), remainingMs };
    }),
  };
}

export { HOST_RESPONSE, type HostResponder, type PageRequestTelemetry, type RefusedResponse };

/**
 * A page request the unit could not write to the guest's queue: the queue's base (PQA) is not guest RAM, or it was
 * never set. The host fault is answered INVALID at once (the guest can never see it), and the VMM is told through
 * the `fault` hook; as on hardware, the guest sees nothing more than a request that never arrived.
 */
export class VtdPageRequestQueueError extends Error {
  /** Always `"VtdPageRequestQueueError"`. */
  override name = "VtdPageRequestQueueError";
  /** `gpa` is where the descriptor would have been written. */
  constructor(readonly reason: "queue-not-guest-ram", readonly gpa: number, detail: string) {
    super(`${reason}: page request descriptor at 0x${gpa.toString(16)}: ${detail}`);
  }
}

/** PRS bits. */
export const PRS = { PPR: 1, PRO: 2 } as const;

/** A host fault to deliver (from an iommufd fault queue record). */
export interface HostPageFault {
  /** Requester id (bus/device/function) of the device as the guest knows it. */
  readonly rid: number;
  /** Absent: a request without PASID. */
  readonly pasid?: number;
  /** The faulting 4 KiB page. */
  readonly page: number;
  /** Read access requested. */
  readonly read: boolean;
  /** Write access requested. */
  readonly write: boolean;
  /** Execute access requested. */
  readonly exec: boolean;
  /** Privileged (supervisor) access requested. */
  readonly priv: boolean;
  /** Last request of its page request group (LPIG): the one the guest answers. */
  readonly lastInGroup: boolean;
  /** Page request group index (PRGI). */
  readonly grpid: number;
  /** The host's cookie, quoted back in the response. */
  readonly cookie: number;
}

/** Counters. */
export type PrqTelemetry = PageRequestTelemetry;

/**
 * One guest VT-d unit's page request queue.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { VtdPageRequestQueue } from "./prq.ts";
 * const ram = new Uint8Array(1 << 16);
 * const memory = { read: (a: number, n: number) => ram.slice(a, a + n), write: (a: number, b: Uint8Array) => ram.set(b, a) };
 * const answers: [number, number][] = [];
 * const prq = new VtdPageRequestQueue(memory, (cookie, code) => answers.push([cookie, code]));
 * prq.writePqa(0x2000); // one 4 KiB page: 128 descriptors
 * prq.deliver({ rid: 0x10, pasid: 5, page: 0x7f000, read: true, write: false, exec: false, priv: false, lastInGroup: true, grpid: 3, cookie: 77 });
 * assert.equal(prq.pqt, 32);
 * assert.equal(prq.prs, 1);
 * ```
 */
export class VtdPageRequestQueue {
  /** Queue base (guest-physical, 4 KiB aligned), from PQA. */
  base = 0;
  /** Queue size in 32-byte descriptors, from PQA.PQS (`2^PQS` pages). */
  entries = 128;
  /** PQH (guest-owned) and PQT (ours), byte offsets. */
  pqh = 0;
  /** Page request queue tail: byte offset of the next descriptor the unit writes. */
  pqt = 0;
  /** Page request status register: PPR (pending) and PRO (overflow) bits, write 1 to clear; see {@linkcode PRS}. */
  prs = 0;
  /** Pending groups by rid/pasid/grpid: only a group's last request (LPIG) is answered. */
  readonly #groups: PageRequestTracker;
  #pqa = 0;

  /** A queue writing to `memory`; host faults it does not deliver or the guest answers go back through `respond`. */
  constructor(
    readonly memory: GuestMemory,
    readonly respond: HostResponder,
    readonly hooks: { interrupt?(): void; now?(): number; fault?(error: VtdPageRequestQueueError): void } = {},
    /** How long the guest has to answer, ms (default 10 s). */
    readonly timeoutMs = 10_000,
    /** The host response for a group the guest never answers (default INVALID). */
    timeoutCode: number = HOST_RESPONSE.INVALID,
    /** The RID_PASIDs of the unit's devices: a response naming one answers a request without PASID. */
    readonly ridPasids: VtdRidPasidMap = VTD_RID_PASID_ZERO,
  ) {
    this.#groups = new PageRequestTracker(respond, () => this.hooks.now?.() ?? Date.now(), timeoutMs, timeoutCode);
  }

  /** Counters (shared with the group tracker). */
  get telemetry(): PrqTelemetry {
    return this.#groups.telemetry;
  }

  /**
   * Before a snapshot: answer the host for every group the guest has not answered (default SUCCESS: the device
   * retries, and faults again on the new host if it must), keeping them so the guest's later answer is accepted.
   */
  quiesce(code: number = HOST_RESPONSE.SUCCESS): number {
    return this.#groups.quiesce(code);
  }

  /** Registers and carried groups; {@linkcode VtdPageRequestQueue.quiesce} first (pending host cookies die). */
  saveState(): VtdPrqState {
    return { pqa: this.#pqa, pqh: this.pqh, pqt: this.pqt, prs: this.prs, groups: this.#groups.state() };
  }

  /** Check a snapshot's state against this queue without changing anything; the function returned sets it. */
  prepareRestore(json: unknown, path = "vtdPrq"): () => void {
    const o = F.object(json, path);
    const pqa = F.uint(o.pqa, `${path}.pqa`), prs = F.u32(o.prs, `${path}.prs`);
    const bytes = 2 ** (pqa % 8) * 4096;
    const offset = (v: unknown, name: string) => {
      const n = F.uint(v, `${path}.${name}`);
      if (n % 32 !== 0 || n >= bytes) F.malformed(`${path}.${name}`, "a descriptor offset inside the queue");
      return n;
    };
    const pqh = offset(o.pqh, "pqh"), pqt = offset(o.pqt, "pqt");
    if (prs & ~(PRS.PPR | PRS.PRO)) F.malformed(`${path}.prs`, "only PPR and PRO");
    const groups = pageRequestStateFromJson(o.groups, `${path}.groups`, this.#groups.timeoutMs);
    return () => {
      this.writePqa(pqa);
      this.pqh = pqh;
      this.pqt = pqt;
      this.prs = prs;
      this.#groups.restoreState(groups);
    };
  }

  /** PQA: base [63:12], QS [2:0] (2^QS pages of 32-byte descriptors). Resets PQH and PQT. */
  writePqa(value: number): void {
    const v = Number.isInteger(value) && value >= 0 && value < 2 ** 64 ? value : 0;
    this.#pqa = v;
    this.base = v - (v % 4096);
    this.entries = (2 ** (v % 8) * 4096) / 32;
    this.pqh = 0;
    this.pqt = 0;
  }

  /** PQH write: the guest consumed descriptors up to here. */
  writePqh(value: number): void {
    if (value % 32 === 0 && value / 32 < this.entries) this.pqh = value;
  }

  /** PRS write: 1s clear PPR/PRO. */
  writePrs(value: number): void {
    this.prs &= ~(value & (PRS.PPR | PRS.PRO));
  }

  #key(rid: number, pasid: number | undefined, grpid: number): string {
    return `${rid}/${pasid ?? "-"}/${grpid}`;
  }

  /** Deliver a host fault to the guest. Returns false when the queue was full (answered INVALID, PRO set). */
  deliver(f: HostPageFault): boolean {
    const next = (this.pqt / 32 + 1) % this.entries;
    if (next === this.pqh / 32) {
      this.prs |= PRS.PRO;
      this.#groups.overflow(f.lastInGroup ? f.cookie : undefined);
      return false;
    }
    const d = new Uint8Array(32);
    const v = new DataView(d.buffer);
    // qw0: type 7:0 (1 = page request), PASID present 8, RID 31:16, PASID 51:32, exe 52, priv 53
    v.setUint32(0, 1 | (f.pasid !== undefined ? 1 << 8 : 0) | ((f.rid & 0xffff) << 16), true);
    v.setUint32(4, ((f.pasid ?? 0) & 0xfffff) | (f.exec ? 1 << 20 : 0) | (f.priv ? 1 << 21 : 0), true);
    // qw1: read 0, write 1, LPIG 2, PRG index 11:3, address 63:12
    writePageAddress(
      v,
      8,
      f.page,
      ((f.grpid & 0x1ff) << 3) | (f.lastInGroup ? 4 : 0) | (f.write ? 2 : 0) | (f.read ? 1 : 0),
    );
    const gpa = this.base + this.pqt;
    try {
      this.memory.write(gpa, d);
    } catch (e) {
      // Not guest RAM: the guest cannot be asked, so the host is answered now instead of at the deadline.
      this.telemetry.undeliverable++;
      this.#groups.overflow(f.lastInGroup ? f.cookie : undefined, false);
      try {
        this.hooks.fault?.(new VtdPageRequestQueueError("queue-not-guest-ram", gpa, (e as Error)?.message ?? `${e}`));
      } catch {
        // The VMM's own hook failing must not undo the answer already given.
      }
      return false;
    }
    this.pqt = next * 32;
    this.prs |= PRS.PPR;
    this.telemetry.delivered++;
    if (f.lastInGroup) this.#groups.open(this.#key(f.rid, f.pasid, f.grpid), f.cookie, `${f.rid}/${f.pasid ?? "-"}`);
    this.hooks.interrupt?.();
    return true;
  }

  /**
   * The guest's page group response (from the invalidation queue). Returns undefined, or why it was refused. A
   * response with PASID for the device's RID_PASID answers a request without PASID (the same address space: Linux
   * answers with the request's own PASID-present bit, but a guest naming the RID_PASID means that group).
   */
  guestResponse(d: VtdDescriptor & { type: "page-group-response" }): RefusedResponse | undefined {
    // Guest codes: 0 success, 1 invalid request, 0xf response failure.
    const ridPasid = d.pasidPresent && this.ridPasids.routeOfDevice(d.rid, d.pasid) === "rid";
    if (ridPasid && this.#groups.isPending(this.#key(d.rid, undefined, d.prgIndex))) {
      return this.#groups.answer(this.#key(d.rid, undefined, d.prgIndex), d.responseCode);
    }
    return this.#groups.answer(this.#key(d.rid, d.pasidPresent ? d.pasid : undefined, d.prgIndex), d.responseCode);
  }

  /**
   * The PASID (or, `"rid"`, the requests-without-PASID translation) was unbound: answer its pending groups INVALID
   * now; later guest answers for them are refused. A RID_PASID unbinds the requests without PASID too.
   */
  pasidUnbound(rid: number, pasid: number | "rid"): void {
    if (pasid === "rid" || this.ridPasids.routeOfDevice(rid, pasid) === "rid") this.#groups.unbound(`${rid}/-`);
    if (pasid !== "rid") this.#groups.unbound(`${rid}/${pasid}`);
  }

  /** Answer INVALID for every group whose deadline passed (call periodically). Returns how many. */
  expire(now?: number): number {
    return this.#groups.expire(now);
  }

  /** Groups waiting for the guest. */
  get pending(): number {
    return this.#groups.pending;
  }
}

/**
 * A host fault record (`iommu_hwpt_pgfault`, as `FaultQueue.readFault` returns it) for the guest, given the guest
 * RID the VMM assigned to the faulting device.
 */
export function hostFaultFromRecord(
  record: { flags: number; pasid: number; grpid: number; perm: number; addr: bigint; cookie: number },
  rid: number,
): HostPageFault {
  return {
    rid,
    ...(record.flags & 1 ? { pasid: record.pasid } : {}),
    page: Number(record.addr >> 12n),
    read: (record.perm & 1) !== 0,
    write: (record.perm & 2) !== 0,
    exec: (record.perm & 4) !== 0,
    priv: (record.perm & 8) !== 0,
    lastInGroup: (record.flags & 2) !== 0,
    grpid: record.grpid,
    cookie: record.cookie,
  };
}
