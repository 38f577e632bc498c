/**
 * What the SMMUv3's queues share: the 64-bit *Q_BASE registers, taken exactly, and — for the output queues (EVTQ,
 * PRIQ) — PROD (the SMMU's: index, wrap bit, OVFLG at bit 31) and CONS (the guest's: OVACKFLG at bit 31), writing one
 * record at PROD, and the overflow flag, which toggles only once the guest acknowledged the previous overflow
 * (SMMUv3 7.4). What a record holds, and what an overflow costs, is each queue's own.
 *
 * A *Q_BASE value does not fit a JavaScript number: Linux sets bit 62 (RA / WA, the allocation hint), so the value
 * is above 2^53 and a number would already have dropped its low bits (LOG2SIZE among them). The registers are
 * therefore taken as a bigint or as two 32-bit halves (a VMM that sees 32-bit MMIO accesses), never as a number
 * above 2^53.
 *
 * @module
 */
import type { GuestMemory } from "../../memory/guest_memory.ts";
import { SnapshotFields as F } from "../../device/snapshot.ts";

/** An output queue's registers in a snapshot: *Q_BASE (a `0x` hex string), PROD and CONS. */
export interface SmmuOutputQueueState {
  /** *Q_BASE as written. */
  readonly base: string;
  /** *Q_PROD (index, wrap, OVFLG). */
  readonly prod: number;
  /** *Q_CONS (index, wrap, OVACKFLG). */
  readonly cons: number;
}

/** PROD.OVFLG / CONS.OVACKFLG. */
const OVFLG = 1 << 31;

/** The largest LOG2SIZE the model accepts (SMMU_IDR1.CMDQS/EVTQS/PRIQS are at most 19). */
export const MAX_QUEUE_LOG2SIZE = 19;

/** A *Q_BASE register's fields (SMMUv3 6.3.20: ADDR bits 51:5, LOG2SIZE bits 4:0, RA/WA bit 62). */
export interface QueueBase {
  /** The queue's effective base: ADDR, aligned down to the queue's size in bytes (as the architecture does). */
  readonly address: number;
  /** LOG2SIZE, capped at `maxLog2size` (a larger value reads as the maximum the SMMU supports). */
  readonly log2size: number;
  /** Bit 62: the read- (CMDQ) or write- (EVTQ, PRIQ) allocate hint; no effect on an emulated queue. */
  readonly allocateHint: boolean;
}

/**
 * Decode a *Q_BASE value given as its two 32-bit halves. Reserved bits (63, 61:52) are ignored, as the architecture
 * says they are.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { decodeQueueBase } from "./outq.ts";
 * // Linux's CMDQ_BASE on QEMU: RA | 0x41000000 | LOG2SIZE 18 (0x4000000041000012)
 * assert.deepEqual(decodeQueueBase(0x41000012, 0x40000000, 16), { address: 0x41000000, log2size: 18, allocateHint: true });
 * ```
 */
export function decodeQueueBase(
  low: number,
  high: number,
  entryBytes: number,
  maxLog2size = MAX_QUEUE_LOG2SIZE,
): QueueBase {
  const log2size = Math.min(low & 31, maxLog2size);
  const address = (high & 0xfffff) * 2 ** 32 + ((low & ~31) >>> 0);
  // "The effective base address is aligned by the SMMU to the larger of the queue size in bytes or 32 bytes": the
  // address bits below the queue's size are treated as zero.
  const bytes = entryBytes * 2 ** log2size;
  return {
    address: bytes > 32 ? address - (address % bytes) : address,
    log2size,
    allocateHint: (high & (1 << 30)) !== 0,
  };
}

/**
 * Split a 64-bit register value into its 32-bit halves: a bigint is taken modulo 2^64, a number only when it is a
 * non-negative safe integer (above 2^53 its low bits are already gone). Undefined when it cannot be taken exactly.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { register64Halves } from "./outq.ts";
 * assert.deepEqual(register64Halves(0x4000000041000012n), [0x41000012, 0x40000000]);
 * assert.deepEqual(register64Halves(-1n), [0xffffffff, 0xffffffff]);
 * assert.equal(register64Halves(2 ** 62 + 0x12), undefined);
 * ```
 */
export function register64Halves(value: number | bigint): [number, number] | undefined {
  if (typeof value === "bigint") {
    const v = BigInt.asUintN(64, value);
    return [Number(v & 0xffff_ffffn), Number(v >> 32n)];
  }
  if (typeof value !== "number" || !Number.isSafeInteger(value) || value < 0) return undefined;
  return [value % 2 ** 32, Math.floor(value / 2 ** 32)];
}

/** A 32-bit register write as an unsigned number: bigints and numbers alike, never throwing (junk reads as 0). */
export function register32(value: number | bigint): number {
  if (typeof value === "bigint") return Number(BigInt.asUintN(32, value));
  return typeof value === "number" ? value >>> 0 : 0;
}

/**
 * The 64-bit *Q_BASE register of one queue, written whole or by halves; {@linkcode QueueBaseRegister.decode} gives
 * its fields. The queue that owns it re-reads them after each write.
 */
