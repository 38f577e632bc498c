/**
 * A guest-side VT-d page-table builder for shadow-mode tests: writes second-level (`vtd-sl`) or first-level
 * (`vtd-fl`) tables into a guest RAM buffer, as a guest IOMMU driver would, allocating table pages from a region.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { GuestPageTables } from "./page_tables.ts";
 * import { walkRange } from "./walk.ts";
 * const ram = new Uint8Array(1 << 22);
 * const t = new GuestPageTables(ram, { format: "vtd-sl", levels: 4, tablesAt: 0x10_0000 });
 * t.map(0x1000, 0x200, { read: true, write: false });
 * const memory = { read: (a: number, n: number) => ram.slice(a, a + n) };
 * assert.equal(walkRange(memory, t.config, 0x1000, 1, ram.length).runs[0].gpaPage, 512);
 * ```
 *
 * @module
 */
import type { PageTableConfig } from "./walk.ts";

/** Permissions of a guest mapping. */
export interface GuestPerm {
  /** The device may read through the mapping (VT-d SL R, bit 0; FL P). */
  readonly read: boolean;
  /** The device may write through the mapping (VT-d SL W, bit 1; FL R/W, bit 1). */
  readonly write: boolean;
}

/** Builds and edits a guest table in `ram`. */
export class GuestPageTables {
  /** The table built, as a shadowed domain is given it (format, root, levels). */
  readonly config: PageTableConfig;
  readonly #ram: DataView;
  #next: number;
  readonly #end: number;

  /** A new empty table in `ram`, its pages taken from [tablesAt, tablesEnd) (default: to the end of `ram`). */
  constructor(
    ram: Uint8Array,
    opts: { format: "vtd-sl" | "vtd-fl"; levels: 4 | 5; tablesAt: number; tablesEnd?: number },
  ) {
    this.#ram = new DataView(ram.buffer, ram.byteOffset, ram.byteLength);
    this.#next = opts.tablesAt;
    this.#end = opts.tablesEnd ?? ram.byteLength;
    this.config = { format: opts.format, root: this.#alloc(), levels: opts.levels };
  }

  #alloc(): number {
    const at = this.#next;
    if (at + 4096 > this.#end) throw new RangeError("out of table pages");
    this.#next += 4096;
    for (let i = 0; i < 4096; i += 4) this.#ram.setUint32(at + i, 0, true);
    return at;
  }

  #entry(perm: GuestPerm, addressPage: number, large: boolean): [number, number] {
    const fl = this.config.format === "vtd-fl";
    let lo = fl ? 1 | (perm.write ? 2 : 0) : (perm.read ? 1 : 0) | (perm.write ? 2 : 0);
    if (large) lo |= 0x80;
    lo = (lo | ((addressPage % 2 ** 20) * 4096)) >>> 0;
    return [lo, Math.floor(addressPage / 2 ** 20)];
  }

  #write(at: number, [lo, hi]: [number, number]): void {
    this.#ram.setUint32(at, lo, true);
    this.#ram.setUint32(at + 4, hi, true);
  }

  /** The table page holding the entry for `iovaPage` at `level`, creating intermediate tables. */
  #tableFor(iovaPage: number, level: number): number {
    let table = this.config.root;
    for (let l = this.config.levels; l > level; l--) {
      const at = table + (Math.floor(iovaPage / 512 ** (l - 1)) % 512) * 8;
      const lo = this.#ram.getUint32(at, true);
      const present = this.config.format === "vtd-fl" ? (lo & 1) !== 0 : (lo & 3) !== 0;
      if (!present || (lo & 0x80) !== 0) {
        const next = this.#alloc();
        this.#write(at, this.#entry({ read: true, write: true }, next / 4096, false));
        table = next;
      } else table = (lo >>> 12) * 4096 + (this.#ram.getUint32(at + 4, true) & 0xfffff) * 2 ** 32;
    }
    return table;
  }

  /** Map one page (level 1), or one 2 MiB (level 2) / 1 GiB (level 3) page at an aligned IOVA page. */
  map(iovaPage: number, gpaPage: number, perm: GuestPerm, level: 1 | 2 | 3 = 1): void {
    const table = this.#tableFor(iovaPage, level);
    const at = table + (Math.floor(iovaPage / 512 ** (level - 1)) % 512) * 8;
    this.#write(at, this.#entry(perm, gpaPage, level > 1));
  }

  /** Clear the entry for `iovaPage` at `level` (its table stays). */
  unmap(iovaPage: number, level: 1 | 2 | 3 = 1): void {
    const table = this.#tableFor(iovaPage, level);
    this.#write(table + (Math.floor(iovaPage / 512 ** (level - 1)) % 512) * 8, [0, 0]);
  }

  /** Write raw bits at the entry for `iovaPage` at `level` (hostile tables). */
  raw(iovaPage: number, level: number, lo: number, hi: number): void {
    const table = this.#tableFor(iovaPage, level);
    this.#write(table + (Math.floor(iovaPage / 512 ** (level - 1)) % 512) * 8, [lo >>> 0, hi >>> 0]);
  }

  /** The guest-physical address of the table holding `iovaPage`'s entry at `level`. */
  tableAt(iovaPage: number, level: number): number {
    return this.#tableFor(iovaPage, level);
  }
}
