/**
 * VT-d primary fault recording for non-recoverable faults (VT-d spec 7.2 / 11.4.14): fault recording registers
 * (FRCD, 128 bits each) and the FSTS bits PPF, PFO and FRI, as the Linux driver reads them (`drivers/iommu/intel/
 * dmar.c` `dmar_fault`): FI (page address) in bits 63:12, SID 79:64, PP (PASID present) 95, FR (reason) 103:96,
 * PASID 123:104, T (1 = read) 126, F 127. The guest clears a record by writing 1 to F, and PFO by writing 1 to it.
 * A fault arriving while the next record (the hardware pointer, circular) is still full sets PFO and is lost (counted), as on hardware.
 *
 * Sources: a shadowed domain's walk faults ({@linkcode vtdFaultFromWalk}: the pages the host left unmapped because
 * the guest's table was unusable), or a VMM's own DMA emulation.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { FSTS_FAULT, VtdFaultRecorder, VTD_FAULT_REASON } from "./faults.ts";
 * const rec = new VtdFaultRecorder(4);
 * rec.record({ sid: 0x18, address: 0x7f000000, read: false, reason: VTD_FAULT_REASON.WRITE_NOT_WRITABLE });
 * assert.equal(rec.fsts & 0xff, FSTS_FAULT.PPF); // a record is pending, none lost (no PFO)
 * assert.equal((rec.readFrcd(0, 3) >>> 31) & 1, 1); // record 0 holds it: F (bit 127) set

 * ```
 *
 * @module
 */
import type { WalkFault } from "../../shadow/walk.ts";
import { SnapshotError, SnapshotFields as F } from "../../device/snapshot.ts";

/** Fault reasons (VT-d spec, Appendix A) iommu-relay reports. */
export const VTD_FAULT_REASON = {
  ADDRESS_BEYOND_MGAW: 0x4,
  WRITE_NOT_WRITABLE: 0x5,
  READ_NOT_READABLE: 0x6,
  PAGING_ENTRY_ACCESS: 0x7,
  RESERVED_IN_PAGING_ENTRY: 0xc,
} as const;

/** FSTS bits. */
export const FSTS_FAULT = { PFO: 1 << 0, PPF: 1 << 1 } as const;

/** One non-recoverable fault. */
export interface VtdFault {
  /** Requester id (bus/device/function) as the guest knows the device. */
  readonly sid: number;
  /** The request's PASID; absent for a request without PASID (PP clear). */
  readonly pasid?: number;
  /** The faulting address (its page is recorded). */
  readonly address: number;
  /** A read (T = 1) rather than a write. */
  readonly read: boolean;
  /** Fault reason code (FR, bits 103:96), one of {@linkcode VTD_FAULT_REASON}. */
  readonly reason: number;
}

/** Fault recording registers of one guest VT-d unit. */
export class VtdFaultRecorder {
  /** Four 32-bit words per record. */
  readonly #records: Uint32Array;
  /** Where the next fault is written (the hardware's internal pointer, circular over the records). */
  #next = 0;
  /** FSTS.FRI: the record the first pending fault went to when PPF was set (VT-d spec 11.4.9.2). */
  #fri = 0;
  #pfo = false;
  /** Faults recorded, and faults lost because the next record was still full (PFO). */
  readonly telemetry = { recorded: 0, lost: 0 };

  /** `count` fault recording registers (1..256, cap.NFR + 1); `hooks.interrupt` is called on every record or loss. */
  constructor(readonly count = 8, readonly hooks: { interrupt?(): void } = {}) {
    if (!Number.isInteger(count) || count < 1 || count > 256) throw new RangeError("1..256 fault recording registers");
    this.#records = new Uint32Array(count * 4);
  }

  #full(i: number): boolean {
    return (this.#records[i * 4 + 3] >>> 31) === 1;
  }

