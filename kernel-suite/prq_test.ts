// I/O page faults end to end on the real kernel: TRIGGER_IOPF → the iommufd fault queue → the guest's VT-d page
// request queue (a page_req_dsc in guest memory) → the guest's page group response through its invalidation queue
// → the page response written back to the kernel. A second answer is refused before it reaches the kernel.
import assert from "node:assert/strict";
import { guestMemoryOver } from "../lib/memory/guest_memory.ts";
import { hostFaultFromRecord, VtdPageRequestQueue } from "../lib/frontends/vtd/prq.ts";
import { VtdInvalidationQueue } from "../lib/frontends/vtd/queue.ts";
import { RelayQueue } from "../lib/relay/queue.ts";
import { ModelHost } from "../lib/host/model.ts";
import { PgfaultConstants } from "../lib/uapi/mod.ts";
import { iopfChain, kernelTest, openIommufd } from "./harness.ts";

const P = PgfaultConstants.values;

kernelTest("prq: TRIGGER_IOPF → guest page request → guest group response → kernel page response", [
  "fault-queue",
  "selftest-trigger-iopf",
], () => {
  using iommufd = openIommufd();
  using chain = iopfChain(iommufd);
  const { dev, queue } = chain;

  const ram = new Uint8Array(1 << 16);
  const memory = guestMemoryOver(ram);
  const forwarded: [number, number][] = [];
  const prq = new VtdPageRequestQueue(memory, (cookie, code) => {
    forwarded.push([cookie, code]);
    queue.respond(cookie, code);
  });
  prq.writePqa(0x4000);
  const refusals: string[] = [];
  const qi = new VtdInvalidationQueue(memory, new RelayQueue(new ModelHost()), {
    pageGroupResponse: (d) => {
      const r = prq.guestResponse(d);
      if (r) refusals.push(r);
    },
  });
  qi.writeIqa(0x1000);

  dev.triggerIopf({
    pasid: 3,
    grpid: 2,
    perm: P.IOMMU_PGFAULT_PERM_READ | P.IOMMU_PGFAULT_PERM_WRITE,
    addr: 0xdeadb000,
  });
  assert.ok(queue.pollIn(1000));
  const guestRid = 0x18;
  assert.ok(prq.deliver(hostFaultFromRecord(queue.readFault(), guestRid)));
  // The guest reads its page request…
  const v = new DataView(ram.buffer, 0x4000, 32);
  assert.equal(Number((v.getBigUint64(0, true) >> 32n) & 0xfffffn), 3);
  assert.equal(Number(v.getBigUint64(8, true) >> 12n), 0xdeadb);
  // …and answers it twice through its invalidation queue (the second must never reach the kernel).
  const q = new DataView(ram.buffer, 0x1000);
  for (const i of [0, 1]) {
    q.setBigUint64(i * 16, (3n << 32n) | (BigInt(guestRid) << 16n) | (1n << 4n) | 9n, true);
    q.setBigUint64(i * 16 + 8, (2n << 3n) | (1n << 2n), true);
  }
  const r = qi.writeIqt(32);
  assert.equal(r.error, undefined);
  assert.equal(forwarded.length, 1, "one page response reached the kernel");
  assert.equal(forwarded[0][1], 0, "success");
  assert.deepEqual(refusals, ["already-answered"]);
});

kernelTest("priq (SMMUv3): TRIGGER_IOPF → fault stream → guest PRI record → CMD_PRI_RESP → kernel page response", [
  "fault-queue",
  "selftest-trigger-iopf",
], async () => {
  const { faultStream } = await import("../lib/kernel/streams.ts");
  const { SmmuPriQueue } = await import("../lib/frontends/smmuv3/priq.ts");
  const { SmmuCommandQueue } = await import("../lib/frontends/smmuv3/cmdq.ts");
  using iommufd = openIommufd();
  using chain = iopfChain(iommufd);
  const { dev, queue } = chain;
  const ram = new Uint8Array(1 << 16);
  const memory = guestMemoryOver(ram);
  const forwarded: [number, number][] = [];
  const priq = new SmmuPriQueue(memory, (cookie, code) => {
    forwarded.push([cookie, code]);
    queue.respond(cookie, code);
  });
  priq.writeBase(0x6000 | 3);
  const refusals: string[] = [];
  const cmdq = new SmmuCommandQueue(memory, new RelayQueue(new ModelHost()), {
    asidUsers: () => [],
    domains: () => [],
    faultResponse: (c) => {
      if (c.op !== "pri-resp") return;
      const r = priq.guestResponse(c);
      if (r) refusals.push(r);
    },
  });
  cmdq.writeBase(0x1000 | 4);
  const vsid = 0x88;
  dev.triggerIopf({ pasid: 4, grpid: 7, perm: P.IOMMU_PGFAULT_PERM_WRITE, addr: 0xcafe0000 });
  const ac = new AbortController();
  for await (const f of faultStream(queue, { signal: ac.signal, pollMs: 50 })) {
    assert.ok(priq.deliver(hostFaultFromRecord(f, vsid)));
    ac.abort();
  }
  const e = new DataView(ram.buffer, 0x6000, 16);
  assert.equal(Number(e.getBigUint64(0, true) & 0xffff_ffffn), vsid, "the guest sees its virtual StreamID");
  assert.equal(Number((e.getBigUint64(0, true) >> 32n) & 0xfffffn), 4, "SubstreamID");
  assert.equal(Number(e.getBigUint64(8, true) >> 12n), 0xcafe0, "page");
  // The guest answers with CMD_PRI_RESP (success), twice; then CMD_SYNC.
  const c = new DataView(ram.buffer, 0x1000);
  for (const i of [0, 1]) {
    c.setUint32(i * 16, 0x41 | (1 << 11) | (4 << 12), true);
    c.setUint32(i * 16 + 4, vsid, true);
    c.setUint32(i * 16 + 8, 7 | (2 << 12), true);
  }
  c.setUint32(32, 0x46, true);
  const r = cmdq.writeProd(3);
  assert.equal(r.error, undefined);
  assert.deepEqual(forwarded.map(([, code]) => code), [0], "one success response reached the kernel");
  assert.deepEqual(refusals, ["already-answered"]);
});
