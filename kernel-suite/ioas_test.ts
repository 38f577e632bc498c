// IOAS allocation, mapping, unmapping and IOVA ranges against the real iommufd, checked through the mock
// domain's own page table (IOMMU_TEST_OP_MD_CHECK_MAP reads back the user address our pointer patching stored).
import assert from "node:assert/strict";
import { KernelError, MockDevice, mockMapTranslatesTo } from "../lib/kernel/mod.ts";
import { IommufdOption, MockConstants } from "../lib/uapi/mod.ts";
import { kernelTest, openIommufd, shim } from "./harness.ts";

const PAGE = 4096;
const BASE = MockConstants.values.MOCK_APERTURE_START;

kernelTest("ioas: alloc, destroy, and destroying twice is ENOENT", ["selftest"], () => {
  using iommufd = openIommufd();
  const ioas = iommufd.allocIoas();
  assert.ok(ioas.id > 0);
  ioas[Symbol.dispose]();
  assert.throws(() => iommufd.destroy(ioas.id), (e) => e instanceof KernelError && e.errnoName === "ENOENT");
});

kernelTest("ioas: map at a fixed IOVA; the mock domain translates it to our memory; unmap returns the bytes", [
  "selftest",
], () => {
  using iommufd = openIommufd();
  using ioas = iommufd.allocIoas();
  using dev = MockDevice.create(iommufd, ioas.id);
  const memory = shim.alignedBuffer(4 * PAGE);
  memory.fill(0xa5);
  assert.equal(ioas.map(memory, { iova: BASE }), BASE);
  assert.ok(mockMapTranslatesTo(iommufd, dev.hwptId, BASE, memory));
  // A wrong user address is a mismatch the kernel reports (EINVAL → false), not a pass.
  const other = shim.alignedBuffer(4 * PAGE);
  assert.equal(mockMapTranslatesTo(iommufd, dev.hwptId, BASE, other), false);
  assert.equal(ioas.unmap(BASE, 4 * PAGE), 4 * PAGE);
  assert.throws(() => ioas.unmap(BASE, 4 * PAGE), (e) => e instanceof KernelError && e.errnoName === "ENOENT");
});

kernelTest("ioas: the kernel picks an IOVA when none is given; overlapping fixed maps are EEXIST", ["selftest"], () => {
  using iommufd = openIommufd();
  using ioas = iommufd.allocIoas();
  using _dev = MockDevice.create(iommufd, ioas.id);
  const a = shim.alignedBuffer(2 * PAGE);
  const iova = ioas.map(a);
  assert.ok(iova >= BASE && iova % 2048 === 0, `iova 0x${iova.toString(16)}`);
  assert.throws(
    () => ioas.map(shim.alignedBuffer(PAGE), { iova }),
    (e) => e instanceof KernelError && e.errnoName === "EEXIST",
  );
});

kernelTest("ioas: IOVA ranges reflect the mock aperture once a mock device is attached", ["selftest"], () => {
  using iommufd = openIommufd();
  using ioas = iommufd.allocIoas();
  const before = ioas.iovaRanges();
  assert.equal(before.ranges.length, 1);
  assert.equal(before.ranges[0].start, 0n);
  using _dev = MockDevice.create(iommufd, ioas.id);
  const after = ioas.iovaRanges();
  assert.deepEqual(after.ranges, [{ start: BigInt(BASE), last: BigInt(MockConstants.values.MOCK_APERTURE_LAST) }]);
  assert.ok(after.alignment >= 2048n);
});

kernelTest("ioas: IOMMU_OPTION reads and writes the per-IOAS huge-pages option", ["selftest"], () => {
  using iommufd = openIommufd();
  using ioas = iommufd.allocIoas();
  const o = IommufdOption.values;
  assert.equal(iommufd.getOption(o.IOMMU_OPTION_HUGE_PAGES, ioas.id), 1n);
  iommufd.setOption(o.IOMMU_OPTION_HUGE_PAGES, 0, ioas.id);
  assert.equal(iommufd.getOption(o.IOMMU_OPTION_HUGE_PAGES, ioas.id), 0n);
  assert.throws(() => iommufd.getOption(7, ioas.id), KernelError);
});

kernelTest(
  "iommufd: only ioctls lib/uapi declares are issued; a look-alike is refused before the kernel sees it",
  [],
  async () => {
    const { defineIoctl, IOMMU_IOAS_ALLOC, IommuIoasAlloc } = await import("../lib/uapi/mod.ts");
    using iommufd = openIommufd();
    const lookAlike = defineIoctl({
      name: "IOMMU_IOAS_ALLOC",
      request: IOMMU_IOAS_ALLOC.request,
      struct: IommuIoasAlloc,
      since: "6.2",
    });
    assert.throws(() => iommufd.call(lookAlike, IommuIoasAlloc.buffer(), "alloc"), TypeError);
    using ioas = iommufd.allocIoas(); // the registered one works
    assert.ok(ioas.id > 0);
  },
);
