/**
 * A growable buffer of fixed-size host entries, reused across flushes so a steady state allocates nothing, with
 * the guest requests behind each entry.
 *
 * @module
 */

/**
 * Entries of one format for one target.
 *
 * @example
 * ```ts
 * import { EntryWriter } from "./entries.ts";
 * const w = new EntryWriter(8);
 * const at = w.append([3]);
 * w.view.setUint32(at, 1, true);
 * console.log(w.count, w.origins[0]); // 1 [3]
 * ```
 */
export class EntryWriter {
  /** The entries, `count * entryLength` bytes used. */
  bytes: Uint8Array;
  /** A view on {@linkcode EntryWriter.bytes}. */
  view: DataView;
  /** Entries written. */
  count = 0;
  /** Per entry: sequence numbers of the guest requests it serves. */
  origins: number[][] = [];

  constructor(readonly entryLength: number, initialEntries = 64) {
    this.bytes = new Uint8Array(entryLength * initialEntries);
    this.view = new DataView(this.bytes.buffer);
  }

  /** Reserve one zeroed entry serving `origins`; returns its byte offset. */
  append(origins: number[]): number {
    const at = this.count * this.entryLength;
    if (at + this.entryLength > this.bytes.byteLength) {
      const grown = new Uint8Array(this.bytes.byteLength * 2);
      grown.set(this.bytes);
      this.bytes = grown;
      this.view = new DataView(grown.buffer);
    }
    this.bytes.fill(0, at, at + this.entryLength);
    this.origins[this.count] = origins;
    this.count++;
    return at;
  }

  /** Forget the entries (keeps the memory). */
  reset(): void {
    this.count = 0;
    this.origins.length = 0;
  }

  #whole?: Uint8Array;

  /** The bytes of entries [from, count). The common whole-batch view is reused, so sending allocates nothing. */
  tail(from: number): Uint8Array {
    const end = this.count * this.entryLength;
    if (from === 0) {
      const w = this.#whole;
      if (w && w.buffer === this.bytes.buffer && w.byteLength === end) return w;
      return this.#whole = this.bytes.subarray(0, end);
    }
    return this.bytes.subarray(from * this.entryLength, end);
  }
}
