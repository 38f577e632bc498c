/**
 * A growable buffer of fixed-size host entries, reused across flushes so a steady state allocates nothing, with
 * the guest requests behind each entry (copied as flat sequence numbers, so the pending set can be cleared as soon
 * as it is compiled).
 *
 * @module
 */
import type { OriginSink } from "../request/pending.ts";

/** Where an entry's guest requests come from: a pending set and one of its ranges (or its whole-space flush). */
export interface OriginSource {
  /** Append the sequence numbers behind range `which` (or `ALL_ORIGINS`: the whole-space flush) to `sink`. */
  copyOrigins(which: number, sink: OriginSink): void;
}

/**
 * Entries of one format for one target.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { EntryWriter } from "./entries.ts";
 * const w = new EntryWriter(8);
 * const at = w.append([3]);
 * w.view.setUint32(at, 1, true);
 * assert.equal(w.count, 1);
 * assert.deepEqual(w.originsOf(0), [3]);
 * ```
 */
export class EntryWriter implements OriginSink {
  /** The entries, `count * entryLength` bytes used. */
  bytes: Uint8Array;
  /** A view on {@linkcode EntryWriter.bytes}. */
  view: DataView;
  /** Entries written. */
  count = 0;
  /** Sequence numbers of the guest requests behind the entries, entry by entry. */
  #origins = new Float64Array(64);
  #originCount = 0;
  /** Per entry: where its sequence numbers start in #origins. */
  #originStart: Uint32Array;

  /** A writer of `entryLength`-byte entries with room for `initialEntries` before it first grows. */
  constructor(readonly entryLength: number, initialEntries = 64) {
    this.bytes = new Uint8Array(entryLength * initialEntries);
    this.view = new DataView(this.bytes.buffer);
    this.#originStart = new Uint32Array(initialEntries);
  }

  /** Reserve one zeroed entry serving `origins` (more can follow with addOrigin); returns its byte offset. */
  append(origins?: readonly number[]): number {
    const at = this.count * this.entryLength;
    if (at + this.entryLength > this.bytes.byteLength) {
      const grown = new Uint8Array(this.bytes.byteLength * 2);
      grown.set(this.bytes);
      this.bytes = grown;
      this.view = new DataView(grown.buffer);
      const starts = new Uint32Array(this.#originStart.length * 2);
      starts.set(this.#originStart);
      this.#originStart = starts;
    }
    this.bytes.fill(0, at, at + this.entryLength);
    this.#originStart[this.count] = this.#originCount;
    this.count++;
    if (origins) { for (let i = 0; i < origins.length; i++) this.addOrigin(origins[i]); }
    return at;
  }

  /** Reserve one zeroed entry serving the requests behind `which` of `source`; returns its byte offset. */
  appendFor(source: OriginSource, which: number): number {
    const at = this.append();
    source.copyOrigins(which, this);
    return at;
  }

  /** Record that the last appended entry also serves the requests of a pending set's origin list. */
  addOriginList(seqs: Float64Array, next: Int32Array, head: number): void {
    for (let node = head; node !== -1; node = next[node]) {
      if (this.#originCount === this.#origins.length) this.#growOrigins();
      this.#origins[this.#originCount++] = seqs[node];
    }
  }

  #growOrigins(): void {
    const grown = new Float64Array(this.#origins.length * 2);
    grown.set(this.#origins);
    this.#origins = grown;
  }

  /** Record that the last appended entry also serves request `seq`. */
  addOrigin(seq: number): void {
    if (this.#originCount === this.#origins.length) this.#growOrigins();
    this.#origins[this.#originCount++] = seq;
  }

  /** Index of entry `i`'s first sequence number (for {@linkcode EntryWriter.originAt}). */
  originsFrom(i: number): number {
    return this.#originStart[i];
  }

  /** One past entry `i`'s last sequence number. */
  originsTo(i: number): number {
    return i + 1 < this.count ? this.#originStart[i + 1] : this.#originCount;
  }

  /** Sequence number at `k` (originsFrom(i) ≤ k < originsTo(i)). */
  originAt(k: number): number {
    return this.#origins[k];
  }

  /** Snapshot of the requests entry `i` serves, ascending, each once (allocates: for inspection and tests). */
  originsOf(i: number): number[] {
    const seqs = new Set<number>();
    for (let k = this.originsFrom(i); k < this.originsTo(i); k++) seqs.add(this.#origins[k]);
    return [...seqs].sort((a, b) => a - b);
  }

  /** Forget the entries (keeps the memory). */
  reset(): void {
    this.count = 0;
    this.#originCount = 0;
  }

  /** Whole-batch views by entry count (up to 1024 entries), made once per buffer: sending allocates nothing. */
  #views: (Uint8Array | undefined)[] = [];
  #viewsOf?: ArrayBufferLike;

  /** The bytes of entries [from, count). */
  tail(from: number): Uint8Array {
    const end = this.count * this.entryLength;
    if (from !== 0 || this.count > 1024) return this.bytes.subarray(from * this.entryLength, end);
    if (this.#viewsOf !== this.bytes.buffer) {
      this.#views = [];
      this.#viewsOf = this.bytes.buffer;
    }
    return this.#views[this.count] ??= this.bytes.subarray(0, end);
  }
}
