// Issue 15 on the VT-d front end: RID_PASID traffic reaches the device's no-PASID binding; per-domain sinks with an
// emulated-domains hook; nothing a sink or hook throws escapes the doorbell; hostile register values are IQE; queues of
// any architected size are processed completely; a page request queue outside guest RAM still answers the host.
import assert from "node:assert/strict";
import { guestMemoryOver } from "../../../lib/memory/guest_memory.ts";
import { RelayQueue } from "../../../lib/relay/queue.ts";
import type { InvalidateRequest } from "../../../lib/request/request.ts";
import {
  decodeVtdDescriptor,
  encodeVtdPasidDirectoryEntry,
  encodeVtdPasidEntry,
  encodeVtdSecondStagePasidEntry,
  FSTS,
  PRS,
  vtdContextRidPasid,
  VtdDomainRouter,
  vtdEcapRps,
  VtdInvalidationQueue,
  vtdIotlb,
  VtdPageRequestQueue,
  type VtdPageRequestQueueError,
  VtdPasidBinder,
  vtdPasidCache,
  vtdPasidIotlb,
  VtdRidPasidTable,
  vtdWait,
  writeVtdDescriptor,
} from "../../../lib/frontends/vtd/mod.ts";
import { ModelHost } from "../../../lib/host/model.ts";
import { RelayHost, relayPlugin } from "../../../lib/plugin/plugin.ts";

const QBASE = 0x10000, STATUS = 0x40000;

/** Guest RAM with a 4 KiB queue of 256-bit descriptors at QBASE and a writer that rings the doorbell. */
function guest(sink: ConstructorParameters<typeof VtdInvalidationQueue>[1], opts: { qs?: number; dw?: boolean } = {}) {
  const ram = new Uint8Array(1 << 20);
  const memory = guestMemoryOver(ram);
  const calls: string[] = [];
  const qi = new VtdInvalidationQueue(memory, sink, {
    interruptEntryCache: (d) => void calls.push(`iec ${d.selective ? d.iidx : "global"}`),
    deviceTlb: (d) => void calls.push(`${d.type} ${d.sid}`),
  });
  const size = opts.dw === false ? 16 : 32;
  qi.writeIqa(QBASE | (size === 32 ? 1 << 11 : 0) | (opts.qs ?? 0));
  let tail = 0, waits = 0;
  const put = (words: readonly [bigint, bigint]) => {
    writeVtdDescriptor(ram, QBASE + tail * size, size, words);
    tail = (tail + 1) % qi.entries;
  };
  const wait = () => put(vtdWait(STATUS + 4 * (waits % 1024), ++waits));
  const status = (n: number) => new DataView(ram.buffer).getUint32(STATUS + 4 * ((n - 1) % 1024), true);
  const ring = () => qi.writeIqt(tail * size);
  return { ram, memory, qi, put, wait, status, ring, calls, tail: () => tail * size };
}

Deno.test("rid_pasid: Linux's PASID-0 P-IOTLBs (page and whole-PASID) reach the device's no-PASID binding", () => {
  const host = new ModelHost();
  const relay = new RelayQueue(host);
  const nvme = host.createTarget("vtd-s1");
  relay.bind(3, "rid", { targetId: nvme, format: "vtd-s1" });
  const g = guest(relay);
  g.put(vtdPasidIotlb(3, 0, { page: 0xfffdf, am: 0, leaf: true })); // the unmap side of q10-flts-strict
  g.wait();
  let r = g.ring();
  assert.equal(r.error, undefined);
  assert.equal(g.status(1), 1);
  assert.ok(host.covered(nvme, 0xfffdf), "the page reached the rid target before its wait completed");
  assert.ok(!host.covered(nvme, 0xfffe0), "and not the whole space");
  host.resetCoverage();
  g.put(vtdPasidIotlb(3, 0)); // the boot-time whole-PASID flush
  g.wait();
  r = g.ring();
  assert.equal(r.error, undefined);
  assert.equal(host.coverage(nvme).wholeSpace, true);
  assert.equal(g.qi.telemetry.ridPasid, 2);
  assert.equal(relay.telemetry.entriesOut, 2, "each went out");
});

