/**
 * Dirty bitmaps: which pages of a guest RAM range were written, one bit per page, in the layout both the kernel's
 * `IOMMU_HWPT_GET_DIRTY_BITMAP` and KVM's `KVM_GET_DIRTY_LOG` use (little-endian u64 words, bit `i` of word `w` is page
 * `64 * w + i`), and how two of them merge — the device's writes and the CPUs' — into the one a migration copies.
 *
 * @module
 */

/** A range of IOVA (or guest-physical) space and the granularity of its bitmap. */
export interface DirtyRange {
  /** First byte; a multiple of `pageSize`. */
  readonly iova: number;
  /** Bytes; a multiple of `pageSize`. */
  readonly length: number;
  /** Bytes per bit: a power of two, at least 512. */
  readonly pageSize: number;
}

function checkRange(r: DirtyRange): void {
  const p = r.pageSize;
  if (!Number.isSafeInteger(p) || p < 512 || !Number.isInteger(Math.log2(p))) {
    throw new RangeError(`dirty bitmap: page size ${p} is not a power of two of at least 512`);
  }
  if (!Number.isSafeInteger(r.iova) || r.iova < 0 || r.iova % p !== 0) {
    throw new RangeError(`dirty bitmap: IOVA 0x${r.iova.toString(16)} is not a multiple of the page size ${p}`);
  }
  if (!Number.isSafeInteger(r.length) || r.length <= 0 || r.length % p !== 0) {
    throw new RangeError(`dirty bitmap: length ${r.length} is not a positive multiple of the page size ${p}`);
  }
  if (r.length / p > 2 ** 32) throw new RangeError(`dirty bitmap: ${r.length / p} pages is more than 2^32`);
}

/**
 * One bit per page of a range, in whole u64 words (what the kernel writes).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { DirtyBitmap } from "./dirty.ts";
 * const b = new DirtyBitmap({ iova: 0x10000, length: 16 * 4096, pageSize: 4096 });
 * b.setPage(3);
 * b.setPage(15);
 * assert.deepEqual(b.dirtyPages(), [3, 15]);
 * assert.equal(b.isDirty(0x10000 + 3 * 4096 + 100), true);
 * assert.equal(b.bytes.byteLength, 8); // 16 bits, one u64 word
 * ```
 */
export class DirtyBitmap implements DirtyRange {
  /** First byte of the range. */
  readonly iova: number;
  /** Bytes of the range. */
  readonly length: number;
  /** Bytes per bit. */
  readonly pageSize: number;
  /** Pages (bits) of the range. */
  readonly pages: number;
  /** The bitmap: `ceil(pages / 64)` little-endian u64 words, as the kernel reads and writes it. */
  readonly bytes: Uint8Array;

  /** An all-clean bitmap of `range` (`bytes` given: over those bytes, which must be the right length). */
  constructor(range: DirtyRange, bytes?: Uint8Array) {
    checkRange(range);
    this.iova = range.iova;
    this.length = range.length;
    this.pageSize = range.pageSize;
    this.pages = range.length / range.pageSize;
    const need = Math.ceil(this.pages / 64) * 8;
    if (bytes !== undefined && bytes.byteLength !== need) {
      throw new RangeError(`dirty bitmap: ${bytes.byteLength} bytes given, ${need} needed for ${this.pages} pages`);
    }
    this.bytes = bytes ?? new Uint8Array(need);
  }

  /** Whether this bitmap is of exactly `range`. */
  covers(range: DirtyRange): boolean {
    return range.iova === this.iova && range.length === this.length && range.pageSize === this.pageSize;
  }

  /** Whether page `index` is dirty. */
  isPageDirty(index: number): boolean {
    if (!Number.isInteger(index) || index < 0 || index >= this.pages) return false;
    return (this.bytes[index >>> 3] & (1 << (index & 7))) !== 0;
  }

  /** Whether the page holding byte `address` is dirty (false outside the range). */
  isDirty(address: number): boolean {
    if (address < this.iova || address >= this.iova + this.length) return false;
    return this.isPageDirty(Math.floor((address - this.iova) / this.pageSize));
  }

  /** Mark page `index` dirty. */
  setPage(index: number): void {
    if (!Number.isInteger(index) || index < 0 || index >= this.pages) {
      throw new RangeError(`dirty bitmap: page ${index} is outside 0..${this.pages - 1}`);
    }
    this.bytes[index >>> 3] |= 1 << (index & 7);
  }

  /** Indices of the dirty pages, ascending. */
  dirtyPages(): number[] {
    const out: number[] = [];
    for (let byte = 0; byte < this.bytes.byteLength; byte++) {
      const v = this.bytes[byte];
      if (v === 0) continue;
      for (let bit = 0; bit < 8; bit++) {
        const page = byte * 8 + bit;
        if ((v & (1 << bit)) !== 0 && page < this.pages) out.push(page);
      }
    }
    return out;
  }

  /** How many pages are dirty. */
  get dirtyCount(): number {
    return this.dirtyPages().length;
  }

  /** Make every page clean. */
  clear(): void {
    this.bytes.fill(0);
  }
}

/**
 * Merge dirty bitmaps of the same memory at any granularities into one of `into`'s range and page size: a page of
 * `into` is dirty when any page of any source overlapping it is. Sources may be offset from `into` (`offset`: the
 * source's address of `into`'s first byte, e.g. the IOVA at which guest-physical 0 is mapped). Parts of a source
 * outside `into` are ignored; parts of `into` no source covers stay as they are.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { DirtyBitmap, mergeDirtyBitmaps } from "./dirty.ts";
 * // KVM's log of guest RAM [0, 64 KiB) at 4 KiB, the device's at 2 KiB with RAM mapped at IOVA 16 MiB.
 * const kvm = new DirtyBitmap({ iova: 0, length: 0x10000, pageSize: 4096 });
 * kvm.setPage(1);
 * const device = new DirtyBitmap({ iova: 0x100_0000, length: 0x10000, pageSize: 2048 });
 * device.setPage(9); // bytes [0x4800, 0x5000): page 4 at 4 KiB
 * const merged = new DirtyBitmap({ iova: 0, length: 0x10000, pageSize: 4096 });
 * mergeDirtyBitmaps(merged, [{ bitmap: kvm }, { bitmap: device, offset: 0x100_0000 }]);
 * assert.deepEqual(merged.dirtyPages(), [1, 4]);
 * ```
 */
export function mergeDirtyBitmaps(
  into: DirtyBitmap,
  sources: readonly { readonly bitmap: DirtyBitmap; readonly offset?: number }[],
): DirtyBitmap {
  for (const { bitmap, offset = 0 } of sources) {
    for (const page of bitmap.dirtyPages()) {
      // The dirty source page, in `into`'s address space.
      const start = bitmap.iova + page * bitmap.pageSize - offset;
      const end = start + bitmap.pageSize;
      const from = Math.max(start, into.iova), to = Math.min(end, into.iova + into.length);
      if (from >= to) continue;
      const first = Math.floor((from - into.iova) / into.pageSize);
      const last = Math.floor((to - 1 - into.iova) / into.pageSize);
      for (let p = first; p <= last; p++) into.setPage(p);
    }
  }
  return into;
}
