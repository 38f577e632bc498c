// SharedRelay as a front end's sink (issue 19 item 3): the VT-d invalidation queue and the SMMUv3 command queue
// models take it where they take a RelayQueue, and four vCPU Workers — each serving its own doorbell exits through its
// own queue model over one SharedRelay — lose nothing. No timing is asserted.
import assert from "node:assert/strict";
import { RelayQueue } from "../../lib/relay/queue.ts";
import { SharedRelay, sharedRelayBytes } from "../../lib/relay/shared.ts";
import { DrainOutcome } from "../../lib/relay/outcome.ts";
import { ModelHost } from "../../lib/host/model.ts";
import { FSTS, VtdInvalidationQueue } from "../../lib/frontends/vtd/queue.ts";
import { SmmuCommandQueue } from "../../lib/frontends/smmuv3/cmdq.ts";
import type { RelaySink } from "../../lib/frontends/window.ts";
import { vtdPasidIotlb, vtdWait, writeVtdDescriptor } from "../../lib/frontends/vtd/encode.ts";
import { guestMemoryOver } from "../../lib/memory/guest_memory.ts";
import { assertAllocatesNothing } from "../alloc_probe.ts";
import { REGION_PAGES, type VcpuReport } from "../../bench/probes/vcpu_worker.ts";

const layout = { slots: 64, bindings: 16 };

function sharedOver(host: ModelHost): SharedRelay {
  return new SharedRelay(new SharedArrayBuffer(sharedRelayBytes(layout)), layout, new RelayQueue(host));
}

Deno.test("shared sink: a SharedRelay is a RelaySink (checked structurally, as a front end sees it)", () => {
  const sink: RelaySink = sharedOver(new ModelHost());
  assert.equal(typeof sink.drainInto, "function");
});

Deno.test("shared sink: a VT-d doorbell through VtdInvalidationQueue over SharedRelay reaches the host, then the wait completes", () => {
  const host = new ModelHost();
  const t = host.createTarget("vtd-s1");
  const relay = sharedOver(host);
  relay.bind(1, 5, { targetId: t, format: "vtd-s1" });
  relay.bind(1, "rid", { targetId: t, format: "vtd-s1" });
  const ram = new Uint8Array(1 << 20);
  let coveredAtWait = false;
  const inner = guestMemoryOver(ram);
  const memory = {
    ...inner,
    write(gpa: number, bytes: Uint8Array) {
      if (gpa === 0x8000) coveredAtWait = host.covered(t, 0x40) && host.covered(t, 0x41) && host.covered(t, 0x99);
      inner.write(gpa, bytes);
    },
  };
  const qi = new VtdInvalidationQueue(memory, relay);
  qi.writeIqa(0x10000);
  writeVtdDescriptor(ram, 0x10000, 16, vtdPasidIotlb(1, 5, { page: 0x40, am: 1, leaf: true }));
  writeVtdDescriptor(ram, 0x10010, 16, vtdPasidIotlb(1, 0, { page: 0x99, am: 0 })); // RID_PASID: the RID's
  writeVtdDescriptor(ram, 0x10020, 16, vtdWait(0x8000, 0xcafe));
  const r = qi.writeIqt(0x30);
  assert.deepEqual(r, { processed: 3, waitsCompleted: 1 });
  assert.ok(coveredAtWait, "every page was invalidated before the status write");
  assert.equal(new DataView(ram.buffer).getUint32(0x8000, true), 0xcafe);
  assert.equal(host.calls.length, 1, "one ioctl for the doorbell");
  assert.equal(relay.stats.combines, 1, "the doorbell relayed inline (an idle relay)");
});

Deno.test("shared sink: a host failure is IQE at its descriptor; the wait after it does not complete", () => {
  const host = new ModelHost();
  const t = host.createTarget("vtd-s1");
  const relay = sharedOver(host);
  relay.bind(1, 5, { targetId: t, format: "vtd-s1" });
  host.inject.push({ targetId: t, atEntry: 0, errno: 22 });
  const ram = new Uint8Array(1 << 20);
  const qi = new VtdInvalidationQueue(guestMemoryOver(ram), relay);
  qi.writeIqa(0x10000);
  writeVtdDescriptor(ram, 0x10000, 16, vtdPasidIotlb(1, 5, { page: 0x40, am: 0 }));
  writeVtdDescriptor(ram, 0x10010, 16, vtdWait(0x8000, 0xcafe));
  const r = qi.writeIqt(0x20);
  assert.equal(r.error?.index, 0);
  assert.equal(r.waitsCompleted, 0);
  assert.ok(qi.fsts & FSTS.IQE);
  assert.equal(new DataView(ram.buffer).getUint32(0x8000, true), 0, "no status written");
  assert.equal(qi.telemetry.errors.host, 1);
});

