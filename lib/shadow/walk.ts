/**
 * Guest IOMMU page-table walkers for shadow mode: read the guest's VT-d table over a range of IOVA pages through
 * the VMM's bounds-checked guest memory and return the leaf mappings as runs (contiguous IOVA and guest-physical
 * pages with the same permissions).
 *
 * Formats: VT-d second-level (`vtd-sl`, legacy and scalable mode share its entry: R bit 0, W bit 1, X bit 2, PS bit
 * 7, address 51:12; present when R or W) and first-level (`vtd-fl`, the x86-64 paging entry: P bit 0, R/W bit 1, PS
 * bit 7, XD bit 63), 4 or 5 levels, 2 MiB (level 2) and 1 GiB (level 3) pages. Permissions are the AND over the
 * levels walked. Execute permission is dropped: IOAS mappings have none, and VT-d cannot express execute-only (an
 * SL entry with R = W = 0 is not present; an FL entry is readable whenever present).
 *
 * Hostile tables end in a {@linkcode WalkFault} for the pages concerned — which then stay unmapped on the host, so
 * the device faults, never reads stale memory — and never in an exception or an unbounded walk: a walk reads at
 * most {@linkcode WALK_LIMITS}.tables table pages and visits at most `.leaves` leaf entries; past that the rest of
 * the range is faulted ("budget").
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { walkRange } from "./walk.ts";
 * const ram = new Uint8Array(1 << 20);
 * const v = new DataView(ram.buffer);
 * // SL 4-level: root 0x1000 → 0x2000 → 0x3000 → 0x4000, whose entry 5 maps IOVA page 5 to guest page 0x80 RW.
 * [[0x1000, 0x2000], [0x2000, 0x3000], [0x3000, 0x4000]].forEach(([t, n]) => v.setUint32(t, n | 3, true));
 * v.setUint32(0x4000 + 5 * 8, 0x80000 | 3, true);
 * const memory = { read: (a: number, n: number) => ram.slice(a, a + n), write: () => {} };
 * const w = walkRange(memory, { format: "vtd-sl", root: 0x1000, levels: 4 }, 0, 16, ram.length);
 * assert.deepEqual(w.runs, [{ firstPage: 5, pages: 1, gpaPage: 128, read: true, write: true }]);
 * ```
 *
 * @module
 */

import type { GuestMemoryReader } from "../memory/guest_memory.ts";
export type { GuestMemoryReader } from "../memory/guest_memory.ts";

/** Which table, where. */
export interface PageTableConfig {
  /** VT-d second-level (`vtd-sl`) or first-level (`vtd-fl`, x86-64 paging) entries. */
  readonly format: "vtd-sl" | "vtd-fl";
  /** Guest-physical address of the root table (4 KiB aligned). */
  readonly root: number;
  /** Paging levels: 4 (48-bit IOVA) or 5 (57-bit). */
  readonly levels: 4 | 5;
}

/** A run of leaf mappings: IOVA pages [firstPage, +pages) → guest pages [gpaPage, +pages). */
export interface MappingRun {
  /** First IOVA page. */
  readonly firstPage: number;
  /** Pages in the run. */
  readonly pages: number;
  /** Guest-physical page `firstPage` maps to. */
  readonly gpaPage: number;
  /** Readable: R (SL) or P (FL) at every level walked. */
  readonly read: boolean;
  /** Writable: W (SL) or R/W (FL) at every level walked. */
  readonly write: boolean;
}

/** Pages the walk could not map, and why. */
export interface WalkFault {
  /** First IOVA page left unmapped. */
  readonly firstPage: number;
  /** Pages left unmapped. */
  readonly pages: number;
  /** Table level where the walk stopped (1 = leaf table; 4 or 5 = root). */
  readonly level: number;
  /** Why: a table not in guest RAM, a misaligned root, a large page where the level has none or misaligned, a leaf beyond guest RAM, or the walk's work budget ({@linkcode WALK_LIMITS}) spent. */
  readonly reason:
    | "table-unreadable"
    | "root-misaligned"
    | "reserved-large-page"
    | "large-page-misaligned"
    | "leaf-outside-ram"
    | "budget";
}

/** Work one walk may do. */
export const WALK_LIMITS = { tables: 1 << 16, leaves: 1 << 22 } as const;

/** The result of a walk over a range. */
export interface WalkResult {
  /** Leaf mappings found, merged into runs, in IOVA order. */
  readonly runs: MappingRun[];
  /** Pages that stay unmapped, and why. */
  readonly faults: WalkFault[];
  /** Table pages read from guest memory. */
  readonly tablesRead: number;
}

