/**
 * Shadow entries (iommu-relay's own, 16 bytes: `first_page u64, pages u64`, `pages = U64_MAX` for the whole space):
 * the ranges a shadowed domain must walk again. The leaf hint does not narrow anything here — the walk re-reads the
 * whole range either way.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { PendingSet } from "../request/pending.ts";
 * import { EntryWriter } from "./entries.ts";
 * import { compileShadow, readShadowEntry } from "./shadow.ts";
 * const p = new PendingSet({ maxRanges: 64, maxPages: 1 << 20 });
 * p.addRange(0x100, 2, false, 1);
 * const w = new EntryWriter(16);
 * compileShadow(p, w);
 * assert.deepEqual(readShadowEntry(w.bytes, 0), { firstPage: 256, pages: 2 });
 * ```
 *
 * @module
 */
import { ALL_ORIGINS, type PendingSet } from "../request/pending.ts";
import { readU64Number, writeU64 } from "../uapi/mod.ts";
import type { EntryWriter } from "./entries.ts";

/** Bytes per shadow entry. */
export const SHADOW_ENTRY_LENGTH = 16;

/** Write the entries for one shadowed domain's pending set. */
export function compileShadow(pending: PendingSet, out: EntryWriter): void {
  if (pending.all) {
    const at = out.appendFor(pending, ALL_ORIGINS);
    out.view.setUint32(at + 8, 0xffff_ffff, true);
    out.view.setUint32(at + 12, 0xffff_ffff, true);
    return;
  }
  for (let i = 0; i < pending.rangeCount; i++) {
    const r = pending.rangeAt(i);
    const at = out.appendFor(pending, i);
    writeU64(out.view, at, r.first);
    writeU64(out.view, at + 8, r.last - r.first + 1);
  }
}

/** Entry `index` of `bytes`: a page range, or `"all"`. */
export function readShadowEntry(bytes: Uint8Array, index: number): { firstPage: number; pages: number } | "all" {
  const v = new DataView(bytes.buffer, bytes.byteOffset + index * SHADOW_ENTRY_LENGTH, SHADOW_ENTRY_LENGTH);
  if (v.getUint32(8, true) === 0xffff_ffff && v.getUint32(12, true) === 0xffff_ffff) return "all";
  return { firstPage: readU64Number(v, 0), pages: readU64Number(v, 8) };
}
