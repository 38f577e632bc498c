/**
 * The guest side of faults on virtio-iommu: fault reports written into the buffers the guest posts on its event
 * virtqueue (`struct virtio_iommu_fault`, virtio 1.2 §5.13.6.9: reason u8, reserved[3], flags le32, endpoint le32,
 * reserved le32, address le64), and — from the never-merged page-request draft, in iommu-relay's own layout, labelled
 * so — page requests as fault reports with reason 3 (PAGE_REQ), flags PASID (1 << 16) and LAST (1 << 17), the PASID
 * in the reserved word and the PRG index in the address's low 9 bits; the guest answers with the drafted PAGE_RESP
 * request (type 7, see iommu.ts), matched back to the host's cookie. Answers are hostile input: unknown, double and
 * post-unbind answers are refused (VIRTIO_IOMMU_S_NOENT / INVAL), never forwarded.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { VirtioIommuEventQueue, VIRTIO_FAULT } from "./faults.ts";
 * const ram = new Uint8Array(1 << 16);
 * const memory = { read: (a: number, n: number) => ram.slice(a, a + n), write: (a: number, b: Uint8Array) => ram.set(b, a) };
 * const events = new VirtioIommuEventQueue(memory, () => {});
 * events.addBuffer(0x1000, 24);
 * const fault = { reason: VIRTIO_FAULT.R_MAPPING, endpoint: 3, address: 0x7f000n, read: true, write: false };
 * assert.equal(events.report(fault), true);
 * assert.equal(ram[0x1000], 2); // the report's reason byte (R_MAPPING), in the posted buffer
 * ```
 *
 * @module
 */
import type { GuestMemory } from "../../memory/guest_memory.ts";
import type { HostPageFault } from "../vtd/prq.ts";
import {
  type HostResponder,
  type PageRequestTelemetry,
  PageRequestTracker,
  type RefusedResponse,
} from "../page_requests.ts";
import { type VirtioIommuRequest, VirtioIommuStatus as S } from "./iommu.ts";

/** Reasons and flags of `struct virtio_iommu_fault` (R_PAGE_REQ and F_PASID / F_LAST are the draft's, numbered here). */
export const VIRTIO_FAULT = {
  R_UNKNOWN: 0,
  R_DOMAIN: 1,
  R_MAPPING: 2,
  R_PAGE_REQ: 3,
  F_READ: 1,
  F_WRITE: 2,
  F_EXEC: 4,
  F_ADDRESS: 1 << 8,
  F_PASID: 1 << 16,
  F_LAST: 1 << 17,
} as const;

/** Bytes of a fault report. */
export const VIRTIO_FAULT_BYTES = 24;

/** The guest's event virtqueue as the VMM sees it: buffers the guest posted, filled in order. */
export class VirtioIommuEventQueue {
  readonly #buffers: { gpa: number; length: number }[] = [];
  readonly #groups: PageRequestTracker;
  /** Reports that found no buffer (or an unwritable one). */
  lost = 0;

  /**
   * An event queue writing reports into the buffers the guest posts in `memory` (guest RAM); `respond` answers the
   * host's page requests by cookie. `hooks.notify` tells the guest a buffer was used (the VMM puts it on the used ring
   * and interrupts); `hooks.now` is the clock, in ms, for page-request deadlines (default `Date.now`).
   */
  constructor(
    readonly memory: GuestMemory,
    respond: HostResponder,
    readonly hooks: { notify?(): void; now?(): number } = {},
    /** How long the guest has to answer a page request, ms (default 10 s). */
    timeoutMs = 10_000,
    /** The host response for a request the guest never answers (default INVALID). */
    timeoutCode = 1,
  ) {
    this.#groups = new PageRequestTracker(respond, () => this.hooks.now?.() ?? Date.now(), timeoutMs, timeoutCode);
  }

