// The SMMUv3 command queue model against the relay queue and the in-process host.
import assert from "node:assert/strict";
import { RelayQueue } from "../../../lib/relay/queue.ts";
import { CERROR, GERROR_CMDQ_ERR, SmmuCommandQueue } from "../../../lib/frontends/smmuv3/cmdq.ts";
import { ModelHost } from "../../../lib/host/model.ts";
import { assertAllocatesNothing } from "../../alloc_probe.ts";

const QBASE = 0x10000, MSI = 0x40000;

function setup() {
  const ram = new Uint8Array(1 << 20);
  const memory = {
    read: (a: number, n: number) => {
      if (a + n > ram.length) throw new RangeError("outside guest RAM");
      return ram.slice(a, a + n);
    },
    write: (a: number, b: Uint8Array) => {
      if (a + b.length > ram.length) throw new RangeError("outside guest RAM");
      ram.set(b, a);
    },
  };
  const host = new ModelHost();
  const vsmmu = host.createTarget("smmuv3");
  const relay = new RelayQueue(host, { smmuRil: true });
  relay.bind(1, 3, { targetId: vsmmu, format: "smmuv3", asid: 42 });
  relay.bind(1, "rid", { targetId: vsmmu, format: "smmuv3", asid: 1 });
  const events: string[] = [];
  const cmdq = new SmmuCommandQueue(memory, relay, {
    asidUsers: (asid) => asid === 42 ? [{ domain: 1, pasid: 3 }] : asid === 1 ? [{ domain: 1, pasid: "rid" }] : [],
    domains: () => [1],
    configChanged: (c) => events.push(c.op),
  });
  cmdq.writeBase(QBASE | 6); // 64 commands
  let prod = 0;
  const put = (w0: bigint, w1: bigint) => {
    const v = new DataView(ram.buffer, QBASE + (prod % 64) * 16, 16);
    v.setBigUint64(0, w0, true);
    v.setBigUint64(8, w1, true);
    prod = (prod + 1) % 128;
  };
  const sync = (data: number, slot: number) => put((BigInt(data) << 32n) | (1n << 12n) | 0x46n, BigInt(MSI + slot * 4));
  const msi = (slot: number) => new DataView(ram.buffer).getUint32(MSI + slot * 4, true);
  return { ram, host, vsmmu, cmdq, put, sync, msi, events, prod: () => prod };
}

Deno.test("smmuv3 cmdq: 64 TLBI_NH_VA + CMD_SYNC become one ioctl; the MSI completes the sync", () => {
  const t = setup();
  for (let p = 0; p < 63; p++) t.put((42n << 48n) | 0x12n, (BigInt(0x500 + p) << 12n) | 1n);
  t.sync(0x77, 0);
  const r = t.cmdq.writeProd(t.prod());
  assert.deepEqual(r, { processed: 64, syncsCompleted: 1 });
  assert.equal(t.host.calls.length, 1);
  assert.equal(t.host.calls[0].count, 2, "63 contiguous pages coalesce into two range commands (RIL)");
  assert.ok(t.host.covered(t.vsmmu, 0x500, 42) && t.host.covered(t.vsmmu, 0x53e, 42));
  assert.equal(t.msi(0), 0x77);
  assert.equal(t.cmdq.cons, t.cmdq.prod);
});

Deno.test("smmuv3 cmdq: an illegal command stops the queue with CERROR_ILL at it until GERRORN acknowledges", () => {
  const t = setup();
  t.put((42n << 48n) | 0x12n, 0x100n << 12n);
  t.sync(1, 0);
  t.put(0x7fn, 0n); // illegal
  t.sync(2, 1);
  const r = t.cmdq.writeProd(t.prod());
  assert.equal(r.error?.index, 2);
  assert.equal((t.cmdq.cons >>> 24) & 0x7f, CERROR.ILL);
  assert.equal(t.cmdq.cons & 0xff, 2);
  assert.equal(t.cmdq.gerror & GERROR_CMDQ_ERR, GERROR_CMDQ_ERR);
  assert.deepEqual([t.msi(0), t.msi(1)], [1, 0]);
  // Still stalled: a new PROD write does nothing until the guest acknowledges.
  assert.equal(t.cmdq.writeProd(t.prod()).processed, 0);
  // The guest (like Linux) replaces the bad command with a CMD_SYNC and acknowledges through GERRORN.
  new DataView(t.ram.buffer, QBASE + 2 * 16, 16).setBigUint64(0, 0x46n, true);
  const resumed = t.cmdq.writeGerrorn(t.cmdq.gerror);
  assert.deepEqual(resumed, { processed: 2, syncsCompleted: 2 });
  assert.equal(t.msi(1), 2);
  assert.equal(t.cmdq.cons, t.cmdq.prod);
});

Deno.test("smmuv3 cmdq: CFGI_CD drains first and tells the VMM; a host failure is CERROR_ABT at that TLBI", () => {
  const t = setup();
  t.put((42n << 48n) | 0x11n, 0n);
  t.put((0x42n << 32n) | (3n << 12n) | 0x05n, 1n);
  t.sync(5, 0);
  assert.deepEqual(t.cmdq.writeProd(t.prod()), { processed: 3, syncsCompleted: 1 });
  assert.deepEqual(t.events, ["cfgi-cd"]);
  t.host.inject.push({ targetId: t.vsmmu, atEntry: 0, errno: 22 });
  t.put((1n << 48n) | 0x12n, 0x900n << 12n); // the RID's ASID
  t.sync(6, 1);
  const r = t.cmdq.writeProd(t.prod());
  assert.equal(r.error?.index, 3);
  assert.equal((t.cmdq.cons >>> 24) & 0x7f, CERROR.ABT, "Linux retries CERROR_ABT; CERROR_ILL would be skipped");
  assert.equal(t.msi(1), 0);
});

Deno.test("cmdq: a strict unmap's PROD write (TLBI_NH_VA + CMD_SYNC) from guest RAM to the relay allocates nothing after warm-up", async () => {
  await assertAllocatesNothing("smmu-cmdq");
});
