// The in-process host is a second implementation of the kernel's rules. Here the same random scripts run on
// both — raw batches through the backends, and guest request streams through two relay queues — and every
// errno, entry_num and mock IOTLB slot must agree.
import assert from "node:assert/strict";
import type { Backend, Format, InvalidateStatus } from "../lib/host/backend.ts";
import { KernelBackend } from "../lib/host/kernel.ts";
import { RelayQueue } from "../lib/relay/queue.ts";
import type { InvalidateRequest } from "../lib/request/request.ts";
import { type Iommufd, MockDevice, mockIotlbHolds } from "../lib/kernel/mod.ts";
import { ModelHost } from "../lib/host/model.ts";
import { HwptAllocFlags, MockConstants, selftestHwptData } from "../lib/uapi/mod.ts";
import { atLeast, kernelTest, openIommufd } from "./harness.ts";

const M = MockConstants.values;

function rng(seed: number) {
  let s = seed >>> 0;
  return (n: number) => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = Math.imul(s ^ (s >>> 15), 1 | s);
    t ^= t + Math.imul(t ^ (t >>> 7), 61 | t);
    return ((t ^ (t >>> 14)) >>> 0) % n;
  };
}

function kernelIotlb(iommufd: Iommufd, hwpt: number, model: number[]): boolean {
  return model.every((v, slot) => mockIotlbHolds(iommufd, hwpt, slot, v));
}

function setup(iommufd: Iommufd) {
  const stack = new DisposableStack();
  const ioas = stack.use(iommufd.allocIoas());
  const dev = stack.use(MockDevice.create(iommufd, ioas.id));
  const parent = stack.use(
    iommufd.allocHwpt({ devId: dev.devId, ptId: ioas.id, flags: HwptAllocFlags.values.IOMMU_HWPT_ALLOC_NEST_PARENT }),
  );
  const nested = (iotlb: number) =>
    iommufd.allocHwpt({
      devId: dev.devId,
      ptId: parent.id,
      data: selftestHwptData(iotlb),
    });
  return { stack, parent, nested };
}

kernelTest("differential: 1,000 random batch scripts give identical errno, entry_num and IOTLB on kernel and model", [
  "hwpt-invalidate",
], () => {
  using iommufd = openIommufd();
  const { stack, parent, nested } = setup(iommufd);
  using _ = stack;
  const kernel = new KernelBackend(iommufd);
  const seed = Number(Deno.env.get("IOMMU_RELAY_SEED") ?? 0xd1ff);
  const kStatus: InvalidateStatus = { errno: 0, handled: 0 };
  const mStatus: InvalidateStatus = { errno: 0, handled: 0 };
  let batches = 0;
  for (let script = 0; script < 1000; script++) {
    const rnd = rng(seed + script);
    const model = new ModelHost();
    model.kernel612 = !atLeast(6, 13);
    using scriptStack = new DisposableStack();
    const pairs: [number, number][] = []; // [kernel id, model id]
    for (let i = 0, n = 1 + rnd(3); i < n; i++) {
      const iotlb = 1 + rnd(0xffff);
      pairs.push([scriptStack.use(nested(iotlb)).id, model.createTarget("selftest", iotlb)]);
    }
    pairs.push([parent.id, model.createTarget("paging")]);
    pairs.push([0xfffff, 999_999]); // no such object
    for (let b = 0, nb = 1 + rnd(4); b < nb; b++) {
      const [kid, mid] = pairs[rnd(10) < 8 ? rnd(pairs.length - 2) : pairs.length - 2 + rnd(2)];
      const count = rnd(6);
      const entries = new Uint8Array(Math.max(1, count) * 8);
      const v = new DataView(entries.buffer);
      for (let i = 0; i < count; i++) {
        v.setUint32(i * 8, [0, 0, 0, 1, 2, 0x80000000][rnd(6)], true);
        v.setUint32(i * 8 + 4, rnd(5), true); // 4 is out of range
      }
      const format: Format = rnd(20) === 0 ? "vtd-s1" : "selftest"; // a wrong data type now and then
      const k = format === "vtd-s1" && count > 0 ? new Uint8Array(count * 24) : entries;
      kernel.invalidate(kid, format, k, count, kStatus);
      model.invalidate(mid, format, k, count, mStatus);
      batches++;
      assert.deepEqual(
        mStatus,
        kStatus,
        `script ${script} (seed ${seed + script}) batch ${b} to ${kid}: kernel ${JSON.stringify(kStatus)}`,
      );
      for (const [k2, m2] of pairs.slice(0, -2)) {
        assert.ok(
          kernelIotlb(iommufd, k2, model.iotlb(m2)),
          `script ${script}: IOTLB of ${k2} differs from the model's ${model.iotlb(m2)}`,
        );
      }
    }
  }
  console.log(`differential: 1000 scripts, ${batches} batches, seed ${seed}: kernel and model agree`);
});

class Recording implements Backend {
  constructor(readonly inner: Backend, readonly map: (id: number) => number) {}
  invalidate(targetId: number, format: Format, entries: Uint8Array, count: number, status: InvalidateStatus): void {
    this.inner.invalidate(this.map(targetId), format, entries, count, status);
  }
}

