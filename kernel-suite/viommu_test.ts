// vIOMMU (selftest type) + vDEVICE + vIOMMU-targeted invalidation, checked through the mock device cache.
import assert from "node:assert/strict";
import { type Iommufd, KernelError, MockDevice } from "../lib/kernel/mod.ts";
import { HwptAllocFlags, IommuViommuInvalidateSelftest, MockConstants, selftestHwptData } from "../lib/uapi/mod.ts";
import { kernelTest, openIommufd } from "./harness.ts";

const M = MockConstants.values;
const ENTRY = IommuViommuInvalidateSelftest.size;
const CACHE_DEFAULT = M.IOMMU_TEST_DEV_CACHE_DEFAULT;
const VIRT_ID = 0x99;

function viommuChain(iommufd: Iommufd) {
  using stack = new DisposableStack();
  const ioas = stack.use(iommufd.allocIoas());
  const dev = stack.use(MockDevice.create(iommufd, ioas.id));
  const parent = stack.use(iommufd.allocHwpt({
    devId: dev.devId,
    ptId: ioas.id,
    flags: HwptAllocFlags.values.IOMMU_HWPT_ALLOC_NEST_PARENT,
  }));
  const viommu = stack.use(
    iommufd.allocViommu({ type: M.IOMMU_VIOMMU_TYPE_SELFTEST, devId: dev.devId, hwptId: parent.id }),
  );
  const vdev = stack.use(iommufd.allocVdevice(viommu.id, dev.devId, VIRT_ID));
  const owned = stack.move();
  return { ioas, dev, parent, viommu, vdev, [Symbol.dispose]: () => owned.dispose() };
}

function entries(list: [flags: number, vdevId: number, cacheId: number][]): Uint8Array {
  const bytes = new Uint8Array(Math.max(1, list.length) * ENTRY);
  const v = new DataView(bytes.buffer);
  list.forEach(([flags, vdevId, cacheId], i) => {
    v.setUint32(i * ENTRY, flags, true);
    v.setUint32(i * ENTRY + 4, vdevId, true);
    v.setUint32(i * ENTRY + 8, cacheId, true);
  });
  return bytes;
}

function cache(dev: MockDevice): number[] {
  return Array.from(
    { length: M.MOCK_DEV_CACHE_NUM },
    (_, slot) => dev.cacheHolds(slot, 0) ? 0 : dev.cacheHolds(slot, CACHE_DEFAULT) ? CACHE_DEFAULT : -1,
  );
}

const TYPE = M.IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST;

kernelTest("viommu: vIOMMU + vDEVICE; invalidations sent to the vIOMMU reach the device cache", [
  "viommu",
  "vdevice",
  "selftest-dev-cache",
], () => {
  using iommufd = openIommufd();
  using chain = viommuChain(iommufd);
  assert.deepEqual(cache(chain.dev), [CACHE_DEFAULT, CACHE_DEFAULT, CACHE_DEFAULT, CACHE_DEFAULT]);
  assert.equal(chain.viommu.invalidateRaw(TYPE, entries([]), ENTRY, 0), 0, "zero-entry probe");
  assert.equal(chain.viommu.invalidate(TYPE, entries([[0, VIRT_ID, 1], [0, VIRT_ID, 3]]), ENTRY, 2), 2);
  assert.deepEqual(cache(chain.dev), [CACHE_DEFAULT, 0, CACHE_DEFAULT, 0]);
  chain.viommu.invalidate(TYPE, entries([[M.IOMMU_TEST_INVALIDATE_FLAG_ALL, VIRT_ID, 0]]), ENTRY, 1);
  assert.deepEqual(cache(chain.dev), [0, 0, 0, 0]);
});

kernelTest("viommu: an unknown virtual device id stops the batch at that entry", ["viommu", "vdevice"], () => {
  using iommufd = openIommufd();
  using chain = viommuChain(iommufd);
  const batch = entries([[0, VIRT_ID, 0], [0, VIRT_ID + 1, 1], [0, VIRT_ID, 2]]);
  assert.throws(
    () => chain.viommu.invalidate(TYPE, batch, ENTRY, 3),
    (e) => e instanceof KernelError && e.entryIndex === 1,
  );
  assert.equal(chain.viommu.handled, 1);
  assert.deepEqual(cache(chain.dev), [0, CACHE_DEFAULT, CACHE_DEFAULT, CACHE_DEFAULT]);
});

kernelTest("viommu: bad flags are EOPNOTSUPP, a bad type EINVAL, nothing handled", ["viommu", "vdevice"], () => {
  using iommufd = openIommufd();
  using chain = viommuChain(iommufd);
  assert.equal(chain.viommu.invalidateRaw(TYPE, entries([[0xffff_ffff, VIRT_ID, 0]]), ENTRY, 1), -95);
  assert.equal(chain.viommu.handled, 0);
  assert.equal(
    chain.viommu.invalidateRaw(M.IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST_INVALID, entries([[0, VIRT_ID, 0]]), ENTRY, 1),
    -22,
  );
  assert.equal(chain.viommu.handled, 0);
});

kernelTest("viommu: a second vDEVICE with the same virtual id is EEXIST", ["viommu", "vdevice"], () => {
  using iommufd = openIommufd();
  using chain = viommuChain(iommufd);
  assert.throws(
    () => iommufd.allocVdevice(chain.viommu.id, chain.dev.devId, VIRT_ID),
    (e) => e instanceof KernelError && e.errnoName === "EEXIST" && e.ioctl === "IOMMU_VDEVICE_ALLOC",
  );
});

kernelTest("viommu: a nested HWPT can be allocated on the vIOMMU and attached", ["viommu", "vdevice"], () => {
  using iommufd = openIommufd();
  using chain = viommuChain(iommufd);
  using nested = iommufd.allocHwpt({
    devId: chain.dev.devId,
    ptId: chain.viommu.id,
    data: selftestHwptData(M.IOMMU_TEST_IOTLB_DEFAULT),
  });
  assert.equal(chain.dev.replace(nested.id), nested.id);
  chain.dev.replace(chain.ioas.id);
});
