import assert from "node:assert/strict";
import { guestMemoryOver } from "../../../lib/memory/guest_memory.ts";
import { decodeVtdDescriptor } from "../../../lib/frontends/vtd/descriptors.ts";
import { hostFaultFromRecord, PRS, VtdPageRequestQueue } from "../../../lib/frontends/vtd/prq.ts";

function setup(now = { t: 0 }) {
  const ram = new Uint8Array(1 << 16);
  const memory = guestMemoryOver(ram);
  const answers: [number, number][] = [];
  let irqs = 0;
  const prq = new VtdPageRequestQueue(memory, (c, code) => answers.push([c, code]), {
    interrupt: () => irqs++,
    now: () => now.t,
  }, 1000);
  prq.writePqa(0x4000);
  return { ram, prq, answers, irqs: () => irqs, now };
}

const fault = (cookie: number, over: Partial<Parameters<VtdPageRequestQueue["deliver"]>[0]> = {}) => ({
  rid: 0x10,
  pasid: 5,
  page: 0x7f0a3,
  read: true,
  write: true,
  exec: false,
  priv: false,
  lastInGroup: true,
  grpid: 7,
  cookie,
  ...over,
});

// The group response the Linux driver writes (QI_PGRP_* macros): decoded by the invalidation queue's decoder.
function groupResponse(rid: number, pasid: number, grpid: number, code: number) {
  const b = new Uint8Array(16);
  const v = new DataView(b.buffer);
  v.setBigUint64(0, (BigInt(pasid) << 32n) | (BigInt(rid) << 16n) | (BigInt(code) << 12n) | (1n << 4n) | 9n, true);
  v.setBigUint64(8, BigInt(grpid) << 3n, true);
  const d = decodeVtdDescriptor(b, 0, 16);
  if (d.type !== "page-group-response") throw new Error("not a group response");
  return d;
}

Deno.test("prq: a host fault lands in guest memory as the driver's page_req_dsc, with PPR and an interrupt", () => {
  const t = setup();
  assert.ok(t.prq.deliver(fault(77)));
  const v = new DataView(t.ram.buffer, 0x4000, 32);
  const qw0 = v.getBigUint64(0, true), qw1 = v.getBigUint64(8, true);
  assert.equal(qw0 & 0xffn, 1n, "type: page request");
  assert.equal((qw0 >> 8n) & 1n, 1n, "PASID present");
  assert.equal((qw0 >> 16n) & 0xffffn, 0x10n);
  assert.equal((qw0 >> 32n) & 0xfffffn, 5n);
  assert.deepEqual([qw1 & 1n, (qw1 >> 1n) & 1n, (qw1 >> 2n) & 1n, (qw1 >> 3n) & 0x1ffn, qw1 >> 12n], [
    1n,
    1n,
    1n,
    7n,
    0x7f0a3n,
  ]);
  assert.equal(t.prq.pqt, 32);
  assert.equal(t.prq.prs & PRS.PPR, PRS.PPR);
  assert.equal(t.irqs(), 1);
});

Deno.test("prq: the guest's answer reaches the host once; unknown, double and post-unbind answers are refused", () => {
  const t = setup();
  t.prq.deliver(fault(77));
  assert.equal(t.prq.guestResponse(groupResponse(0x10, 5, 7, 0)), undefined);
  assert.deepEqual(t.answers, [[77, 0]]);
  assert.equal(t.prq.guestResponse(groupResponse(0x10, 5, 7, 0)), "already-answered");
  assert.equal(t.prq.guestResponse(groupResponse(0x10, 5, 8, 0)), "no-such-group");
  t.prq.deliver(fault(78, { grpid: 9 }));
  t.prq.pasidUnbound(0x10, 5);
  assert.deepEqual(t.answers.at(-1), [78, 1], "answered INVALID at unbind");
  assert.equal(t.prq.guestResponse(groupResponse(0x10, 5, 9, 0)), "pasid-unbound");
  assert.deepEqual(t.prq.telemetry, {
    timeoutMs: 1000,
    timeoutCode: 1,
    delivered: 2,
    answered: 1,
    refused: 3,
    timedOut: 0,
    overflows: 0,
    undeliverable: 0,
    quiesced: 0,
    lateAnswers: 0,
  });
});

