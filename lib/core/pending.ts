/**
 * Pending invalidations of one unit (a host target, or one ASID of an SMMUv3 vIOMMU), coalesced: overlapping and
 * adjacent page ranges merge, ranges inside a pending whole-space flush vanish, and past a threshold the unit
 * escalates to whole-space. LEAF survives a merge only if every merged request had it. Each piece remembers the
 * guest requests merged into it (their sequence numbers), so a host failure maps back to them.
 *
 * Over-invalidation is allowed; under-invalidation never: every page added stays covered until taken.
 *
 * @module
 */

/** One coalesced page range. */
export interface PendingRange {
  /** First page. */
  first: number;
  /** Last page (inclusive). */
  last: number;
  /** Every merged request was leaf-only. */
  leaf: boolean;
  /** Sequence numbers of the guest requests merged into it, ascending. */
  origins: number[];
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

function mergeOrigins(a: number[], b: number[]): number[] {
  if (b.length === 1 && a.length && a[a.length - 1] < b[0]) {
    a.push(b[0]);
    return a;
  }
  return [...new Set([...a, ...b])].sort((x, y) => x - y);
}

/**
 * The pending set of one unit.
 *
 * @example
 * ```ts
 * import { PendingSet } from "./pending.ts";
 * const p = new PendingSet({ maxRanges: 64, maxPages: 1 << 18 });
 * p.addRange(10, 2, true, 1);
 * p.addRange(12, 4, false, 2);
 * console.log(p.ranges); // [{ first: 10, last: 15, leaf: false, origins: [1, 2] }]
 * ```
 */
export class PendingSet {
  /** A whole-space flush is pending (then `ranges` is empty). */
  all = false;
  /** Requests merged into the whole-space flush. */
  allOrigins: number[] = [];
  /** Sorted, disjoint, non-adjacent ranges. */
  ranges: PendingRange[] = [];
  /** Pages covered by `ranges`. */
  pages = 0;
  /** Requests added (before coalescing). */
  added = 0;

  constructor(readonly limits: EscalationLimits) {}

  /** Whether nothing is pending. */
  get empty(): boolean {
    return !this.all && this.ranges.length === 0;
  }

  /** Add a whole-space invalidation. */
  addAll(origin: number): void {
    this.added++;
    this.escalate();
    this.allOrigins = mergeOrigins(this.allOrigins, [origin]);
  }

  /** Add `pages` pages from `first`. */
  addRange(first: number, pages: number, leaf: boolean, origin: number): void {
    this.added++;
    if (this.all) {
      this.allOrigins = mergeOrigins(this.allOrigins, [origin]);
      return;
    }
    let last = first + pages - 1;
    let origins = [origin];
    if (this.limits.merge === false) {
      this.ranges.push({ first, last, leaf, origins });
      this.pages += pages;
      return;
    }
    // Find the ranges that overlap or touch [first, last]: they merge into one.
    const rs = this.ranges;
    let lo = 0;
    let hi = rs.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (rs[mid].last + 1 < first) lo = mid + 1;
      else hi = mid;
    }
    let end = lo;
    while (end < rs.length && rs[end].first <= last + 1) {
      const r = rs[end];
      first = Math.min(first, r.first);
      last = Math.max(last, r.last);
      leaf = leaf && r.leaf;
      origins = mergeOrigins(r.origins, origins);
      this.pages -= r.last - r.first + 1;
      end++;
    }
    rs.splice(lo, end - lo, { first, last, leaf, origins });
    this.pages += last - first + 1;
    if (rs.length > this.limits.maxRanges || this.pages > this.limits.maxPages) this.escalate();
  }

  /** Turn everything pending into one whole-space flush. */
  escalate(): void {
    if (this.all) return;
    let origins = this.allOrigins;
    for (const r of this.ranges) origins = mergeOrigins(origins, r.origins);
    this.all = true;
    this.allOrigins = origins;
    this.ranges = [];
    this.pages = 0;
  }

  /** Whether page `page` is covered by what is pending. */
  covers(page: number): boolean {
    return this.all || this.ranges.some((r) => r.first <= page && page <= r.last);
  }

  /** Forget everything (after it was sent). */
  clear(): void {
    this.all = false;
    // The compiled entries keep the origin arrays (for failure attribution), never the ranges array itself: that one
    // is emptied in place, and a fresh allOrigins is made only if the old one was used.
    if (this.allOrigins.length) this.allOrigins = [];
    this.ranges.length = 0;
    this.pages = 0;
    this.added = 0;
  }
}
