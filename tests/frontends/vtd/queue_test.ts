// The VT-d invalidation queue model against the relay queue and the in-process host: descriptors in guest memory,
// doorbells, wait status writes, IQE at malformed descriptors and at host failures, 256-bit mode, wrap-around.
import assert from "node:assert/strict";
import { RelayQueue } from "../../../lib/relay/queue.ts";
import { FSTS, VtdInvalidationQueue } from "../../../lib/frontends/vtd/queue.ts";
import { ModelHost } from "../../../lib/host/model.ts";
import { assertAllocatesNothing } from "../../alloc_probe.ts";

const QBASE = 0x10000, STATUS = 0x40000;

function setup(opts: { dw?: boolean } = {}) {
  const ram = new Uint8Array(1 << 20);
  const memory = {
    read(gpa: number, n: number) {
      if (gpa < 0 || gpa + n > ram.length) throw new RangeError(`gpa 0x${gpa.toString(16)} outside guest RAM`);
      return ram.slice(gpa, gpa + n);
    },
    write(gpa: number, b: Uint8Array) {
      if (gpa < 0 || gpa + b.length > ram.length) throw new RangeError(`gpa 0x${gpa.toString(16)} outside guest RAM`);
      ram.set(b, gpa);
    },
  };
  const host = new ModelHost();
  const hwpt = host.createTarget("vtd-s1");
  const rid = host.createTarget("vtd-s1");
  const relay = new RelayQueue(host);
  relay.bind(1, 5, { targetId: hwpt, format: "vtd-s1" });
  relay.bind(1, "rid", { targetId: rid, format: "vtd-s1" });
  const events: string[] = [];
  const qi = new VtdInvalidationQueue(memory, relay, {
    interrupt: () => events.push("interrupt"),
    configChanged: (d) => events.push(`config ${d.type} ${d.did}`),
    domains: () => [1],
  });
  const size = opts.dw ? 32 : 16;
  qi.writeIqa(QBASE | (opts.dw ? 1 << 11 : 0) | 0); // QS 0: one 4 KiB page
  let tail = 0;
  const put = (qw0: bigint, qw1: bigint) => {
    const v = new DataView(ram.buffer, QBASE + tail * size, size);
    v.setBigUint64(0, qw0, true);
    v.setBigUint64(8, qw1, true);
    tail = (tail + 1) % qi.entries;
  };
  const piotlb = (pasid: number, page: number, am: number, ih = false) =>
    put(
      (BigInt(pasid) << 32n) | (1n << 16n) | (3n << 4n) | 6n,
      (BigInt(page) << 12n) | (ih ? 1n << 6n : 0n) | BigInt(am),
    );
  const wait = (data: number, slot: number, flags = 1n << 5n) =>
    put((BigInt(data) << 32n) | flags | 5n, BigInt(STATUS + slot * 4));
  const status = (slot: number) => new DataView(ram.buffer).getUint32(STATUS + slot * 4, true);
  return { ram, host, hwpt, rid, relay, qi, put, piotlb, wait, status, events, tail: () => tail * size };
}

Deno.test("vtd queue: a Linux-style doorbell of (invalidate, wait) pairs is one ioctl; every status is written", () => {
  const t = setup();
  for (let i = 0; i < 8; i++) {
    t.piotlb(5, 0x7f000 + i * 512, 9);
    t.wait(0x100 + i, i);
  }
  const r = t.qi.writeIqt(t.tail());
  assert.deepEqual(r, { processed: 16, waitsCompleted: 8 });
  assert.equal(t.host.calls.length, 1, "one ioctl for the whole doorbell");
  assert.deepEqual([0, 1, 7].map(t.status), [0x100, 0x101, 0x107]);
  assert.ok(t.host.covered(t.hwpt, 0x7f000) && t.host.covered(t.hwpt, 0x7f000 + 8 * 512 - 1));
  assert.equal(t.qi.iqh, t.qi.iqt);
});

Deno.test("vtd queue: a malformed descriptor sets IQE at it; earlier waits complete, later ones do not", () => {
  const t = setup();
  t.piotlb(5, 0x100, 0);
  t.wait(1, 0);
  t.put(0xfn, 0n); // unknown type
  t.piotlb(5, 0x200, 0);
  t.wait(2, 1);
  const r = t.qi.writeIqt(t.tail());
  assert.equal(r.error?.index, 2);
  assert.match(r.error!.reason, /unknown-type/);
  assert.equal(t.qi.fsts & FSTS.IQE, FSTS.IQE);
  assert.equal(t.qi.iqh, 2 * 16, "IQH points at the bad descriptor");
  assert.deepEqual([t.status(0), t.status(1)], [1, 0]);
  assert.ok(t.host.covered(t.hwpt, 0x100));
  // While IQE is set the queue does not run; the guest fixes the descriptor, clears IQE and rings again.
  assert.equal(t.qi.writeIqt(t.tail()).processed, 0);
  new DataView(t.ram.buffer, 0x10000 + 2 * 16).setBigUint64(0, (5n << 32n) | (1n << 16n) | (2n << 4n) | 6n, true);
  t.qi.writeFsts(FSTS.IQE);
  assert.deepEqual(t.qi.writeIqt(t.tail()), { processed: 3, waitsCompleted: 1 });
  assert.equal(t.status(1), 2);
});