  /** FSTS as the guest reads it: PFO, PPF (any record full), FRI [15:8]. */
  get fsts(): number {
    let ppf = false;
    for (let i = 0; i < this.count && !ppf; i++) ppf = this.#full(i);
    return (this.#pfo ? FSTS_FAULT.PFO : 0) | (ppf ? FSTS_FAULT.PPF : 0) | (this.#fri << 8);
  }

  /** FSTS write: 1 clears PFO. */
  writeFsts(value: number): void {
    if (value & FSTS_FAULT.PFO) this.#pfo = false;
  }

  /** Dword `dword` (0..3) of record `index`. */
  readFrcd(index: number, dword: number): number {
    if (!(index >= 0 && index < this.count && dword >= 0 && dword < 4)) return 0;
    return this.#records[index * 4 + dword];
  }

  /** A guest write to dword `dword` of record `index`: only F (bit 31 of dword 3) is writable, write-1-to-clear. */
  writeFrcd(index: number, dword: number, value: number): void {
    if (index >= 0 && index < this.count && dword === 3 && (value >>> 31) === 1) this.#records[index * 4 + 3] = 0;
  }

  /**
   * Record a fault; false when it was lost (the next record still full: PFO). FRI names the oldest pending record,
   * where Linux's `dmar_fault` starts reading (it stops at the first record whose F is clear), so it moves only when
   * no fault was pending.
   */
  record(f: VtdFault): boolean {
    const i = this.#next;
    if (this.#full(i)) {
      this.#pfo = true;
      this.telemetry.lost++;
      this.hooks.interrupt?.();
      return false;
    }
    const page = Math.floor(f.address / 4096);
    const r = this.#records;
    r[i * 4] = ((page % 0x10_0000) * 4096) >>> 0;
    r[i * 4 + 1] = Math.floor(page / 0x10_0000) >>> 0;
    r[i * 4 + 2] = ((f.sid & 0xffff) | (f.pasid !== undefined ? 1 << 31 : 0)) >>> 0;
    r[i * 4 + 3] = ((f.reason & 0xff) | (((f.pasid ?? 0) & 0xfffff) << 8) | (f.read ? 1 << 30 : 0) | (1 << 31)) >>> 0;
    let pending = false;
    for (let k = 0; k < this.count && !pending; k++) pending = k !== i && this.#full(k);
    if (!pending) this.#fri = i;
    this.#next = (i + 1) % this.count;
    this.telemetry.recorded++;
    this.hooks.interrupt?.();
    return true;
  }

  /** The registers the guest sees (records, FRI, PFO) and the write pointer, for a snapshot. */
  saveState(): VtdFaultRecorderState {
    return { count: this.count, words: [...this.#records], next: this.#next, fri: this.#fri, pfo: this.#pfo };
  }

  /**
   * Check a snapshot's fault recording state against this unit without changing anything; the function returned
   * sets it (and cannot fail). A `SnapshotError` names the field that does not fit: another record count, a word
   * that is not a u32, a pointer outside the records.
   */
  prepareRestore(json: unknown, path = "vtdFaults"): () => void {
    const o = F.object(json, path);
    const count = F.u32(o.count, `${path}.count`);
    if (count !== this.count) {
      throw new SnapshotError("malformed", `${count} fault records, this unit has ${this.count}`, `${path}.count`);
    }
    const list = F.array(o.words, `${path}.words`);
    if (list.length !== count * 4) F.malformed(`${path}.words`, `${count * 4} words`);
    const words = list.map((w, i) => F.u32(w, `${path}.words[${i}]`));
    const next = F.u32(o.next, `${path}.next`), fri = F.u32(o.fri, `${path}.fri`);
    if (next >= count) F.malformed(`${path}.next`, `a record below ${count}`);
    if (fri >= count) F.malformed(`${path}.fri`, `a record below ${count}`);
    const pfo = F.boolean(o.pfo, `${path}.pfo`);
    return () => {
      this.#records.set(words);
      this.#next = next;
      this.#fri = fri;
      this.#pfo = pfo;
    };
  }
}

/** The fault recording registers as a snapshot carries them (`lib/frontends/snapshot.ts`, part `vtdFaults`). */
export interface VtdFaultRecorderState {
  /** How many records the unit has (cap.NFR + 1): a restore needs the same. */
  readonly count: number;
  /** The records' 32-bit words, four per record. */
  readonly words: readonly number[];
  /** The next record the hardware writes. */
  readonly next: number;
  /** FSTS.FRI. */
  readonly fri: number;
  /** FSTS.PFO. */
  readonly pfo: boolean;
}

/** The guest-visible fault for a shadow walk fault on device `sid` (its first page; the access type is unknown). */
export function vtdFaultFromWalk(fault: WalkFault, sid: number): VtdFault {
  const reserved = fault.reason === "reserved-large-page" || fault.reason === "large-page-misaligned";
  return {
    sid,
    address: fault.firstPage * 4096,
    read: true,
    reason: reserved ? VTD_FAULT_REASON.RESERVED_IN_PAGING_ENTRY : VTD_FAULT_REASON.PAGING_ENTRY_ACCESS,
  };
}
