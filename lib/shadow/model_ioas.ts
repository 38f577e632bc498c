/**
 * An in-process IOAS with the kernel's rules for `IOMMU_IOAS_MAP` (fixed IOVA) and `IOMMU_IOAS_UNMAP`: a map
 * overlapping an existing area is EEXIST, an unmap must cover whole areas (ENOENT for a partial one or for nothing),
 * and it counts the calls — shadow mode's host for tests and benchmarks. Like the kernel's `iopt_unmap_iova_range`,
 * an unmap is not atomic: it removes the areas in IOVA order and stops at the first it cannot remove (a partial one:
 * ENOENT; a busy one: EBUSY), the areas before it staying removed.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { ModelIoas } from "./model_ioas.ts";
 * const ioas = new ModelIoas();
 * assert.equal(ioas.map(16, 4, 100, true, true), 0);
 * assert.equal(ioas.map(18, 1, 7, true, true), -17); // -EEXIST: page 18 is mapped
 * assert.equal(ioas.unmap(17, 1), -2); // -ENOENT: page 17 alone is not an area
 * ```
 *
 * @module
 */
import { AreaMap } from "./areas.ts";
import type { ShadowIoasPort } from "./domain.ts";

/** The in-process IOAS. */
export class ModelIoas implements ShadowIoasPort {
  /** The mappings, area by area (what the kernel's IOAS would hold). */
  readonly areas: AreaMap = new AreaMap();
  /** map + unmap calls made (successful or not): the syscalls a kernel host would have made. */
  calls = 0;
  /**
   * Fault injection: the next call of `op` (at `firstPage`, if given) fails with `errno`, `times` times (default 1).
   */
  failNext?: { op: "map" | "unmap"; errno: number; firstPage?: number; times?: number };
  /**
   * First pages of areas an in-kernel user holds (the kernel's `area->num_locks`): an unmap reaching one answers
   * EBUSY, the areas before it in the same call already removed.
   */
  readonly busy: Set<number> = new Set();

  #injected(op: "map" | "unmap", firstPage: number): number {
    const f = this.failNext;
    if (!f || f.op !== op || (f.firstPage !== undefined && f.firstPage !== firstPage)) return 0;
    f.times = (f.times ?? 1) - 1;
    if (f.times <= 0) this.failNext = undefined;
    return f.errno;
  }

  /** As the kernel's map: `-EINVAL` for no pages or no permission, `-EEXIST` over an existing mapping, else 0. */
  map(firstPage: number, pages: number, gpaPage: number, read: boolean, write: boolean): number {
    this.calls++;
    const injected = this.#injected("map", firstPage);
    if (injected) return -injected;
    if (pages <= 0 || (!read && !write)) return -22;
    if (this.areas.overlapping(firstPage, firstPage + pages - 1).length) return -17;
    this.areas.insert({ firstPage, pages, gpaPage, read, write });
    return 0;
  }

  /**
   * As the kernel's unmap, not atomic: removes the range's areas in IOVA order and stops at the first that crosses an
   * end of the range (`-ENOENT`) or is busy (`-EBUSY`), keeping what it removed before; `-ENOENT` when there are none.
   */
  unmap(firstPage: number, pages: number): number {
    this.calls++;
    const injected = this.#injected("unmap", firstPage);
    if (injected) return -injected;
    const last = firstPage + pages - 1;
    const inside = this.areas.overlapping(firstPage, last);
    if (inside.length === 0) return -2; // nothing unmapped: ENOENT (iommufd_ioas_unmap)
    for (const a of inside) {
      if (this.busy.has(a.firstPage)) return -16;
      if (a.firstPage < firstPage || a.firstPage + a.pages - 1 > last) return -2;
      this.areas.remove(a);
    }
    return 0;
  }

  /** What the IOAS translates `page` to. */
  lookup(page: number): { gpaPage: number; read: boolean; write: boolean } | undefined {
    return this.areas.lookup(page);
  }
}
