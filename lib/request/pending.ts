/**
 * Pending invalidations of one unit (a host target, or one ASID of an SMMUv3 vIOMMU), coalesced: overlapping and
 * adjacent page ranges merge, ranges inside a pending whole-space flush vanish, and past a threshold the unit
 * escalates to whole-space. LEAF survives a merge only if every merged request had it. Each piece remembers the
 * guest requests merged into it (their sequence numbers), so a host failure maps back to them.
 *
 * Over-invalidation is allowed; under-invalidation never: every page added stays covered until taken.
 *
 * The set sits on the relay's hot path, so after warm-up it allocates nothing: range objects live in a pool that
 * only grows, and the requests behind each range are a linked list in typed arrays (merging two ranges joins two
 * lists in O(1)). {@linkcode PendingSet.ranges} and {@linkcode PendingSet.allOrigins} are snapshots for
 * inspection; compilers read {@linkcode PendingSet.rangeAt} and {@linkcode PendingSet.copyOrigins}.
 *
 * @module
 */

/** One coalesced page range, as a snapshot. */
export interface PendingRange {
  /** First page. */
  readonly first: number;
  /** Last page (inclusive). */
  readonly last: number;
  /** Every merged request was leaf-only. */
  readonly leaf: boolean;
  /** Sequence numbers of the guest requests merged into it, ascending, each once. */
  readonly origins: number[];
}

/** A live range of the set: valid until the set changes. */
export interface PendingRangeView {
  /** First page of the range. */
  readonly first: number;
  /** Last page of the range (inclusive). */
  readonly last: number;
  /** Every request merged into it was leaf-only. */
  readonly leaf: boolean;
}

/**
 * Receives the sequence numbers behind a range ({@linkcode PendingSet.copyOrigins}): a linked list in typed arrays,
 * walked by the sink itself — one call per range, so no sequence number crosses a call boundary (where V8 would box
 * a double).
 */
export interface OriginSink {
  /** Append the list starting at node `head`: `seqs[node]`, then `next[node]` until -1. */
  addOriginList(seqs: Float64Array, next: Int32Array, head: number): void;
}

/** When to give up on ranges and flush the whole unit instead. */
export interface EscalationLimits {
  /** More distinct ranges than this escalate to whole-space. */
  readonly maxRanges: number;
  /** More pages than this (summed over ranges) escalate to whole-space. */
  readonly maxPages: number;
  /**
   * Merge adjacent and overlapping ranges (default). Off models a relay that batches without merging (one entry per
   * guest request), for policy comparisons.
   */
  readonly merge?: boolean;
}

/** {@linkcode PendingSet.copyOrigins}'s index for the whole-space flush. */
export const ALL_ORIGINS: number = -1;

class Range implements PendingRangeView {
  first = 0;
  last = 0;
  leaf = false;
  /** First and last node of this range's origin list. */
  head = -1;
  tail = -1;
}

const NONE = -1;

/**
 * The pending set of one unit.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { PendingSet } from "./pending.ts";
 * const p = new PendingSet({ maxRanges: 64, maxPages: 1 << 18 });
 * p.addRange(10, 2, true, 1);
 * p.addRange(12, 4, false, 2);
 * assert.deepEqual(p.ranges, [{ first: 10, last: 15, leaf: false, origins: [1, 2] }]);
 * ```
 */
export class PendingSet {
  /** A whole-space flush is pending (then there are no ranges). */
  all = false;
  /** Live ranges: sorted, disjoint, non-adjacent (in arrival order when merging is off). */
  rangeCount = 0;
  /** Pages covered by the ranges. */
  pages = 0;
  /** Requests added (before coalescing). */
  added = 0;
  /** Ranges [0, rangeCount) are live; the rest are spares kept for reuse. */
  readonly #pool: Range[] = [];
  /** Origin nodes: a sequence number and the next node of the same list. */
  #seq = new Float64Array(16);
  #next = new Int32Array(16);
  #nodes = 0;
  #allHead = NONE;
  #allTail = NONE;

  /** An empty set that escalates to coarser invalidations past `limits`. */
  constructor(readonly limits: EscalationLimits) {}

  /** Whether nothing is pending. */
  get empty(): boolean {
    return !this.all && this.rangeCount === 0;
  }

  /** Live range `i` (0 ≤ i < rangeCount). */
  rangeAt(i: number): PendingRangeView {
    return this.#pool[i];
  }