const ENTRIES = 512;

/**
 * Walk pages [firstPage, firstPage + pages) of the table; leaves pointing beyond `ramBytes` of guest RAM fault.
 */
export function walkRange(
  memory: GuestMemoryReader,
  table: PageTableConfig,
  firstPage: number,
  pages: number,
  ramBytes: number,
  limits: { tables: number; leaves: number } = WALK_LIMITS,
): WalkResult {
  const runs: MappingRun[] = [];
  const faults: WalkFault[] = [];
  const lastPage = firstPage + pages - 1;
  const fl = table.format === "vtd-fl";
  let tablesRead = 0, leaves = 0;
  /** Where the budget ran out: everything from there to lastPage is faulted once, at the end. */
  let budgetFrom: { page: number; level: number } | undefined;
  const fault = (first: number, n: number, level: number, reason: WalkFault["reason"]) => {
    const a = Math.max(first, firstPage), b = Math.min(first + n - 1, lastPage);
    if (b < a) return;
    const prev = faults.at(-1);
    if (prev && prev.reason === reason && prev.level === level && prev.firstPage + prev.pages === a) {
      faults[faults.length - 1] = { ...prev, pages: prev.pages + (b - a + 1) };
    } else faults.push({ firstPage: a, pages: b - a + 1, level, reason });
  };
  const emit = (page: number, n: number, gpaPage: number, read: boolean, write: boolean) => {
    // Clip to the walked range.
    const a = Math.max(page, firstPage), b = Math.min(page + n - 1, lastPage);
    if (b < a) return;
    const gpa = gpaPage + (a - page);
    if ((gpa + (b - a + 1)) * 4096 > ramBytes) return fault(a, b - a + 1, 1, "leaf-outside-ram");
    const prev = runs.at(-1);
    if (
      prev && prev.firstPage + prev.pages === a && prev.gpaPage + prev.pages === gpa && prev.read === read &&
      prev.write === write
    ) {
      runs[runs.length - 1] = { ...prev, pages: prev.pages + (b - a + 1) };
    } else runs.push({ firstPage: a, pages: b - a + 1, gpaPage: gpa, read, write });
  };

  const walk = (tableGpa: number, level: number, base: number, read: boolean, write: boolean): void => {
    const span = 512 ** (level - 1); // pages per entry at this level
    const tableSpan = span * ENTRIES;
    if (++tablesRead > limits.tables) {
      budgetFrom = { page: Math.max(base, firstPage), level };
      return;
    }
    let bytes: Uint8Array;
    try {
      bytes = memory.read(tableGpa, 4096);
    } catch {
      return fault(base, tableSpan, level, "table-unreadable");
    }
    const v = new DataView(bytes.buffer, bytes.byteOffset, 4096);
    const firstIndex = Math.max(0, Math.floor((firstPage - base) / span));
    const lastIndex = Math.min(ENTRIES - 1, Math.floor((lastPage - base) / span));
    for (let i = firstIndex; i <= lastIndex; i++) {
      const lo = v.getUint32(i * 8, true), hi = v.getUint32(i * 8 + 4, true);
      const page = base + i * span;
      const present = fl ? (lo & 1) !== 0 : (lo & 3) !== 0;
      if (!present) continue;
      const r = read && (fl || (lo & 1) !== 0);
      const w = write && (lo & 2) !== 0;
      // Address bits 51:12, as a page number (exact: < 2^40).
      const next = (lo >>> 12) + (hi & 0xfffff) * 2 ** 20;
      const large = level > 1 && (lo & 0x80) !== 0;
      if (level === 1 || large) {
        if (large && level > 3) {
          fault(page, span, level, "reserved-large-page");
          continue;
        }
        if (next % span !== 0) {
          fault(page, span, level, "large-page-misaligned");
          continue;
        }
        if (++leaves > limits.leaves) {
          budgetFrom = { page: Math.max(page, firstPage), level };
          return;
        }
        if (r || w) emit(page, span, next, r, w);
        continue;
      }
      walk(next * 4096, level - 1, page, r, w);
      if (budgetFrom) return;
    }
  };
  if (table.root % 4096 !== 0) {
    fault(firstPage, pages, table.levels, "root-misaligned");
  } else {
    walk(table.root, table.levels, 0, true, true);
    if (budgetFrom) fault(budgetFrom.page, lastPage - budgetFrom.page + 1, budgetFrom.level, "budget");
  }
  return { runs, faults, tablesRead };
}
