// The demo's guest script (lib/testing/demo_script.ts) against the real kernel: VT-d descriptors → front end →
// plugins on a kernel RelayHost with selftest mock devices → IOMMU_HWPT_INVALIDATE, checked in the mock IOTLBs.
import assert from "node:assert/strict";
import { mockIotlbHolds } from "../../lib/kernel/mod.ts";
import { RelayHost } from "../../lib/plugin/plugin.ts";
import { runDemoScript, ScriptedGuest } from "../../lib/testing/mod.ts";
import { kernelTest, shim } from "./harness.ts";

kernelTest(
  "demo: the demo's guest script runs on the real kernel through the selftest format",
  ["selftest-pasid"],
  () => {
    using guest = ScriptedGuest.on(RelayHost.kernel(shim));
    const run = runDemoScript(guest, {
      doorbells: 200,
      seed: 1,
      table: (n) => ({ format: "selftest", iotlb: 0x100 + n }),
    });
    assert.equal(run.failures, 0);
    assert.equal(run.doorbells, 202);
    assert.equal(run.burst.ioctls, 1, "the 128-page burst is one ioctl");
    const iommufd = guest.host.iommufd!;
    const rid = guest.host.queue().bindings(1, "rid")[0].targetId;
    const sva = guest.host.queue().bindings(2, 5)[0].targetId;
    assert.ok(mockIotlbHolds(iommufd, rid, 0, 0), "the NIC's RID table: slot 0 flushed");
    assert.ok(mockIotlbHolds(iommufd, rid, 1, 0x100), "slot 1 untouched");
    // The last doorbell flushes all of PASID 5: a whole-target flush, which the selftest rule sends as FLAG_ALL.
    for (const slot of [0, 1, 2, 3]) {
      assert.ok(mockIotlbHolds(iommufd, sva, slot, 0), `rebound PASID 5 table, slot ${slot}`);
    }
    assert.equal(guest.host.queue().bindings(2, 5).length, 1, "the old PASID 5 table is gone from the queue");
  },
);
