/**
 * What shadow mode has mapped on the host for one domain: sorted, non-overlapping areas (IOVA pages → guest pages,
 * permissions), each exactly one `IOMMU_IOAS_MAP` — the kernel unmaps only whole areas, so the map must know them.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { AreaMap } from "./areas.ts";
 * const m = new AreaMap();
 * m.insert({ firstPage: 10, pages: 4, gpaPage: 100, read: true, write: false });
 * m.insert({ firstPage: 0, pages: 2, gpaPage: 7, read: true, write: true });
 * assert.deepEqual(m.overlapping(1, 11).map((a) => a.firstPage), [0, 10]);
 * ```
 *
 * @module
 */
import type { MappingRun } from "./walk.ts";

/** One host mapping. */
export type Area = MappingRun;

/** Sorted, non-overlapping areas. */
export class AreaMap {
  readonly #areas: Area[] = [];

  /** All areas, in IOVA order. */
  get all(): readonly Area[] {
    return this.#areas;
  }

  /** Number of areas in the map. */
  get size(): number {
    return this.#areas.length;
  }

  /** Index of the first area whose last page is >= `page`. */
  #lowerBound(page: number): number {
    let lo = 0, hi = this.#areas.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      const a = this.#areas[mid];
      if (a.firstPage + a.pages - 1 < page) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** Areas with a page in [first, last], in order. */
  overlapping(first: number, last: number): Area[] {
    const out: Area[] = [];
    for (let i = this.#lowerBound(first); i < this.#areas.length && this.#areas[i].firstPage <= last; i++) {
      out.push(this.#areas[i]);
    }
    return out;
  }

  /** Add an area; it must not overlap any (a RangeError otherwise: the caller's bookkeeping is wrong). */
  insert(area: Area): void {
    const i = this.#lowerBound(area.firstPage);
    const next = this.#areas[i];
    if (next && next.firstPage <= area.firstPage + area.pages - 1) {
      throw new RangeError(`area at page ${area.firstPage} overlaps the area at ${next.firstPage}`);
    }
    this.#areas.splice(i, 0, area);
  }

  /** Remove exactly `area` (same object). */
  remove(area: Area): void {
    const i = this.#lowerBound(area.firstPage);
    if (this.#areas[i] !== area) throw new RangeError(`no area starts at page ${area.firstPage}`);
    this.#areas.splice(i, 1);
  }

  /** The mapping of `page`, if any. */
  lookup(page: number): { gpaPage: number; read: boolean; write: boolean } | undefined {
    const a = this.#areas[this.#lowerBound(page)];
    if (!a || a.firstPage > page) return undefined;
    return { gpaPage: a.gpaPage + (page - a.firstPage), read: a.read, write: a.write };
  }
}
