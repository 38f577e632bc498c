/**
 * The kernel selftest's mock format (`struct iommu_hwpt_invalidate_selftest`, 8 bytes), so the real-kernel suite
 * runs the same pipeline as VT-d. The mock IOTLB has 4 slots and no pages or PASIDs, so a fixed rule maps requests
 * onto it:
 *
 * - a whole-space flush of a target → one entry with `IOMMU_TEST_INVALIDATE_FLAG_ALL`;
 * - anything narrower (a PASID, a range, any number of ranges) → one entry zeroing slot `pasid mod 4` of the
 *   target, where `pasid` is the PASID the target is bound at (the RID counts as PASID 0).
 *
 * The kernel then checks batching, entry_num, errors and attachment; range semantics rest on the VT-d and SMMUv3
 * compilers' spec tests and the in-process host.
 *
 * @module
 */
import { ALL_ORIGINS, type PendingSet } from "../request/pending.ts";
import type { PasidOrRid } from "../request/request.ts";
import { MockConstants } from "../uapi/mod.ts";
import type { EntryWriter } from "./entries.ts";

/** One entry serving every range's requests: the mock has no pages, so all ranges collapse into one slot flush. */
function appendForEveryRange(pending: PendingSet, out: EntryWriter): number {
  const at = out.append();
  for (let i = 0; i < pending.rangeCount; i++) pending.copyOrigins(i, out);
  return at;
}

/** `IOMMU_HWPT_INVALIDATE_DATA_SELFTEST`. */
export const SELFTEST_DATA_TYPE: number = MockConstants.values.IOMMU_HWPT_INVALIDATE_DATA_SELFTEST;
const ALL = MockConstants.values.IOMMU_TEST_INVALIDATE_FLAG_ALL;

/** `IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST`. */
export const SELFTEST_VIOMMU_DATA_TYPE: number = MockConstants.values.IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST;

/** The mock IOTLB slot the rule assigns to a target bound at `pasid`. */
export function selftestSlot(pasid: PasidOrRid): number {
  return pasid === "rid" ? 0 : pasid % MockConstants.values.MOCK_NESTED_DOMAIN_IOTLB_NUM;
}

/**
 * Write the (single) entry for one mock nested HWPT's pending set.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { PendingSet } from "../request/pending.ts";
 * import { EntryWriter } from "./entries.ts";
 * import { compileSelftest } from "./selftest.ts";
 * const p = new PendingSet({ maxRanges: 64, maxPages: 1 << 20 });
 * p.addRange(1, 1, false, 7);
 * p.addRange(9, 1, false, 8);
 * const w = new EntryWriter(8);
 * compileSelftest(p, 6, w);
 * assert.equal(w.count, 1);
 * assert.equal(w.view.getUint32(4, true), 2);
 * assert.deepEqual(w.originsOf(0), [7, 8]);
 * ```
 */
export function compileSelftest(pending: PendingSet, pasid: PasidOrRid, out: EntryWriter): void {
  if (pending.all) {
    const at = out.appendFor(pending, ALL_ORIGINS);
    out.view.setUint32(at, ALL, true);
    return;
  }
  if (pending.rangeCount === 0) return;
  const at = appendForEveryRange(pending, out);
  out.view.setUint32(at + 4, selftestSlot(pasid), true);
}

/**
 * The selftest vIOMMU's entries (`struct iommu_viommu_invalidate_selftest`, 12 bytes): the same rule, applied to
 * the device cache of the virtual device `vdevId` (4 slots): whole space → `FLAG_ALL`, narrower → slot
 * `pasid mod 4`. This is how the kernel suite drives the vIOMMU-targeted path SMMUv3 uses.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { PendingSet } from "../request/pending.ts";
 * import { EntryWriter } from "./entries.ts";
 * import { compileSelftestViommu } from "./selftest.ts";
 * const p = new PendingSet({ maxRanges: 64, maxPages: 1 << 20 });
 * p.addAll(3);
 * const w = new EntryWriter(12);
 * compileSelftestViommu(p, 0x99, "rid", w);
 * assert.equal(w.view.getUint32(0, true), 1);
 * assert.equal(w.view.getUint32(4, true), 153);
 * ```
 */
export function compileSelftestViommu(pending: PendingSet, vdevId: number, pasid: PasidOrRid, out: EntryWriter): void {
  if (pending.all) {
    const at = out.appendFor(pending, ALL_ORIGINS);
    out.view.setUint32(at, ALL, true);
    out.view.setUint32(at + 4, vdevId, true);
    return;
  }
  if (pending.rangeCount === 0) return;
  const at = appendForEveryRange(pending, out);
  out.view.setUint32(at + 4, vdevId, true);
  out.view.setUint32(at + 8, selftestSlot(pasid), true);
}
