/**
 * VT-d stage-1 entries (`struct iommu_hwpt_vtd_s1_invalidate`, 24 bytes): the target is the nested HWPT bound to
 * the PASID; a range is `{addr, npages, LEAF}`; the whole space is `{0, U64_MAX}`. PASID and DID are not in the
 * entry: they come from where the HWPT is attached. Device-TLB (ATS) invalidation is the kernel's job on VT-d.
 *
 * @module
 */
import { ALL_ORIGINS, type PendingSet } from "../request/pending.ts";
import { HwptInvalidateDataType, IommuHwptVtdS1Invalidate, writePageAddress, writeU64 } from "../uapi/mod.ts";
import type { EntryWriter } from "./entries.ts";

/** `IOMMU_HWPT_INVALIDATE_DATA_VTD_S1`. */
export const VTD_DATA_TYPE: number = HwptInvalidateDataType.values.IOMMU_HWPT_INVALIDATE_DATA_VTD_S1;
const F = IommuHwptVtdS1Invalidate.fields;
const LEAF = HwptInvalidateDataType.values.IOMMU_VTD_INV_FLAGS_LEAF;

/**
 * Write the entries for one nested HWPT's pending set.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { PendingSet } from "../request/pending.ts";
 * import { EntryWriter } from "./entries.ts";
 * import { compileVtd } from "./vtd.ts";
 * const p = new PendingSet({ maxRanges: 64, maxPages: 1 << 20 });
 * p.addRange(0x7f000, 512, true, 1);
 * const w = new EntryWriter(24);
 * compileVtd(p, w);
 * assert.equal(w.count, 1);
 * assert.equal(w.view.getBigUint64(0, true), 0x7f000000n);
 * ```
 */
export function compileVtd(pending: PendingSet, out: EntryWriter): void {
  if (pending.all) {
    const at = out.appendFor(pending, ALL_ORIGINS);
    writeU64(out.view, at + F.addr.offset, 0);
    out.view.setUint32(at + F.npages.offset, 0xffff_ffff, true);
    out.view.setUint32(at + F.npages.offset + 4, 0xffff_ffff, true);
    return;
  }
  for (let i = 0; i < pending.rangeCount; i++) {
    const r = pending.rangeAt(i);
    const at = out.appendFor(pending, i);
    writePageAddress(out.view, at + F.addr.offset, r.first);
    writeU64(out.view, at + F.npages.offset, r.last - r.first + 1);
    if (r.leaf) out.view.setUint32(at + F.flags.offset, LEAF, true);
  }
}