  /** Page requests delivered, answered, refused, timed out and dropped, the timeout policy, and `lost` reports. */
  get telemetry(): PageRequestTelemetry & { lost: number } {
    return { ...this.#groups.telemetry, lost: this.lost };
  }

  /** The guest made a device-writable buffer available on the event queue (at least 24 bytes, else ignored). */
  addBuffer(gpa: number, length: number): void {
    if (length >= VIRTIO_FAULT_BYTES && this.#buffers.length < 4096) this.#buffers.push({ gpa, length });
  }

  #write(bytes: Uint8Array): boolean {
    const b = this.#buffers.shift();
    if (!b) return false;
    try {
      this.memory.write(b.gpa, bytes);
    } catch {
      return false;
    }
    this.hooks.notify?.();
    return true;
  }

  /** A non-recoverable fault report. False when the guest had no buffer posted (counted lost). */
  report(
    f: { reason: number; endpoint: number; address?: bigint; read: boolean; write: boolean; exec?: boolean },
  ): boolean {
    const r = new Uint8Array(VIRTIO_FAULT_BYTES);
    const v = new DataView(r.buffer);
    r[0] = f.reason;
    v.setUint32(
      4,
      (f.read ? VIRTIO_FAULT.F_READ : 0) | (f.write ? VIRTIO_FAULT.F_WRITE : 0) | (f.exec ? VIRTIO_FAULT.F_EXEC : 0) |
        (f.address !== undefined ? VIRTIO_FAULT.F_ADDRESS : 0),
      true,
    );
    v.setUint32(8, f.endpoint >>> 0, true);
    if (f.address !== undefined) v.setBigUint64(16, f.address, true);
    const ok = this.#write(r);
    if (!ok) this.lost++;
    return ok;
  }

  /** A host page fault as a page request (`rid` is the endpoint). False when not delivered (answered INVALID). */
  pageRequest(f: HostPageFault): boolean {
    const r = new Uint8Array(VIRTIO_FAULT_BYTES);
    const v = new DataView(r.buffer);
    r[0] = VIRTIO_FAULT.R_PAGE_REQ;
    v.setUint32(
      4,
      (f.read ? VIRTIO_FAULT.F_READ : 0) | (f.write ? VIRTIO_FAULT.F_WRITE : 0) | (f.exec ? VIRTIO_FAULT.F_EXEC : 0) |
        VIRTIO_FAULT.F_ADDRESS | (f.pasid !== undefined ? VIRTIO_FAULT.F_PASID : 0) |
        (f.lastInGroup ? VIRTIO_FAULT.F_LAST : 0),
      true,
    );
    v.setUint32(8, f.rid >>> 0, true);
    v.setUint32(12, (f.pasid ?? 0) >>> 0, true);
    v.setBigUint64(16, (BigInt(f.page) << 12n) | BigInt(f.grpid & 0x1ff), true);
    if (!this.#write(r)) {
      this.lost++;
      this.#groups.overflow(f.lastInGroup ? f.cookie : undefined);
      return false;
    }
    this.#groups.telemetry.delivered++;
    if (f.lastInGroup) this.#groups.open(this.#key(f.rid, f.pasid, f.grpid), f.cookie, `${f.rid}/${f.pasid ?? "-"}`);
    return true;
  }

  #key(endpoint: number, pasid: number | undefined, grpid: number): string {
    return `${endpoint}/${pasid ?? "-"}/${grpid}`;
  }

  /** The drafted PAGE_RESP: a virtio status (OK, or NOENT / INVAL for a refused answer). */
  pageResponse(r: VirtioIommuRequest & { type: "page-resp" }): number {
    const refused: RefusedResponse | undefined = this.#groups.answer(this.#key(r.endpoint, r.pasid, r.grpid), r.code);
    return refused === undefined ? S.OK : refused === "no-such-group" ? S.NOENT : S.INVAL;
  }

  /** The PASID was unbound: its pending requests are answered INVALID; later answers are refused. */
  pasidUnbound(endpoint: number, pasid: number): void {
    this.#groups.unbound(`${endpoint}/${pasid}`);
  }

  /** Answer INVALID for requests whose deadline passed. */
  expire(now?: number): number {
    return this.#groups.expire(now);
  }
}