Deno.test("rid_pasid: with ECAP.RPS a device's context-entry RID_PASID is its 'rid'; PASID 0 is then an ordinary PASID", () => {
  const ctx = new Uint8Array(16);
  ctx[8] = 7; // RID_PASID field, bits 83:64
  assert.equal(vtdContextRidPasid(ctx, 0), 7);
  assert.equal(vtdEcapRps(1n << 49n), true);
  assert.equal(vtdEcapRps(0x880000f00f4an), false, "QEMU's ECAP from q10-flts-strict has no RPS");
  const table = new VtdRidPasidTable();
  table.assign(0x10, 3, vtdContextRidPasid(ctx, 0));
  const host = new ModelHost();
  const relay = new RelayQueue(host);
  const rid = host.createTarget("vtd-s1"), pasid0 = host.createTarget("vtd-s1");
  relay.bind(3, "rid", { targetId: rid, format: "vtd-s1" });
  relay.bind(3, 0, { targetId: pasid0, format: "vtd-s1" });
  const ram = new Uint8Array(1 << 20);
  const qi = new VtdInvalidationQueue(guestMemoryOver(ram), relay, {}, { ridPasids: table });
  qi.writeIqa(QBASE);
  writeVtdDescriptor(ram, QBASE, 16, vtdPasidIotlb(3, 7, { page: 0x100, am: 0 }));
  writeVtdDescriptor(ram, QBASE + 16, 16, vtdPasidIotlb(3, 0, { page: 0x200, am: 0 }));
  assert.equal(qi.writeIqt(32).error, undefined);
  assert.ok(host.covered(rid, 0x100) && !host.covered(pasid0, 0x100), "RID_PASID 7 is the rid");
  assert.ok(host.covered(pasid0, 0x200) && !host.covered(rid, 0x200), "PASID 0 is PASID 0");
  // A second device in domain 3 with RID_PASID 0: PASID 0 is now both (over-invalidating is safe).
  table.assign(0x18, 3, 0);
  host.resetCoverage();
  writeVtdDescriptor(ram, QBASE + 32, 16, vtdPasidIotlb(3, 0, { page: 0x300, am: 0 }));
  assert.equal(qi.writeIqt(48).error, undefined);
  assert.ok(host.covered(rid, 0x300) && host.covered(pasid0, 0x300));
});

Deno.test("rid_pasid: the guest's PASID entry at the RID_PASID binds as 'rid' through a plugin (first and second stage)", () => {
  using relayHost = RelayHost.inProcess();
  using nvme = relayPlugin.create(relayHost, { domain: 3, device: { kind: "model" } });
  const ram = new Uint8Array(1 << 20);
  const memory = guestMemoryOver(ram);
  ram.set(encodeVtdPasidDirectoryEntry(0x3000), 0x2000);
  ram.set(encodeVtdPasidEntry({ did: 3, firstStagePage: 0x80 }), 0x3000);
  const submitted: unknown[] = [];
  const binder = new VtdPasidBinder(memory);
  binder.attach({
    rid: 0x10,
    pasidDirectory: 0x2000,
    sink: { submit: (r) => (submitted.push(r), nvme.submit(r)) },
  });
  const pc = (did: number, pasid: number) => {
    const b = new Uint8Array(16);
    writeVtdDescriptor(b, 0, 16, vtdPasidCache(did, pasid));
    const d = decodeVtdDescriptor(b, 0, 16);
    if (d.type !== "pasid-cache") throw new Error("not a PASID-cache descriptor");
    return d;
  };
  binder.configChanged(pc(5, 0)); // another domain's entry: not this device's
  assert.equal(submitted.length, 0);
  binder.configChanged(pc(3, 0));
  assert.deepEqual((submitted[0] as { pasid: unknown }).pasid, "rid");
  assert.ok(nvme.telemetry.device.binds === 1 && binder.telemetry.ridBinds === 1);
  // The entry goes away: unbound at 'rid'.
  ram.fill(0, 0x3000, 0x3040);
  binder.configChanged(pc(3, 0));
  assert.deepEqual(submitted[1], { op: "unbind", domain: 3, pasid: "rid" });
  // A second-stage entry is a second-level table (shadow mode's): recorded when the device refuses it.
  ram.set(encodeVtdSecondStagePasidEntry({ did: 3, secondStagePage: 0x90 }), 0x3000);
  binder.configChanged(pc(3, 0));
  assert.deepEqual((submitted[2] as { table: unknown }).table, {
    format: "vtd-sl",
    tableAddress: 0x90000,
    addressWidth: 48,
  });
  assert.match(binder.telemetry.badEntries.at(-1)!, /bind refused/);
});

