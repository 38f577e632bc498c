// Figures (reported, never asserted): single-entry and 64-entry invalidations of a mock nested HWPT through
// the library's hot path and through the shim's in-process C loop making the same ioctl, in one run.
// Under TCG these are emulated-CPU times: only the ratios mean anything.
import { IOCTL_LOOP, IOCTL_PAIR_LOOP } from "../../ffi/native.ts";
import assert from "node:assert/strict";
import {
  IoasMapFlags,
  IOMMU_HWPT_INVALIDATE,
  IOMMU_IOAS_MAP,
  IOMMU_IOAS_UNMAP,
  IommuHwptInvalidate,
  IommuIoasMap,
  IommuIoasUnmap,
  MockConstants,
} from "../../lib/uapi/mod.ts";
import { MockDevice } from "../../lib/kernel/mod.ts";
import { ShadowDomain } from "../../lib/shadow/domain.ts";
import { KernelShadowIoas } from "../../lib/shadow/kernel_ioas.ts";
import { GuestPageTables } from "../../lib/testing/page_tables.ts";
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
    const rc = shim[IOCTL_LOOP](iommufd.fd, IOMMU_HWPT_INVALIDATE.request, args.bytes, 8, entries, calls);
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

kernelTest(
  "figures: shadow mode, (map-side, unmap-side) invalidation pair vs a C loop making the same IOAS calls",
  [],
  () => {
    using iommufd = openIommufd();
    using ioas = iommufd.allocIoas();
    using _dev = MockDevice.create(iommufd, ioas.id); // a mock domain on the IOAS, so maps reach a page table
    const ram = shim.alignedBuffer(16 << 20);
    const tables = new GuestPageTables(ram, { format: "vtd-sl", levels: 4, tablesAt: 0xc0_0000 });
    const port = new KernelShadowIoas(ioas, ram);
    const domain = new ShadowDomain({ read: (a, n) => ram.subarray(a, a + n) }, ram.byteLength, port, tables.config);
    const PAGE = 0x1000, GPA = 0x200; // IOVA 16 MiB (the mock aperture), guest page 0x200
    const pair = () => {
      tables.map(PAGE, GPA, { read: true, write: true });
      const a = domain.sync(PAGE, 1);
      tables.unmap(PAGE);
      const b = domain.sync(PAGE, 1);
      return a.errno || b.errno || (a.maps === 1 && b.unmaps === 1 ? 0 : -1);
    };
    let failures = 0;
    for (let i = 0; i < 200; i++) failures += pair() ? 1 : 0;
    const n = 2000;
    const t0 = performance.now();
    for (let i = 0; i < n; i++) failures += pair() ? 1 : 0;
    const t1 = performance.now();
    const f = IoasMapFlags.values;
    const map = IommuIoasMap.buffer()
      .set("flags", f.IOMMU_IOAS_MAP_FIXED_IOVA | f.IOMMU_IOAS_MAP_READABLE | f.IOMMU_IOAS_MAP_WRITEABLE)
      .set("ioas_id", ioas.id).setU64("length", 4096).setU64("iova", PAGE * 4096);
    const unmap = IommuIoasUnmap.buffer().set("ioas_id", ioas.id).setU64("iova", PAGE * 4096).setU64("length", 4096);
    const memory = ram.subarray(GPA * 4096, GPA * 4096 + 4096);
    const rc = shim[IOCTL_PAIR_LOOP](
      iommufd.fd,
      IOMMU_IOAS_MAP.request,
      map.bytes,
      map.offsetOf("user_va"),
      memory,
      IOMMU_IOAS_UNMAP.request,
      unmap.bytes,
      n,
    );
    const t2 = performance.now();
    assert.equal(failures, 0);
    assert.equal(rc, 0);
    const lib = ((t1 - t0) * 1e6) / n, c = ((t2 - t1) * 1e6) / n;
    console.log(
      `figures: shadow pair: library ${lib.toFixed(0)} ns/pair (walk + diff + 2 ioctls), C loop ${
        c.toFixed(0)
      } ns/pair ` +
        `(2 ioctls), ratio ${(lib / c).toFixed(2)} (${n} pairs, TCG)`,
    );
  },
);
