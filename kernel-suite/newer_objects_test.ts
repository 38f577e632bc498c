// The newer iommufd objects on 7.3's selftest: HW queues (the selftest type; the kernel's allocation and teardown order
// rules), GET_HW_INFO with IOMMU_HW_INFO_FLAG_INPUT_TYPE, IOMMU_HW_CAP_PCI_ATS_NOT_SUPPORTED acted on (no ATS offered
// for the device), and AMD nesting refused before anything is allocated.
import assert from "node:assert/strict";
import { decodeCapabilities, GuestIommu } from "../lib/device/mod.ts";
import { KernelDeviceHost } from "../lib/host/kernel_device_host.ts";
import { MockPort } from "../lib/host/ports.ts";
import { HwQueueSet, KernelError, MockDevice, UnsupportedError } from "../lib/kernel/mod.ts";
import { HwCapabilities, HwInfoType, HwptAllocFlags, HwQueueType, MockConstants } from "../lib/uapi/mod.ts";
import { kernelTest, openIommufd, shim } from "./harness.ts";

const M = MockConstants.values;
const BASE = M.MOCK_APERTURE_START;

function viommuChain(iommufd: ReturnType<typeof openIommufd>) {
  using stack = new DisposableStack();
  const ioas = stack.use(iommufd.allocIoas());
  const dev = stack.use(MockDevice.create(iommufd, ioas.id));
  const parent = stack.use(
    iommufd.allocHwpt({ devId: dev.devId, ptId: ioas.id, flags: HwptAllocFlags.values.IOMMU_HWPT_ALLOC_NEST_PARENT }),
  );
  const viommu = stack.use(
    iommufd.allocViommu({ type: M.IOMMU_VIOMMU_TYPE_SELFTEST, devId: dev.devId, hwptId: parent.id }),
  );
  const owned = stack.move();
  return { ioas, dev, parent, viommu, [Symbol.dispose]: () => owned.dispose() };
}

const errno = (n: number) => (e: unknown) => e instanceof KernelError && e.errno === n;

kernelTest("hw-queue: the selftest's queues allocate from index 0 up, once each, and go from the last down", [
  "hw-queue",
  "viommu",
], () => {
  using iommufd = openIommufd();
  using chain = viommuChain(iommufd);
  const queueMemory = shim.alignedBuffer(2 * 4096);
  const alloc = (index: number, iova: number, length = 4096, type: number = M.IOMMU_HW_QUEUE_TYPE_SELFTEST) =>
    iommufd.allocHwQueue({ viommuId: chain.viommu.id, type, index, nestingParentIova: iova, length });
  // Queue memory must be mapped in the IOAS under the nesting parent.
  assert.throws(() => alloc(0, BASE), errno(2), "unmapped guest memory: ENOENT");
  chain.ioas.map(queueMemory.subarray(0, 4096), { iova: BASE });
  chain.ioas.map(queueMemory.subarray(4096), { iova: BASE + 4096 });
  assert.throws(() => alloc(0, BASE, 4096, HwQueueType.values.IOMMU_HW_QUEUE_TYPE_DEFAULT), errno(95));
  assert.throws(() => alloc(0, BASE, 0), errno(22), "zero length: EINVAL");
  assert.throws(() => alloc(1, BASE), errno(5), "index 1 before index 0: EIO");
  assert.throws(() => alloc(M.IOMMU_TEST_HW_QUEUE_MAX, BASE), errno(22));
  {
    using queues = new HwQueueSet(iommufd, chain.viommu.id, M.IOMMU_HW_QUEUE_TYPE_SELFTEST);
    const q0 = queues.add(BASE, 4096);
    assert.throws(() => alloc(0, BASE + 4096), errno(17), "index 0 twice: EEXIST");
    assert.throws(() => chain.ioas.unmap(BASE, 4096), errno(16), "a queue's page cannot be unmapped: EBUSY");
    queues.add(BASE + 4096, 4096);
    assert.deepEqual(queues.queues.map((q) => q.index), [0, 1]);
    assert.throws(() => iommufd.destroy(q0.id), errno(16), "queue 1 depends on queue 0: destroying 0 first is EBUSY");
  } // the set destroys 1, then 0
  assert.equal(chain.ioas.unmap(BASE, 2 * 4096), 2 * 4096, "both queues are gone: their pages unmap");
});

kernelTest("hw-info: IOMMU_HW_INFO_FLAG_INPUT_TYPE asks for one type; another is a typed unsupported", [
  "hw-info-input-type",
], () => {
  using iommufd = openIommufd();
  using ioas = iommufd.allocIoas();
  using dev = MockDevice.create(iommufd, ioas.id);
  const asked = iommufd.requestHwInfo(dev.devId, M.IOMMU_HW_INFO_TYPE_SELFTEST);
  assert.equal(asked.type, M.IOMMU_HW_INFO_TYPE_SELFTEST);
  const caps = decodeCapabilities(asked);
  assert.equal(caps.iommu.kind === "selftest" && caps.iommu.testReg, M.IOMMU_HW_INFO_SELFTEST_REGVAL);
  assert.equal(iommufd.requestHwInfo(dev.devId, HwInfoType.values.IOMMU_HW_INFO_TYPE_DEFAULT).type, asked.type);
  for (const other of [HwInfoType.values.IOMMU_HW_INFO_TYPE_ARM_SMMUV3, HwInfoType.values.IOMMU_HW_INFO_TYPE_AMD]) {
    assert.throws(
      () => iommufd.requestHwInfo(dev.devId, other),
      (e) => e instanceof UnsupportedError && e.feature === "hw-info-input-type",
    );
  }
});

kernelTest("hw-info: IOMMU_HW_CAP_PCI_ATS_NOT_SUPPORTED withholds ATS: an ATS assign is refused, the offer says no", [
  "selftest",
], () => {
  using iommufd = openIommufd();
  using ioas = iommufd.allocIoas();
  using probe = MockDevice.create(iommufd, ioas.id);
  const caps = iommufd.getHwInfo(probe.devId).capabilities;
  const reported = (caps & BigInt(HwCapabilities.values.IOMMU_HW_CAP_PCI_ATS_NOT_SUPPORTED)) !== 0n;
  const [major, minor] = Deno.osRelease().split(".").map(Number);
  const host = new KernelDeviceHost(iommufd, ioas);
  using guest = new GuestIommu(host);
  if (major * 100 + minor < 618) {
    // Before the flag existed (6.12) the kernel never reports it: nothing is withheld on its account.
    assert.equal(reported, false);
    using dev = guest.assign(MockPort.create(iommufd, ioas.id), { domain: 1 });
    assert.equal(dev.offer.ats, true);
    return;
  }
  // The mock never reports IOMMU_CAP_PCI_ATS_SUPPORTED, so 7.3 tells userspace ATS cannot be used.
  assert.equal(reported, true);
  assert.throws(
    () => guest.assign(MockPort.create(iommufd, ioas.id), { domain: 1, ats: true }),
    (e) => e instanceof UnsupportedError && e.feature === "ats" && /ATS_NOT_SUPPORTED/.test(e.detail),
  );
  assert.equal(guest.devices.length, 0);
  using dev = guest.assign(MockPort.create(iommufd, ioas.id), { domain: 1 });
  assert.equal(dev.ats, false);
  assert.equal(dev.offer.ats, false);
  assert.match(dev.offer.atsWithheld!, /ATS_NOT_SUPPORTED/);
});
