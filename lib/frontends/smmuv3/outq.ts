/**
 * What the SMMUv3's output queues (EVTQ, PRIQ) share: the BASE register (address, LOG2SIZE), PROD (the SMMU's: index,
 * wrap bit, OVFLG at bit 31) and CONS (the guest's: OVACKFLG at bit 31), writing one record at PROD, and the
 * overflow flag, which toggles only once the guest acknowledged the previous overflow (SMMUv3 7.4). What a record
 * holds, and what an overflow costs, is each queue's own.
 *
 * @module
 */
import type { GuestMemory } from "../vtd/queue.ts";

/** PROD.OVFLG / CONS.OVACKFLG. */
const OVFLG = 1 << 31;

/** An SMMUv3 output queue's registers and record writes. */
export class SmmuOutputQueue {
  base = 0;
  log2size = 0;
  /** PROD and CONS as the registers hold them: index, wrap bit at log2size, PROD.OVFLG / CONS.OVACKFLG at bit 31. */
  prod = 0;
  cons = 0;

  constructor(readonly memory: GuestMemory, readonly recordBytes: 16 | 32) {}

  /** *Q_BASE: address [51:5], LOG2SIZE [4:0] (at most 19). Resets PROD and CONS. */
  writeBase(value: number): void {
    this.log2size = Math.min(value % 32, 19);
    this.base = value - (value % 32);
    this.prod = 0;
    this.cons = 0;
  }

  /** *Q_CONS: the guest consumed up to here (and acknowledges an overflow with OVACKFLG). */
  writeCons(value: number): void {
    this.cons = (((value >>> 0) & ((2 << this.log2size) - 1)) | ((value >>> 0) & OVFLG)) >>> 0;
  }

  /**
   * Write `record` at PROD and advance PROD; false (nothing changed) when the queue is full or its base is not guest
   * RAM.
   */
  protected writeRecord(record: Uint8Array): boolean {
    const n = 1 << this.log2size, mask = (n << 1) - 1;
    const p = this.prod & mask, c = this.cons & mask;
    if ((p & (n - 1)) === (c & (n - 1)) && (p & n) !== (c & n)) return false;
    try {
      this.memory.write(this.base + (p & (n - 1)) * this.recordBytes, record);
    } catch {
      return false;
    }
    this.prod = (((p + 1) & mask) | (this.prod & OVFLG)) >>> 0;
    return true;
  }

  /** Toggle PROD.OVFLG if the guest acknowledged the last overflow; returns whether it toggled. */
  protected raiseOverflow(): boolean {
    if ((this.prod & OVFLG) !== (this.cons & OVFLG)) return false;
    this.prod = (this.prod ^ OVFLG) >>> 0;
    return true;
  }
}
