// vEVENTQ: the mock device reports events to its vIOMMU; records carry sequence numbers and the vDEVICE's
// virtual id; the queue depth bounds what is kept.
import assert from "node:assert/strict";
import { KernelError, MockDevice } from "../../lib/kernel/mod.ts";
import { HwptAllocFlags, IommuViommuEventSelftest, MockConstants, selftestHwptData } from "../../lib/uapi/mod.ts";
import { kernelTest, openIommufd } from "./harness.ts";

const M = MockConstants.values;

kernelTest("veventq: TRIGGER_VEVENT → records with consecutive sequence numbers and the virtual id", [
  "veventq",
  "selftest-trigger-vevent",
], () => {
  using iommufd = openIommufd();
  using ioas = iommufd.allocIoas();
  using dev = MockDevice.create(iommufd, ioas.id);
  using parent = iommufd.allocHwpt({
    devId: dev.devId,
    ptId: ioas.id,
    flags: HwptAllocFlags.values.IOMMU_HWPT_ALLOC_NEST_PARENT,
  });
  using viommu = iommufd.allocViommu({ type: M.IOMMU_VIOMMU_TYPE_SELFTEST, devId: dev.devId, hwptId: parent.id });
  assert.throws(() => iommufd.allocVeventq(viommu.id, M.IOMMU_VEVENTQ_TYPE_SELFTEST, 0), KernelError, "depth 0");
  using queue = iommufd.allocVeventq(viommu.id, M.IOMMU_VEVENTQ_TYPE_SELFTEST, 4);
  using vdev = iommufd.allocVdevice(viommu.id, dev.devId, 0x88);
  using nested = iommufd.allocHwpt({
    devId: dev.devId,
    ptId: viommu.id,
    data: selftestHwptData(M.IOMMU_TEST_IOTLB_DEFAULT),
  });
  dev.replace(nested.id);
  try {
    dev.triggerVevent();
    dev.triggerVevent();
    assert.ok(queue.pollIn(1000));
    const records = queue.readEvents(new Uint8Array(256), IommuViommuEventSelftest.size);
    assert.equal(records.length, 2);
    assert.equal(records[1].sequence, records[0].sequence + 1);
    for (const r of records) {
      assert.equal(r.lostEvents, false);
      assert.equal(IommuViommuEventSelftest.decode(r.payload).virt_id, 0x88);
    }
  } finally {
    dev.replace(ioas.id);
    void vdev;
  }
});