kernelTest("differential: 200 random guest request streams through two relay queues give identical reports", [
  "hwpt-invalidate",
], () => {
  using iommufd = openIommufd();
  const { stack, nested } = setup(iommufd);
  using _ = stack;
  const seed = Number(Deno.env.get("IOMMU_RELAY_SEED") ?? 0x9ee);
  for (let script = 0; script < 200; script++) {
    const rnd = rng(seed + script);
    const model = new ModelHost();
    using scriptStack = new DisposableStack();
    const toKernel = new Map<number, number>();
    const maxRanges = 1 + rnd(4);
    const kq = new RelayQueue(new Recording(new KernelBackend(iommufd), (id) => toKernel.get(id)!), { maxRanges });
    const mq = new RelayQueue(model, { maxRanges });
    const pasids = [1, 2, 5, 6];
    const targets: number[] = [];
    for (const pasid of pasids) {
      const iotlb = 1 + rnd(0xffff);
      const mid = model.createTarget("selftest", iotlb);
      toKernel.set(mid, scriptStack.use(nested(iotlb)).id);
      targets.push(mid);
      for (const q of [kq, mq]) q.bind(1 + (pasid % 2), pasid, { targetId: mid, format: "selftest" });
    }
    for (let op = 0; op < 12; op++) {
      const roll = rnd(10);
      if (roll < 2) {
        for (const q of [kq, mq]) q.submit({ op: "sync" });
      } else if (roll < 4) {
        const k = kq.drain(), m = mq.drain();
        assert.deepEqual(k, m, `script ${script}: drain reports differ`);
      } else {
        const pasid = pasids[rnd(4)];
        const scope = [
          { kind: "all" as const },
          { kind: "pasid" as const, pasid },
          { kind: "range" as const, firstPage: rnd(1000), pages: 1 + rnd(64) },
          { kind: "pasid-range" as const, pasid, firstPage: rnd(1000), pages: 1 + rnd(64) },
        ][rnd(4)];
        const request: InvalidateRequest = { op: "invalidate", domain: 1 + rnd(2), scope };
        for (const q of [kq, mq]) q.submit(request);
      }
    }
    assert.deepEqual(kq.drain(), mq.drain(), `script ${script}: final drain reports differ`);
    for (const mid of targets) {
      assert.ok(
        kernelIotlb(iommufd, toKernel.get(mid)!, model.iotlb(mid)),
        `script ${script}: IOTLB of target ${mid} differs`,
      );
    }
  }
});

kernelTest("differential: 500 random vIOMMU batch scripts agree on errno, entry_num and device caches", [
  "viommu",
  "vdevice",
  "selftest-dev-cache",
], () => {
  using iommufd = openIommufd();
  using stack = new DisposableStack();
  const ioas = stack.use(iommufd.allocIoas());
  const first = stack.use(MockDevice.create(iommufd, ioas.id));
  const parent = stack.use(
    iommufd.allocHwpt({ devId: first.devId, ptId: ioas.id, flags: HwptAllocFlags.values.IOMMU_HWPT_ALLOC_NEST_PARENT }),
  );
  const viommu = stack.use(
    iommufd.allocViommu({ type: M.IOMMU_VIOMMU_TYPE_SELFTEST, devId: first.devId, hwptId: parent.id }),
  );
  const kernel = new KernelBackend(iommufd);
  const seed = Number(Deno.env.get("IOMMU_RELAY_SEED") ?? 0x71);
  const k: InvalidateStatus = { errno: 0, handled: 0 };
  const m: InvalidateStatus = { errno: 0, handled: 0 };
  for (let round = 0; round < 20; round++) {
    // Fresh devices each round, so their caches start at the default again and changes stay visible.
    using roundStack = new DisposableStack();
    const devs = [0x21, 0x22].map((virtId) => {
      const dev = roundStack.use(MockDevice.create(iommufd, ioas.id));
      roundStack.use(iommufd.allocVdevice(viommu.id, dev.devId, virtId));
      return { virtId, dev };
    });
    const model = new ModelHost();
    const mv = model.createTarget("selftest-viommu");
    for (const d of devs) model.addVdevice(mv, d.virtId);
    for (let script = round * 25; script < round * 25 + 25; script++) {
      const rnd = rng(seed + script);
      const count = rnd(4);
      const entries = new Uint8Array(Math.max(1, count) * 12);
      const v = new DataView(entries.buffer);
      for (let i = 0; i < count; i++) {
        v.setUint32(i * 12, [0, 0, 0, 0, 0, 1, 2][rnd(7)], true);
        v.setUint32(i * 12 + 4, [0x21, 0x22, 0x21, 0x22, 0x23][rnd(5)], true); // 0x23: no such virtual device
        v.setUint32(i * 12 + 8, rnd(5), true); // 4: no such cache slot
      }
      kernel.invalidate(viommu.id, "selftest-viommu", entries, count, k);
      model.invalidate(mv, "selftest-viommu", entries, count, m);
      assert.deepEqual(m, k, `script ${script} (seed ${seed + script})`);
      for (const d of devs) {
        model.deviceCache(mv, d.virtId).forEach((value, slot) =>
          assert.ok(
            d.dev.cacheHolds(slot, value),
            `script ${script}: device ${d.virtId} slot ${slot} should hold ${value}`,
          )
        );
      }
    }
  }
});
