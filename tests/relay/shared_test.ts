import assert from "node:assert/strict";
import { RelayQueue } from "../../lib/relay/queue.ts";
import { SharedRelay, sharedRelayBytes } from "../../lib/relay/shared.ts";
import { ModelHost } from "../../lib/host/model.ts";
import { assertAllocatesNothing } from "../alloc_probe.ts";

const layout = { slots: 64, bindings: 16 };

Deno.test("shared relay: an idle relay combines inline; bindings made through one Worker's handle reach the others", () => {
  const sab = new SharedArrayBuffer(sharedRelayBytes(layout));
  const host = new ModelHost();
  const t = host.createTarget("vtd-s1");
  const a = new SharedRelay(sab, layout, new RelayQueue(host));
  const b = new SharedRelay(sab, layout, new RelayQueue(host));
  a.bind(1, 4, { targetId: t, format: "vtd-s1" });
  const out = b.doorbell([{
    op: "invalidate",
    domain: 1,
    scope: { kind: "pasid-range", pasid: 4, firstPage: 10, pages: 1 },
  }, { op: "sync" }]);
  assert.deepEqual(out, { errnos: [0, 0], combined: true });
  assert.ok(host.covered(t, 10), "b's queue learnt a's binding from the shared table");
  a.unbind(1, 4);
  host.resetCoverage();
  b.doorbell([{ op: "invalidate", domain: 1, scope: { kind: "pasid", pasid: 4 } }]);
  assert.equal(host.covered(t, 10), false, "and the unbinding");
  assert.throws(() => b.doorbell([{ op: "bind", domain: 1, pasid: 1, table: { format: "selftest", iotlb: 1 } }]));
});

Deno.test("shared relay: failures come back per request, and waits after them report it", () => {
  const sab = new SharedArrayBuffer(sharedRelayBytes(layout));
  const host = new ModelHost();
  const t = host.createTarget("vtd-s1");
  const a = new SharedRelay(sab, layout, new RelayQueue(host));
  a.bind(1, "rid", { targetId: t, format: "vtd-s1" });
  host.inject.push({ targetId: t, atEntry: 0, errno: 22 });
  const out = a.doorbell([{ op: "invalidate", domain: 1, scope: { kind: "range", firstPage: 1, pages: 1 } }, {
    op: "sync",
  }]);
  assert.deepEqual(out.errnos, [22, 5]);
});

Deno.test("shared relay: four vCPU Workers — requests handed over while an ioctl is in flight, nothing lost", async () => {
  const sab = new SharedArrayBuffer(sharedRelayBytes(layout));
  const coverage = new SharedArrayBuffer(1 << 16);
  const counters = new SharedArrayBuffer(8);
  // The binding is made once; every Worker's queue loads it from the shared table.
  new SharedRelay(sab, layout, new RelayQueue(new ModelHost())).bind(1, "rid", { targetId: 1, format: "vtd-s1" });
  const doorbells = 300;
  const results = await Promise.all(
    [0, 1, 2, 3].map((vcpu) =>
      new Promise<{ vcpu: number; combined: number; failures: number }>((resolve, reject) => {
        const w = new Worker(new URL("./shared_worker.ts", import.meta.url), { type: "module" });
        w.onmessage = (e) => {
          resolve(e.data);
          w.terminate();
        };
        w.onerror = (e) => reject(e);
        w.postMessage({ sab, layout, coverage, counters, vcpu, doorbells, region: vcpu * 4096 });
      })
    ),
  );
  const bits = new Uint8Array(coverage);
  for (const r of results) {
    assert.equal(r.failures, 0);
    for (let i = 0; i < 64; i++) {
      const page = r.vcpu * 4096 + i * 4;
      assert.ok(bits[page] && bits[page + 1], `vCPU ${r.vcpu} page ${page} was never invalidated`);
    }
  }
  const c = new Int32Array(counters);
  const stats = new SharedRelay(sab, layout, new RelayQueue(new ModelHost())).stats;
  const handedOver = results.reduce((n, r) => n + doorbells - r.combined, 0);
  console.log(
    `shared relay: ${4 * doorbells} doorbells from 4 Workers → ${c[0]} ioctls, ${c[1]} entries; ` +
      `${handedOver} doorbells handed over, ${stats.remoteRequests} requests relayed for another Worker`,
  );
  assert.ok(c[0] <= 4 * doorbells, "never more than one ioctl per doorbell");
});

Deno.test("shared relay: a combining doorbell (doorbellInto) allocates nothing after warm-up", async () => {
  await assertAllocatesNothing("shared");
});

Deno.test("shared relay: a shadow binding made through one Worker's handle reaches another as a shadow binding", () => {
  const sab = new SharedArrayBuffer(sharedRelayBytes(layout));
  const host = new ModelHost();
  const calls: string[] = [];
  // A backend that records the format each batch arrives in (a shadow target is served by the shadow backend).
  const recording = {
    invalidate(
      targetId: number,
      format: string,
      _e: Uint8Array,
      count: number,
      status: { errno: number; handled: number },
    ) {
      calls.push(`${targetId}:${format}:${count}`);
      status.errno = 0;
      status.handled = count;
    },
  };
  const a = new SharedRelay(sab, layout, new RelayQueue(host));
  const b = new SharedRelay(sab, layout, new RelayQueue(recording));
  a.bind(2, "rid", { targetId: 9, format: "shadow" });
  const out = b.doorbell([
    { op: "invalidate", domain: 2, scope: { kind: "range", firstPage: 5, pages: 2 }, noPasid: true },
    { op: "sync" },
  ]);
  assert.deepEqual(out.errnos, [0, 0]);
  assert.deepEqual(calls, ["9:shadow:1"], "the other Worker compiled shadow entries for the shadow target");
});