export class QueueBaseRegister {
  /** Bits 31:0 as last written (ADDR's low part, LOG2SIZE in bits 4:0). */
  low = 0;
  /** Bits 63:32 as last written (ADDR's high part in bits 19:0, RA/WA in bit 30). */
  high = 0;
  /**
   * A register reading zero, for a queue of `entryBytes`-byte entries (16 for CMDQ and PRIQ, 32 for EVTQ) whose
   * LOG2SIZE is capped at `maxLog2size`.
   */
  constructor(readonly entryBytes: number, readonly maxLog2size: number = MAX_QUEUE_LOG2SIZE) {}

  /** The register as the guest last wrote it. */
  get value(): bigint {
    return (BigInt(this.high) << 32n) | BigInt(this.low);
  }

  /** Write the whole register; false (nothing changed) for a number that cannot be taken exactly. */
  write(value: number | bigint): boolean {
    const halves = register64Halves(value);
    if (!halves) return false;
    [this.low, this.high] = halves;
    return true;
  }

  /** The register's fields: the effective base address, LOG2SIZE (capped) and the allocate hint. */
  decode(): QueueBase {
    return decodeQueueBase(this.low, this.high, this.entryBytes, this.maxLog2size);
  }
}

/** An SMMUv3 output queue's registers and record writes. */
export class SmmuOutputQueue {
  /** The queue's guest-physical base address, from *Q_BASE.ADDR (aligned down to the queue's size in bytes). */
  base = 0;
  /** *Q_BASE.LOG2SIZE: the queue holds 2^log2size records. */
  log2size = 0;
  /** *Q_PROD as the SMMU holds it: index in the low log2size bits, wrap bit at bit log2size, OVFLG at bit 31. */
  prod = 0;
  /**
   * *Q_CONS: index and wrap bit as in PROD (the guest's last write that lay between CONS and PROD, see
   * {@linkcode SmmuOutputQueue.writeCons}), OVACKFLG at bit 31 as last written.
   */
  cons = 0;
  /** The *Q_BASE register, exactly as written. */
  readonly baseRegister: QueueBaseRegister;

  /** A queue writing `recordBytes`-byte records (32 for EVTQ, 16 for PRIQ) into `memory` (guest RAM). */
  constructor(readonly memory: GuestMemory, readonly recordBytes: 16 | 32) {
    this.baseRegister = new QueueBaseRegister(recordBytes);
  }

  /**
   * *Q_BASE (64-bit, as a bigint or a safe integer): ADDR [51:5], LOG2SIZE [4:0], WA [62]. Resets PROD and CONS.
   * False, and nothing changed, for a number above 2^53 (pass a bigint or use the half writes); never throws.
   */
  writeBase(value: number | bigint): boolean {
    if (!this.baseRegister.write(value)) return false;
    this.#applyBase();
    return true;
  }

  /** *Q_BASE bits 31:0, as a 32-bit MMIO write. */
  writeBaseLow(value: number | bigint): void {
    this.baseRegister.low = register32(value);
    this.#applyBase();
  }

  /** *Q_BASE bits 63:32, as a 32-bit MMIO write. */
  writeBaseHigh(value: number | bigint): void {
    this.baseRegister.high = register32(value);
    this.#applyBase();
  }

  #applyBase(): void {
    const b = this.baseRegister.decode();
    this.base = b.address;
    this.log2size = b.log2size;
    this.prod = 0;
    this.cons = 0;
  }

  /**
   * *Q_CONS: the guest consumed up to here (and acknowledges an overflow with OVACKFLG). Never throws. A CONS that is
   * not between the current CONS and PROD (it would consume records never written, or go back) leaves the index as
   * it was and takes OVACKFLG only: the architecture leaves such a write unpredictable, and taking it would make the
   * queue look empty while full, so the next record would overwrite one the guest has not read.
   */
  writeCons(value: number | bigint): void {
    const v = register32(value);
    const mask = (2 << this.log2size) - 1;
    const from = this.cons & mask, to = v & mask;
    const consumed = (to - from + 2 * (mask + 1)) % (mask + 1),
      written = ((this.prod & mask) - from + mask + 1) % (mask + 1);
    this.cons = ((consumed <= written ? to : from) | (v & OVFLG)) >>> 0;
  }

  /** The registers a snapshot keeps. */
  saveQueueState(): SmmuOutputQueueState {
    return { base: `0x${this.baseRegister.value.toString(16)}`, prod: this.prod, cons: this.cons };
  }

  /** Check a snapshot's registers without changing anything; the function returned sets them. */
  protected prepareQueueRestore(json: unknown, path: string): () => void {
    const o = F.object(json, path);
    const base = F.u64(o.base, `${path}.base`);
    const limit = 2 << Math.min(Number(base & 31n), this.baseRegister.maxLog2size);
    const index = (v: unknown, name: string) => {
      const n = F.u32(v, `${path}.${name}`);
      if ((n & ~OVFLG) >>> 0 >= limit) F.malformed(`${path}.${name}`, "an index and wrap bit of the queue");
      return n;
    };
    const prod = index(o.prod, "prod"), cons = index(o.cons, "cons");
    return () => {
      this.writeBase(base);
      this.prod = prod;
      this.cons = cons;
    };
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
