// Fault queue: a nested HWPT allocated with FAULT_ID_VALID reports the mock device's I/O page fault as an
// iommu_hwpt_pgfault record; our page response goes back through the same fd.
import assert from "node:assert/strict";
import { KernelError, MockDevice } from "../lib/kernel/mod.ts";
import { HwptAllocFlags, MockConstants, PgfaultConstants, selftestHwptData } from "../lib/uapi/mod.ts";
import { kernelTest, openIommufd } from "./harness.ts";

const M = MockConstants.values;
const P = PgfaultConstants.values;

kernelTest("fault: TRIGGER_IOPF → the fault record is read → the page response is accepted", [
  "fault-queue",
  "selftest-trigger-iopf",
], () => {
  using iommufd = openIommufd();
  using ioas = iommufd.allocIoas();
  using dev = MockDevice.create(iommufd, ioas.id);
  using parent = iommufd.allocHwpt({
    devId: dev.devId,
    ptId: ioas.id,
    flags: HwptAllocFlags.values.IOMMU_HWPT_ALLOC_NEST_PARENT,
  });
  using queue = iommufd.allocFaultQueue();
  using iopf = iommufd.allocHwpt({
    devId: dev.devId,
    ptId: parent.id,
    faultId: queue.id,
    data: selftestHwptData(M.IOMMU_TEST_IOTLB_DEFAULT),
  });
  dev.replace(iopf.id);
  try {
    assert.equal(queue.pollIn(0), false, "nothing queued yet");
    dev.triggerIopf({
      pasid: 1,
      grpid: 2,
      perm: P.IOMMU_PGFAULT_PERM_READ | P.IOMMU_PGFAULT_PERM_WRITE,
      addr: 0xdeadb000,
    });
    assert.ok(queue.pollIn(1000), "the fault fd becomes readable");
    const fault = queue.readFault();
    assert.equal(fault.dev_id, dev.devId);
    assert.equal(fault.pasid, 1);
    assert.equal(fault.grpid, 2);
    assert.equal(fault.perm, P.IOMMU_PGFAULT_PERM_READ | P.IOMMU_PGFAULT_PERM_WRITE);
    assert.equal(fault.addr, 0xdeadb000n);
    assert.equal(fault.flags & P.IOMMU_PGFAULT_FLAGS_PASID_VALID, P.IOMMU_PGFAULT_FLAGS_PASID_VALID);
    assert.equal(fault.flags & P.IOMMU_PGFAULT_FLAGS_LAST_PAGE, P.IOMMU_PGFAULT_FLAGS_LAST_PAGE);
    queue.respond(fault.cookie, P.IOMMUFD_PAGE_RESP_SUCCESS);
    // A second response to the same cookie is refused by the kernel: nothing is pending any more.
    assert.throws(() => queue.respond(fault.cookie, P.IOMMUFD_PAGE_RESP_SUCCESS), KernelError);
  } finally {
    dev.replace(ioas.id);
  }
});

kernelTest("fault: allocating a HWPT with an unknown fault queue id is ENOENT", ["fault-queue"], () => {
  using iommufd = openIommufd();
  using ioas = iommufd.allocIoas();
  using dev = MockDevice.create(iommufd, ioas.id);
  using parent = iommufd.allocHwpt({
    devId: dev.devId,
    ptId: ioas.id,
    flags: HwptAllocFlags.values.IOMMU_HWPT_ALLOC_NEST_PARENT,
  });
  assert.throws(
    () =>
      iommufd.allocHwpt({
        devId: dev.devId,
        ptId: parent.id,
        faultId: 0xfffff,
        data: selftestHwptData(M.IOMMU_TEST_IOTLB_DEFAULT),
      }),
    (e) => e instanceof KernelError && e.errnoName === "ENOENT" && e.ioctl === "IOMMU_HWPT_ALLOC",
  );
});