Deno.test("routing: other domains go to the emulated-domains hook, counted; a global flush reaches every domain", () => {
  using relayHost = RelayHost.inProcess();
  using nvme = relayPlugin.create(relayHost, { domain: 3, device: { kind: "model" } });
  nvme.submit({
    op: "bind",
    domain: 3,
    pasid: "rid",
    table: { format: "vtd-s1", tableAddress: 0x1000, addressWidth: 48 },
  });
  const target = relayHost.queue().bindings(3, "rid")[0].targetId;
  const emulated: string[] = [];
  const router = new VtdDomainRouter({
    invalidate: (r: InvalidateRequest) => void emulated.push(`${r.domain} ${r.scope.kind}`),
    invalidateEveryDomain: (r) => void emulated.push(`every noPasid=${r.noPasid}`),
  });
  router.assign(3, nvme);
  const g = guest(router);
  g.put(vtdPasidIotlb(5, 0)); // an emulated device's domain (Linux's boot-time flush)
  g.put(vtdIotlb(0, "domain"));
  g.put(vtdIotlb(0, "global"));
  g.wait();
  const r = g.ring();
  assert.equal(r.error, undefined, "a foreign domain is not an error");
  assert.equal(g.status(1), 1);
  assert.deepEqual(emulated, ["5 all", "0 all", "every noPasid=true"]);
  assert.deepEqual(router.telemetry, { assigned: 1, emulated: 3, refused: 0 });
  assert.equal(relayHost.model!.coverage(target).wholeSpace, true, "the global flush reached the assigned domain");
});

Deno.test("refusal: a plugin refusing another domain's request is IQE at that descriptor; the stale wait never completes", () => {
  using relayHost = RelayHost.inProcess();
  using nvme = relayPlugin.create(relayHost, { domain: 3, device: { kind: "model" } });
  nvme.submit({
    op: "bind",
    domain: 3,
    pasid: "rid",
    table: { format: "vtd-s1", tableAddress: 0x1000, addressWidth: 48 },
  });
  const g = guest(nvme); // the plugin as the only sink: a documented use
  g.put(vtdPasidIotlb(3, 0, { page: 1, am: 0 }));
  g.wait(); // wait 1: completes
  g.put(vtdIotlb(2, "domain")); // the plugin refuses domain 2 (RequestError)
  g.wait(); // wait 2: must never complete
  let r!: ReturnType<typeof g.ring>;
  assert.doesNotThrow(() => r = g.ring());
  assert.equal(r.error?.index, 2);
  assert.match(r.error!.reason, /refused/);
  assert.equal(g.qi.iqh, 2 * 32, "IQH at the refused descriptor");
  assert.ok(g.qi.fsts & FSTS.IQE);
  assert.equal(g.status(1), 1);
  assert.equal(g.status(2), 0);
  // The guest skips the bad descriptor (as Linux's qi_check_fault does: it rewrites it) and rings again.
  writeVtdDescriptor(g.ram, QBASE + 2 * 32, 32, vtdPasidIotlb(3, 0, { page: 2, am: 0 }));
  g.qi.writeFsts(FSTS.IQE);
  g.put(vtdPasidIotlb(3, 0, { page: 3, am: 0 }));
  const before = g.status(2);
  r = g.qi.writeIqt(g.qi.iqh); // an empty doorbell completes nothing stale
  assert.equal(r.waitsCompleted, 0);
  assert.equal(g.status(2), before);
  r = g.ring();
  assert.equal(r.error, undefined);
  assert.equal(g.status(2), 2, "wait 2 completes only once its own queue position is processed");
  assert.equal(g.qi.telemetry.errors.refused, 1);
});

Deno.test("registers: a negative, fractional or out-of-range IQT and reserved IQA bits are IQE, never a hang", () => {
  const relay = new RelayQueue(new ModelHost());
  for (const iqt of [-16, -1, 8.5, NaN, Infinity, 4096, 2 ** 53]) {
    const g = guest(relay);
    const r = g.qi.writeIqt(iqt);
    assert.ok(r.error, `IQT ${iqt}`);
    assert.ok(g.qi.fsts & FSTS.IQE);
  }
  const g = guest(relay);
  g.qi.writeIqa(QBASE | 0x10); // a reserved bit
  assert.match(g.qi.writeIqt(0).error!.reason, /reserved/);
  const h = guest(relay);
  h.qi.writeIqa(-4096);
  assert.ok(h.qi.writeIqt(0).error);
});

