// The fault-injection matrix of tests/host/faults_test.ts on the real kernel: the relay queue over a
// FaultInjectingBackend wrapping the kernel backend, four requests → four entries to the selftest vIOMMU (one per
// PASID, device-cache slot = PASID), and the kernel's device cache shows what was really invalidated.
import assert from "node:assert/strict";
import { FaultInjectingBackend } from "../lib/host/faults.ts";
import { KernelBackend } from "../lib/host/kernel.ts";
import { RelayQueue } from "../lib/relay/queue.ts";
import { MockDevice } from "../lib/kernel/mod.ts";
import { HwptAllocFlags, MockConstants } from "../lib/uapi/mod.ts";
import { FAULT_CASES } from "../tests/host/fault_cases.ts";
import { kernelTest, openIommufd } from "./harness.ts";

const M = MockConstants.values;

kernelTest("faults (kernel): each failure mode's outcome matches the kernel's device cache; nothing lost or doubled", [
  "viommu",
  "vdevice",
  "selftest-dev-cache",
], () => {
  using iommufd = openIommufd();
  using ioas = iommufd.allocIoas();
  for (const c of FAULT_CASES.filter((x) => x.format === "vtd-s1")) {
    using stack = new DisposableStack();
    const dev = stack.use(MockDevice.create(iommufd, ioas.id));
    const parent = stack.use(
      iommufd.allocHwpt({ devId: dev.devId, ptId: ioas.id, flags: HwptAllocFlags.values.IOMMU_HWPT_ALLOC_NEST_PARENT }),
    );
    const viommu = stack.use(
      iommufd.allocViommu({ type: M.IOMMU_VIOMMU_TYPE_SELFTEST, devId: dev.devId, hwptId: parent.id }),
    );
    stack.use(iommufd.allocVdevice(viommu.id, dev.devId, 0x31));
    const q = new RelayQueue(new FaultInjectingBackend(new KernelBackend(iommufd), c.faults));
    for (const pasid of [0, 1, 2, 3]) {
      q.bind(1, pasid, { targetId: viommu.id, format: "selftest-viommu", vdevId: 0x31 });
    }
    const seqs = [0, 1, 2, 3].map((pasid) =>
      q.submit({ op: "invalidate", domain: 1, scope: { kind: "pasid-range", pasid, firstPage: 0x10, pages: 1 } })
    );
    q.submit({ op: "sync" });
    const r = q.drain();
    const failed = r.failures.map((f) => seqs.indexOf(f.seq)).toSorted();
    assert.deepEqual(failed, c.failed, c.name);
    for (const slot of [0, 1, 2, 3]) {
      const expected = c.failed.includes(slot) ? M.IOMMU_TEST_DEV_CACHE_DEFAULT : 0;
      assert.ok(dev.cacheHolds(slot, expected), `${c.name}: device cache slot ${slot} should hold ${expected}`);
    }
  }
});