Deno.test("vtd queue: a host failure is IQE at the descriptor whose invalidation failed", () => {
  const t = setup();
  t.piotlb(5, 0x100, 0);
  t.wait(1, 0);
  t.piotlb(5, 0x900, 0);
  t.wait(2, 1);
  t.host.inject.push({ targetId: t.hwpt, atEntry: 1, errno: 22 });
  const r = t.qi.writeIqt(t.tail());
  assert.deepEqual(r.error, { index: 2, reason: "host invalidation failed or wait status not writable" });
  assert.deepEqual([t.status(0), t.status(1)], [1, 0], "the wait before it completes, the one after does not");
  assert.equal(t.qi.iqh, 2 * 16);
});

Deno.test("vtd queue: PASID-cache invalidation drains first, then tells the VMM to re-read the PASID tables", () => {
  const t = setup();
  t.piotlb(5, 0x100, 0);
  t.put((5n << 32n) | (1n << 16n) | (1n << 4n) | 7n, 0n);
  t.wait(3, 0, (1n << 5n) | (1n << 4n));
  const r = t.qi.writeIqt(t.tail());
  assert.deepEqual(r, { processed: 3, waitsCompleted: 1 });
  assert.deepEqual(t.events, ["config pasid-cache 1", "interrupt"]);
  assert.equal(t.host.calls.length, 1);
});

Deno.test("vtd queue: second-stage IOTLB descriptors reach the RID's target; global reaches every known domain", () => {
  const t = setup();
  t.put((1n << 16n) | (3n << 4n) | 2n, (0x55n << 12n) | 1n); // page-selective, AM 1: pages 0x54..0x55
  t.put((1n << 4n) | 2n, 0n); // global
  t.qi.writeIqt(t.tail());
  assert.ok(t.host.covered(t.rid, 0x54) && t.host.covered(t.rid, 2 ** 52 - 1));
  assert.equal(t.host.covered(t.hwpt, 0x54), false, "no-PASID: the PASID 5 table is not touched");
});

Deno.test("vtd queue: 256-bit descriptors, wrap-around, and a misaligned tail is IQE", () => {
  const t = setup({ dw: true });
  assert.equal(t.qi.entries, 128);
  for (let i = 0; i < 127; i++) t.put(0x5n, 0n); // plain waits fill the ring but one
  assert.equal(t.qi.writeIqt(t.tail()).processed, 127);
  t.piotlb(5, 0x300, 2);
  t.wait(9, 4);
  t.piotlb(5, 0x400, 0);
  const r = t.qi.writeIqt(t.tail()); // wraps past the end of the ring
  assert.deepEqual(r, { processed: 3, waitsCompleted: 1 });
  assert.ok(t.host.covered(t.hwpt, 0x303) && t.host.covered(t.hwpt, 0x400));
  assert.equal(t.status(4), 9);
  const bad = t.qi.writeIqt(t.tail() + 16); // half a 256-bit descriptor
  assert.match(bad.error!.reason, /misaligned/);
  assert.equal(t.qi.fsts & FSTS.IQE, FSTS.IQE);
});

Deno.test("vtd queue: descriptors outside guest RAM or a status write outside it never escape as exceptions", () => {
  const t = setup();
  t.qi.writeIqa(0xfffff000); // the queue lies beyond guest RAM
  const r = t.qi.writeIqt(16);
  assert.match(r.error!.reason, /unreadable/);
  // Random guest rings: only results come back.
  let seed = 5;
  const rnd = () => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0);
  for (let i = 0; i < 2000; i++) {
    const u = setup({ dw: rnd() % 2 === 0 });
    for (let k = 0; k < 8; k++) {
      u.put(BigInt(rnd() % 10) | (BigInt(rnd()) << 32n) | BigInt(rnd() & 0xff0), BigInt(rnd()) << 12n);
    }
    u.qi.writeIqt((rnd() % 20) * 16);
  }
});

Deno.test("vtd queue: a wait whose status address is not guest RAM is IQE at that wait", () => {
  const t = setup();
  t.piotlb(5, 0x100, 0);
  t.put((1n << 32n) | (1n << 5n) | 5n, 0xffff_fff0n); // status write far outside guest RAM
  t.wait(7, 0);
  const r = t.qi.writeIqt(t.tail());
  assert.equal(r.error?.index, 1);
  assert.equal(t.status(0), 0, "the wait after it does not complete");
});

Deno.test("vtd queue: a strict-mode doorbell (invalidation + wait) from guest RAM to the relay allocates nothing after warm-up", async () => {
  await assertAllocatesNothing("doorbell");
});
