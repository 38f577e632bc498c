import assert from "node:assert/strict";
import { PendingSet } from "../../lib/request/pending.ts";
import { EntryWriter } from "../../lib/compile/entries.ts";
import { compileSelftest, selftestSlot } from "../../lib/compile/selftest.ts";
import { IommuHwptInvalidateSelftest } from "../../lib/uapi/mod.ts";

Deno.test("selftest: whole space → ALL; anything narrower → one entry for slot pasid mod 4", () => {
  const all = new PendingSet({ maxRanges: 8, maxPages: 100 });
  all.addAll(4);
  const w = new EntryWriter(8);
  compileSelftest(all, 9, w);
  assert.deepEqual(IommuHwptInvalidateSelftest.decode(w.bytes.subarray(0, 8)), { flags: 1, iotlb_id: 0 });
  const some = new PendingSet({ maxRanges: 8, maxPages: 100 });
  some.addRange(3, 1, true, 5);
  some.addRange(50, 2, false, 6);
  w.reset();
  compileSelftest(some, 7, w);
  assert.equal(w.count, 1);
  assert.deepEqual(IommuHwptInvalidateSelftest.decode(w.bytes.subarray(0, 8)), { flags: 0, iotlb_id: 3 });
  assert.deepEqual(w.originsOf(0), [5, 6]);
  assert.equal(selftestSlot("rid"), 0);
  w.reset();
  compileSelftest(new PendingSet({ maxRanges: 8, maxPages: 100 }), 1, w);
  assert.equal(w.count, 0);
});