  /** Hand the requests behind range `which` (or {@linkcode ALL_ORIGINS}) to `sink`, allocating nothing. */
  copyOrigins(which: number, sink: OriginSink): void {
    sink.addOriginList(this.#seq, this.#next, which === ALL_ORIGINS ? this.#allHead : this.#pool[which].head);
  }

  /** Snapshot of the ranges with their origins (allocates: for inspection and tests). */
  get ranges(): PendingRange[] {
    const out: PendingRange[] = [];
    for (let i = 0; i < this.rangeCount; i++) {
      const r = this.#pool[i];
      out.push({ first: r.first, last: r.last, leaf: r.leaf, origins: this.#list(r.head) });
    }
    return out;
  }

  /** Snapshot of the requests merged into the whole-space flush, ascending. */
  get allOrigins(): number[] {
    return this.#list(this.#allHead);
  }

  #list(head: number): number[] {
    const seqs = new Set<number>();
    for (let node = head; node !== NONE; node = this.#next[node]) seqs.add(this.#seq[node]);
    return [...seqs].sort((a, b) => a - b);
  }

  #node(seq: number): number {
    if (this.#nodes === this.#seq.length) {
      const seqs = new Float64Array(this.#seq.length * 2), next = new Int32Array(this.#next.length * 2);
      seqs.set(this.#seq);
      next.set(this.#next);
      this.#seq = seqs;
      this.#next = next;
    }
    const n = this.#nodes++;
    this.#seq[n] = seq;
    this.#next[n] = NONE;
    return n;
  }

  /** Append the list head..tail to the whole-space list. */
  #toAll(head: number, tail: number): void {
    if (this.#allHead === NONE) this.#allHead = head;
    else this.#next[this.#allTail] = head;
    this.#allTail = tail;
  }

  /** Make room for a range at `i` (reusing a spare object) and return it. */
  #insertAt(i: number): Range {
    const pool = this.#pool;
    if (this.rangeCount === pool.length) pool.push(new Range());
    const spare = pool[this.rangeCount];
    for (let k = this.rangeCount; k > i; k--) pool[k] = pool[k - 1];
    pool[i] = spare;
    this.rangeCount++;
    return spare;
  }

  /** Drop live ranges [from, to), moving their objects behind the live ones as spares. */
  #removeRanges(from: number, to: number): void {
    if (to <= from) return;
    // Rotate [from, rangeCount) left by (to - from): three reversals, in place.
    this.#reverse(from, to - 1);
    this.#reverse(to, this.rangeCount - 1);
    this.#reverse(from, this.rangeCount - 1);
    this.rangeCount -= to - from;
  }

  #reverse(i: number, j: number): void {
    const pool = this.#pool;
    for (; i < j; i++, j--) {
      const t = pool[i];
      pool[i] = pool[j];
      pool[j] = t;
    }
  }

  /** Add a whole-space invalidation. */
  addAll(origin: number): void {
    this.added++;
    this.escalate();
    const node = this.#node(origin);
    this.#toAll(node, node);
  }

  /** Add `pages` pages from `first`. */
  addRange(first: number, pages: number, leaf: boolean, origin: number): void {
    this.added++;
    const node = this.#node(origin);
    if (this.all) {
      this.#toAll(node, node);
      return;
    }
    const last = first + pages - 1;
    const pool = this.#pool;
    if (this.limits.merge === false) {
      const r = this.#insertAt(this.rangeCount);
      r.first = first;
      r.last = last;
      r.leaf = leaf;
      r.head = r.tail = node;
      this.pages += pages;
      return;
    }
    // Find the ranges that overlap or touch [first, last]: they merge into one.
    let lo = 0;
    let hi = this.rangeCount;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (pool[mid].last + 1 < first) lo = mid + 1;
      else hi = mid;
    }
    let end = lo;
    while (end < this.rangeCount && pool[end].first <= last + 1) end++;
    if (end === lo) {
      const r = this.#insertAt(lo);
      r.first = first;
      r.last = last;
      r.leaf = leaf;
      r.head = r.tail = node;
      this.pages += pages;
    } else {
      // The first overlapping range absorbs the others and the new request.
      const r = pool[lo];
      this.pages -= r.last - r.first + 1;
      let f = Math.min(first, r.first), l = Math.max(last, r.last), lf = leaf && r.leaf;
      for (let k = lo + 1; k < end; k++) {
        const o = pool[k];
        f = Math.min(f, o.first);
        l = Math.max(l, o.last);
        lf = lf && o.leaf;
        this.pages -= o.last - o.first + 1;
        this.#next[r.tail] = o.head;
        r.tail = o.tail;
      }
      this.#next[r.tail] = node;
      r.tail = node;
      r.first = f;
      r.last = l;
      r.leaf = lf;
      this.pages += l - f + 1;
      this.#removeRanges(lo + 1, end);
    }
    if (this.rangeCount > this.limits.maxRanges || this.pages > this.limits.maxPages) this.escalate();
  }

  /** Turn everything pending into one whole-space flush. */
  escalate(): void {
    if (this.all) return;
    for (let i = 0; i < this.rangeCount; i++) {
      const r = this.#pool[i];
      this.#toAll(r.head, r.tail);
    }
    this.all = true;
    this.rangeCount = 0;
    this.pages = 0;
  }

  /** Whether page `page` is covered by what is pending. */
  covers(page: number): boolean {
    if (this.all) return true;
    for (let i = 0; i < this.rangeCount; i++) {
      const r = this.#pool[i];
      if (r.first <= page && page <= r.last) return true;
    }
    return false;
  }

  /** Forget everything (after it was compiled: the entry writer holds copies of the origins). */
  clear(): void {
    this.all = false;
    this.rangeCount = 0;
    this.pages = 0;
    this.added = 0;
    this.#nodes = 0;
    this.#allHead = this.#allTail = NONE;
  }
}
