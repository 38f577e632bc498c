// vEVENTQ: the mock device reports events to its vIOMMU; records carry sequence numbers and the vDEVICE's
// virtual id; the queue depth bounds what is kept.
import assert from "node:assert/strict";
import { guestMemoryOver } from "../lib/memory/guest_memory.ts";
import { type Iommufd, KernelError, MockDevice } from "../lib/kernel/mod.ts";
import { HwptAllocFlags, IommuViommuEventSelftest, MockConstants, selftestHwptData } from "../lib/uapi/mod.ts";
import { kernelTest, openIommufd } from "./harness.ts";

const M = MockConstants.values;

/**
 * A mock device reporting to a selftest vIOMMU with a vEVENTQ of depth 4 and a vDEVICE of virtual id 0x88, attached
 * to a nested HWPT on the vIOMMU; `beforeQueue` runs once the vIOMMU exists. Disposal re-attaches the device to its
 * IOAS first, then destroys in reverse order.
 */
function veventChain(iommufd: Iommufd, beforeQueue?: (viommuId: number) => void) {
  using stack = new DisposableStack();
  const ioas = stack.use(iommufd.allocIoas());
  const dev = stack.use(MockDevice.create(iommufd, ioas.id));
  const parent = stack.use(
    iommufd.allocHwpt({ devId: dev.devId, ptId: ioas.id, flags: HwptAllocFlags.values.IOMMU_HWPT_ALLOC_NEST_PARENT }),
  );
  const viommu = stack.use(
    iommufd.allocViommu({ type: M.IOMMU_VIOMMU_TYPE_SELFTEST, devId: dev.devId, hwptId: parent.id }),
  );
  beforeQueue?.(viommu.id);
  const queue = stack.use(iommufd.allocVeventq(viommu.id, M.IOMMU_VEVENTQ_TYPE_SELFTEST, 4));
  stack.use(iommufd.allocVdevice(viommu.id, dev.devId, 0x88));
  const nested = stack.use(
    iommufd.allocHwpt({ devId: dev.devId, ptId: viommu.id, data: selftestHwptData(M.IOMMU_TEST_IOTLB_DEFAULT) }),
  );
  dev.replace(nested.id);
  stack.defer(() => dev.replace(ioas.id));
  const owned = stack.move();
  return { dev, queue, [Symbol.dispose]: () => owned.dispose() };
}

kernelTest("veventq: TRIGGER_VEVENT → records with consecutive sequence numbers and the virtual id", [
  "veventq",
  "selftest-trigger-vevent",
], () => {
  using iommufd = openIommufd();
  using chain = veventChain(iommufd, (viommuId) => {
    assert.throws(() => iommufd.allocVeventq(viommuId, M.IOMMU_VEVENTQ_TYPE_SELFTEST, 0), KernelError, "depth 0");
  });
  const { dev, queue } = chain;
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
});

kernelTest(
  "veventq: TRIGGER_VEVENT → async stream → the guest's SMMUv3 EVTQ; a burst past the depth is accounted as lost",
  [
    "veventq",
    "selftest-trigger-vevent",
  ],
  async () => {
    const { veventStream } = await import("../lib/kernel/streams.ts");
    const { SmmuEventQueue, selftestEventRecord } = await import("../lib/frontends/smmuv3/evtq.ts");
    using iommufd = openIommufd();
    using chain = veventChain(iommufd);
    const { dev, queue } = chain;
    const ram = new Uint8Array(1 << 16);
    const memory = guestMemoryOver(ram);
    const evtq = new SmmuEventQueue(memory);
    evtq.writeBase(0x1000 | 4); // 16 entries: room for everything the host keeps
    const stats = { delivered: 0, lost: 0, lostFlags: 0, reads: 0 };
    const ac = new AbortController();
    try {
      // Two events, then a burst of 10 into a queue of depth 4: the kernel keeps 4 and flags the loss.
      dev.triggerVevent();
      dev.triggerVevent();
      const items: string[] = [];
      const consumer = (async () => {
        for await (
          const item of veventStream(queue, {
            payloadSize: IommuViommuEventSelftest.size,
            signal: ac.signal,
            pollMs: 50,
            stats,
          })
        ) {
          if (item.type === "lost") {
            evtq.hostLost(item.count);
            items.push(`lost ${item.count}${item.flagged ? " flagged" : ""}`);
          } else {
            evtq.post(selftestEventRecord(IommuViommuEventSelftest.decode(item.payload).virt_id));
            items.push(`event ${item.sequence}`);
          }
          if (items.length === 2) {
            for (let i = 0; i < 10; i++) dev.triggerVevent();
          }
        }
      })();
      const deadline = Date.now() + 10_000;
      while (stats.delivered < 6 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      ac.abort();
      await consumer; // clean shutdown: the stream ends at its next poll timeout
      assert.deepEqual(items.slice(0, 2), ["event 0", "event 1"], items.join(", "));
      assert.ok(
        stats.lostFlags >= 1 || stats.lost >= 1,
        `the loss is accounted: ${JSON.stringify(stats)} ${items.join(", ")}`,
      );
      assert.ok(items.some((i) => i.startsWith("lost")), "and reported as a loss, not as an event");
      assert.equal(
        stats.delivered + stats.lost,
        12,
        `every event is delivered or counted lost: ${JSON.stringify(stats)}`,
      );
      const v = new DataView(ram.buffer);
      assert.equal(v.getUint32(0x1004, true), 0x88, "the guest's first EVTQ record names the virtual StreamID");
      assert.equal(evtq.telemetry.posted, stats.delivered);
      assert.equal(evtq.prod >>> 31, 1, "the guest sees OVFLG: events were lost");
    } finally {
      ac.abort();
    }
  },
);