Deno.test("prq: an unanswered group is answered INVALID at its deadline; a full queue overflows with PRO", () => {
  const t = setup();
  t.prq.deliver(fault(1));
  t.now.t = 999;
  assert.equal(t.prq.expire(), 0);
  t.now.t = 1000;
  assert.equal(t.prq.expire(), 1);
  assert.deepEqual(t.answers, [[1, 1]]);
  const u = setup();
  for (let i = 0; i < 127; i++) assert.ok(u.prq.deliver(fault(100 + i, { grpid: i % 512 })));
  assert.equal(u.prq.deliver(fault(999, { grpid: 300 })), false, "128 slots, one kept empty");
  assert.equal(u.prq.prs & PRS.PRO, PRS.PRO);
  assert.deepEqual(u.answers, [[999, 1]]);
  u.prq.writePqh(64); // the guest consumed two
  assert.ok(u.prq.deliver(fault(1000, { grpid: 301 })));
});

Deno.test("prq: iommufd fault records map to guest faults", () => {
  const f = hostFaultFromRecord({ flags: 3, pasid: 5, grpid: 2, perm: 1 | 2, addr: 0xdeadb000n, cookie: 9 }, 0x20);
  assert.deepEqual(f, {
    rid: 0x20,
    pasid: 5,
    page: 0xdeadb,
    read: true,
    write: true,
    exec: false,
    priv: false,
    lastInGroup: true,
    grpid: 2,
    cookie: 9,
  });
  assert.equal(hostFaultFromRecord({ flags: 2, pasid: 5, grpid: 2, perm: 0, addr: 0n, cookie: 9 }, 1).pasid, undefined);
});

Deno.test("vtd prq: 100,000 fuzzed page group responses: only typed refusals, only pending groups answered once", async () => {
  const { prng } = await import("../../../lib/testing/workloads.ts");
  const { decodeVtdDescriptor, VtdDescriptorError } = await import("../../../lib/frontends/vtd/descriptors.ts");
  const { VtdPageRequestQueue } = await import("../../../lib/frontends/vtd/prq.ts");
  const rnd = prng(23);
  const ram = new Uint8Array(1 << 16);
  const memory = guestMemoryOver(ram);
  const answers: number[] = [];
  const prq = new VtdPageRequestQueue(memory, (cookie) => answers.push(cookie));
  prq.writePqa(0x2000);
  const delivered = new Set<number>();
  for (let i = 0; i < 100_000; i++) {
    if (i % 50 === 0) {
      prq.writePqh(prq.pqt);
      if (
        prq.deliver({
          rid: 0x18,
          pasid: 3,
          page: i,
          read: true,
          write: false,
          exec: false,
          priv: false,
          lastInGroup: true,
          grpid: rnd(4),
          cookie: i,
        })
      ) delivered.add(i);
    }
    const d = new Uint8Array(16);
    const v = new DataView(d.buffer);
    for (let k = 0; k < 16; k += 4) v.setUint32(k, rnd(2 ** 32), true);
    if (rnd(2)) {
      // A well-formed page group response aimed near the pending groups.
      v.setBigUint64(0, (3n << 32n) | (0x18n << 16n) | (BigInt(rnd(2)) << 4n) | 9n, true);
      v.setBigUint64(8, (BigInt(rnd(4)) << 3n) | (1n << 2n), true);
    }
    let desc;
    try {
      desc = decodeVtdDescriptor(d, 0, 16);
    } catch (e) {
      assert.ok(e instanceof VtdDescriptorError);
      continue;
    }
    if (desc.type !== "page-group-response") continue;
    const r = prq.guestResponse(desc);
    assert.ok(r === undefined || ["no-such-group", "already-answered", "pasid-unbound"].includes(r));
  }
  assert.equal(new Set(answers).size, answers.length, "no group answered twice");
  assert.ok(answers.every((c) => delivered.has(c)), "only delivered groups");
  assert.ok(answers.length > 0);
});

Deno.test("prq: the timeout's answer is configurable and reported with the counters", async () => {
  const { VtdPageRequestQueue } = await import("../../../lib/frontends/vtd/prq.ts");
  const ram = new Uint8Array(1 << 16);
  const memory = guestMemoryOver(ram);
  const sent: [number, number][] = [];
  const now = { t: 0 };
  const prq = new VtdPageRequestQueue(memory, (c, code) => sent.push([c, code]), { now: () => now.t }, 250, 0);
  prq.writePqa(0x2000);
  prq.deliver({
    rid: 1,
    pasid: 2,
    page: 3,
    read: true,
    write: false,
    exec: false,
    priv: false,
    lastInGroup: true,
    grpid: 4,
    cookie: 5,
  });
  now.t = 249;
  assert.equal(prq.expire(), 0);
  now.t = 250;
  assert.equal(prq.expire(), 1);
  assert.deepEqual(sent, [[5, 0]], "answered with the configured code (SUCCESS: the device retries the access)");
  assert.deepEqual([prq.telemetry.timeoutMs, prq.telemetry.timeoutCode, prq.telemetry.timedOut], [250, 0, 1]);
});
