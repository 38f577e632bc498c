import assert from "node:assert/strict";
import {
  IOMMU_HWPT_INVALIDATE,
  IOMMUFD_UAPI,
  IommuHwptInvalidate,
  IommuHwptVtdS1Invalidate,
  UapiError,
} from "../../lib/uapi/mod.ts";
import { checkBadInputs, fuzzDecoders } from "./bad_input.ts";

Deno.test("iommufd: every decoder rejects bad input with a typed error naming struct and field", () => {
  const cases = checkBadInputs(IOMMUFD_UAPI.structs);
  assert.ok(cases > 60, `only ${cases} cases`);
});

Deno.test("iommufd: random and mutated inputs yield only UapiError", () => {
  const seed = 0x10aa;
  const rejected = fuzzDecoders(IOMMUFD_UAPI.structs, 20_000, seed);
  assert.ok(rejected > 0);
});

Deno.test("iommufd: iommu_hwpt_invalidate encodes to the kernel's byte layout", () => {
  const buf = IommuHwptInvalidate.buffer();
  buf.set("hwpt_id", 0x11223344).setU64("data_uptr", 0x0102_0304_0506_0708n).set("data_type", 0xdeadbeef)
    .set("entry_len", 8).set("entry_num", 3);
  assert.deepEqual(
    Array.from(buf.bytes),
    [
      32,
      0,
      0,
      0,
      0x44,
      0x33,
      0x22,
      0x11,
      8,
      7,
      6,
      5,
      4,
      3,
      2,
      1, //
      0xef,
      0xbe,
      0xad,
      0xde,
      8,
      0,
      0,
      0,
      3,
      0,
      0,
      0,
      0,
      0,
      0,
      0,
    ],
  );
  assert.equal(IOMMU_HWPT_INVALIDATE.request, 0x3b8d);
  assert.deepEqual(buf.decode().entry_num, 3);
});

Deno.test("iommufd: a whole-space VT-d invalidation carries npages = U64_MAX", () => {
  const entry = IommuHwptVtdS1Invalidate.buffer().setU64("addr", 0).setU64("npages", 0xffff_ffff_ffff_ffffn);
  assert.equal(entry.getU64("npages"), 0xffff_ffff_ffff_ffffn);
  assert.throws(() => entry.set("flags", 2).decode(), (e) => e instanceof UapiError && e.reason === "unknown-flags");
});

Deno.test("iommufd: 64-bit fields set from a number equal the bigint encoding", () => {
  const a = IommuHwptVtdS1Invalidate.buffer().setU64("addr", 2 ** 53 - 4096);
  const b = IommuHwptVtdS1Invalidate.buffer().setU64("addr", 2n ** 53n - 4096n);
  assert.deepEqual(a.bytes, b.bytes);
  // The highest page's address is exact although it is far above 2^53.
  a.setPageAddress("addr", 2 ** 52 - 1);
  assert.equal(a.getU64("addr"), (2n ** 52n - 1n) << 12n);
  assert.throws(() => a.setPageAddress("addr", 2 ** 52), (e) => e instanceof UapiError && e.reason === "out-of-range");
  assert.throws(() => a.setU64("addr", 2 ** 53), (e) => e instanceof UapiError && e.reason === "out-of-range");
  assert.throws(() => a.setU64("addr", -1), (e) => e instanceof UapiError && e.reason === "out-of-range");
});