Deno.test("shared sink: drain() and drainInto report this handle's failures and waits by its own sequence numbers", () => {
  const host = new ModelHost();
  const t = host.createTarget("vtd-s1");
  const relay = sharedOver(host);
  relay.bind(1, "rid", { targetId: t, format: "vtd-s1" });
  const a = relay.submit({
    op: "invalidate",
    domain: 1,
    scope: { kind: "range", firstPage: 4, pages: 2 },
    noPasid: true,
  });
  const w = relay.submit({ op: "sync" });
  assert.ok(w > a);
  const report = relay.drain();
  assert.deepEqual(report.waits, [{ seq: w, ok: true }]);
  assert.equal(report.ioctls, 1);
  assert.equal(report.invalidations, 1);
  host.inject.push({ targetId: t, atEntry: 0, errno: 22 });
  const b = relay.submit({ op: "invalidate", domain: 1, scope: { kind: "all" }, noPasid: true });
  const w2 = relay.submit({ op: "sync" });
  const out = relay.drainInto(new DrainOutcome());
  assert.equal(out.failures.length, 1);
  assert.equal(out.failures[0].seq, b);
  assert.equal(out.failures[0].errno, 22);
  assert.equal(out.waitSeq(0), w2);
  assert.equal(out.waitOk(0), false);
  assert.equal(out.waitFirstFailed(0), b);
  assert.throws(() => relay.submit({ op: "bind", domain: 1, pasid: 1, table: { format: "selftest", iotlb: 1 } }));
  assert.throws(() => relay.submit({ op: "invalidate", domain: -1, scope: { kind: "all" } }));
});

Deno.test("shared sink: the SMMUv3 command queue takes a SharedRelay too (TLBI_NH_VA + CMD_SYNC)", () => {
  const host = new ModelHost();
  const vsmmu = host.createTarget("smmuv3");
  const relay = new SharedRelay(
    new SharedArrayBuffer(sharedRelayBytes(layout)),
    layout,
    new RelayQueue(host, { smmuRil: true }),
  );
  relay.bind(1, 3, { targetId: vsmmu, format: "smmuv3", asid: 9 });
  const ram = new Uint8Array(1 << 20);
  const cmdq = new SmmuCommandQueue(guestMemoryOver(ram), relay, {
    asidUsers: (asid) => (asid === 9 ? [{ domain: 1, pasid: 3 }] : []),
    domains: () => [1],
  });
  cmdq.writeBase(0x10000 | 8);
  const v = new DataView(ram.buffer);
  v.setUint32(0x10000, 0x12, true); // TLBI_NH_VA, ASID 9, one page at 0x500
  v.setUint32(0x10004, 9 << 16, true);
  v.setUint32(0x10008, (0x500 << 12) | 1, true); // LEAF
  v.setUint32(0x10010, 0x46 | (1 << 12), true); // CMD_SYNC, CS = SEV
  const r = cmdq.writeProd(2);
  assert.deepEqual(r, { processed: 2, syncsCompleted: 1 });
  assert.ok(host.covered(vsmmu, 0x500, 9));
});

for (const ioctlUs of [30, 0]) {
  Deno.test(`shared sink: four vCPU Workers' doorbells through VtdInvalidationQueue over SharedRelay lose nothing (host ioctl ${ioctlUs} µs)`, async () => {
    // With a host that answers at once the Workers contend for the ring hardest: this is where a combiner taking a
    // doorbell's wait in one pass and its invalidation in the next let the wait complete first (fixed).
    const sab = new SharedArrayBuffer(sharedRelayBytes(layout));
    const ram = new SharedArrayBuffer(1 << 20);
    const coverage = new SharedArrayBuffer(4 * (16 + 4 * REGION_PAGES));
    new SharedRelay(sab, layout, new RelayQueue(new ModelHost())).bind(1, 5, { targetId: 7, format: "vtd-s1" });
    const doorbells = 1000;
    const cells = new Int32Array(coverage);
    const started = (async () => {
      // Start the four together (Worker start-up takes longer than their doorbells).
      while (Atomics.load(cells, 3) < 4) await new Promise((r) => setTimeout(r, 5));
      Atomics.store(cells, 2, 1);
      Atomics.notify(cells, 2);
    })();
    const reports = await Promise.all([0, 1, 2, 3].map((vcpu) =>
      new Promise<VcpuReport>((resolve, reject) => {
        const w = new Worker(new URL("../../bench/probes/vcpu_worker.ts", import.meta.url), { type: "module" });
        w.onmessage = (e) => {
          resolve(e.data);
          w.terminate();
        };
        w.onerror = (e) => reject(e);
        w.postMessage({ sab, layout, ram, coverage, vcpu, doorbells, invalidations: 0, ioctlUs, barrier: true });
      })
    ));
    await started;
    let invalidations = 0, ioctls = 0;
    for (const r of reports) {
      assert.equal(r.iqErrors, 0, `vCPU ${r.vcpu}: IQE`);
      assert.equal(r.waits, doorbells, `vCPU ${r.vcpu}: every wait completed`);
      assert.equal(r.statusErrors, 0, `vCPU ${r.vcpu}: every status write carried its own wait's data`);
      assert.equal(r.uncovered, 0, `vCPU ${r.vcpu}: a wait completed before its invalidations reached the host`);
      invalidations += r.invalidations;
      ioctls += r.ioctls;
    }
    const stats = new SharedRelay(sab, layout, new RelayQueue(new ModelHost())).stats;
    assert.equal(ioctls, new Int32Array(coverage)[0], "each ioctl counted once, by the Worker that made it");
    assert.ok(ioctls <= 4 * doorbells, "never more than one ioctl per doorbell");
    console.log(
      `shared sink: ${4 * doorbells} doorbells, ${invalidations} invalidations from 4 Workers → ${ioctls} ioctls ` +
        `(${
          (ioctls / invalidations).toFixed(2)
        } per invalidation); ${stats.remoteRequests} requests relayed by another Worker`,
    );
  });
}

Deno.test("shared sink: a VT-d doorbell through SharedRelay allocates nothing after warm-up", async () => {
  await assertAllocatesNothing("shared-vtd");
});