Deno.test("size: the largest architected queue (QS 7: 32,768 descriptors) is processed completely past the sink's wait limit", () => {
  const host = new ModelHost();
  const relay = new RelayQueue(host, { maxPendingWaits: 100 });
  const nvme = host.createTarget("vtd-s1");
  relay.bind(3, "rid", { targetId: nvme, format: "vtd-s1" });
  const ram = new Uint8Array(1 << 21);
  const qi = new VtdInvalidationQueue(guestMemoryOver(ram), relay, {}, { maxWaitsPerDrain: 4096 });
  qi.writeIqa(QBASE | 7);
  assert.equal(qi.entries, 32768);
  for (let i = 0; i < 32767; i++) {
    const words = i % 2 ? vtdWait(0x1_0000_0 + 4 * (i % 1000), i) : vtdPasidIotlb(3, 0, { page: i, am: 0 });
    writeVtdDescriptor(ram, QBASE + 16 * i, 16, words);
  }
  const r = qi.writeIqt(32767 * 16);
  assert.equal(r.error, undefined);
  assert.equal(r.processed, 32767);
  assert.equal(r.waitsCompleted, 16383);
  assert.ok(host.covered(nvme, 0) && host.covered(nvme, 32766));
});

Deno.test("hooks: IEC and device-TLB descriptors are counted by type and handed to their hooks, not relayed", () => {
  const relay = new RelayQueue(new ModelHost());
  const g = guest(relay);
  g.put([(3n << 32n) | 0x14n, 0n]); // IEC, index 3
  g.put([(0x10n << 32n) | 3n, 0n]); // device-TLB, SID 0x10
  g.wait();
  assert.equal(g.ring().error, undefined);
  assert.deepEqual(g.calls, ["iec 3", "device-tlb 16"]);
  assert.equal(g.qi.telemetry.byType["interrupt-entry-cache"], 1);
  assert.equal(g.qi.telemetry.byType["device-tlb"], 1);
  assert.equal(g.qi.telemetry.byType.wait, 1);
  assert.equal(relay.telemetry.invalidationsIn, 0);
});

Deno.test("prq: a page request queue outside guest RAM is a typed fault and the host fault is answered at once", () => {
  const ram = new Uint8Array(1 << 16);
  const answers: [number, number][] = [];
  const faults: VtdPageRequestQueueError[] = [];
  const prq = new VtdPageRequestQueue(guestMemoryOver(ram), (c, code) => answers.push([c, code]), {
    fault: (e) => void faults.push(e),
  });
  prq.writePqa(0x1_0000_0000); // 4 GiB: beyond this guest's RAM
  let delivered = true;
  assert.doesNotThrow(() => {
    delivered = prq.deliver({
      rid: 0x10,
      page: 0x7f,
      read: true,
      write: false,
      exec: false,
      priv: false,
      lastInGroup: true,
      grpid: 1,
      cookie: 9,
    });
  });
  assert.equal(delivered, false);
  assert.deepEqual(answers, [[9, 1]]);
  assert.equal(faults[0]?.reason, "queue-not-guest-ram");
  assert.equal(prq.telemetry.undeliverable, 1);
  assert.equal(prq.prs & PRS.PPR, 0);
  assert.equal(prq.pending, 0);
});

Deno.test("prq: a response naming the RID_PASID answers the device's request without PASID; unbinding 'rid' answers it", () => {
  const ram = new Uint8Array(1 << 16);
  const answers: [number, number][] = [];
  const prq = new VtdPageRequestQueue(guestMemoryOver(ram), (c, code) => answers.push([c, code]));
  prq.writePqa(0x4000);
  const f = { rid: 0x10, page: 1, read: true, write: false, exec: false, priv: false, lastInGroup: true };
  prq.deliver({ ...f, grpid: 1, cookie: 1 });
  prq.deliver({ ...f, grpid: 2, cookie: 2 });
  const response = (pasid: number | undefined, grpid: number) => {
    const b = new Uint8Array(16);
    const qw0 = (BigInt(pasid ?? 0) << 32n) | (0x10n << 16n) | (pasid !== undefined ? 1n << 4n : 0n) | 9n;
    writeVtdDescriptor(b, 0, 16, [qw0, (BigInt(grpid) << 3n) | 4n]);
    const d = decodeVtdDescriptor(b, 0, 16);
    if (d.type !== "page-group-response") throw new Error("not a response");
    return d;
  };
  assert.equal(prq.guestResponse(response(0, 1)), undefined, "PASID 0 is the RID_PASID");
  assert.equal(prq.guestResponse(response(5, 2)), "no-such-group", "another PASID is not");
  prq.pasidUnbound(0x10, "rid");
  assert.deepEqual(answers, [[1, 0], [2, 1]]);
});
