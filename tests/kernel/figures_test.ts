// Figures (reported, never asserted): single-entry and 64-entry invalidations of a mock nested HWPT through
// the library's hot path and through the shim's in-process C loop making the same ioctl, in one run.
// Under TCG these are emulated-CPU times: only the ratios mean anything.
import assert from "node:assert/strict";
import { IOMMU_HWPT_INVALIDATE, IommuHwptInvalidate, MockConstants } from "../../lib/uapi/mod.ts";
import { kernelTest, nestedChain, openIommufd, shim } from "./harness.ts";

const M = MockConstants.values;
const TYPE = M.IOMMU_HWPT_INVALIDATE_DATA_SELFTEST;
const ENTRY = 8;

kernelTest("figures: invalidation cost per entry, library vs in-process C loop", ["hwpt-invalidate"], () => {
  using iommufd = openIommufd();
  using chain = nestedChain(iommufd, 1);
  const nested = chain.nested;
  const lines: string[] = [];
  for (const batch of [1, 64]) {
    const entries = new Uint8Array(batch * ENTRY);
    for (let i = 0; i < batch; i++) new DataView(entries.buffer).setUint32(i * ENTRY + 4, i % 4, true);
    const calls = batch === 1 ? 4000 : 500;
    let failures = 0;
    for (let i = 0; i < 2000; i++) failures += nested.invalidateRaw(TYPE, entries, ENTRY, batch) === 0 ? 0 : 1;
    const t0 = performance.now();
    for (let i = 0; i < calls; i++) failures += nested.invalidateRaw(TYPE, entries, ENTRY, batch) === 0 ? 0 : 1;
    const t1 = performance.now();
    const args = IommuHwptInvalidate.buffer().set("hwpt_id", nested.id).set("data_type", TYPE).set("entry_len", ENTRY)
      .set("entry_num", batch);
    const rc = shim.ioctlLoop(iommufd.fd, IOMMU_HWPT_INVALIDATE.request, args.bytes, 8, entries, calls);
    const t2 = performance.now();
    assert.equal(failures, 0);
    assert.equal(rc, 0);
    const lib = ((t1 - t0) * 1e6) / (calls * batch);
    const c = ((t2 - t1) * 1e6) / (calls * batch);
    lines.push(
      `figures: ${batch}-entry invalidate: library ${lib.toFixed(0)} ns/entry, C loop ${c.toFixed(0)} ns/entry, ` +
        `ratio ${(lib / c).toFixed(2)} (${calls} calls, TCG)`,
    );
  }
  for (const l of lines) console.log(l);
});
