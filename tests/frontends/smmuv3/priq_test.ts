import assert from "node:assert/strict";
import { guestMemoryOver } from "../../../lib/memory/guest_memory.ts";
import { SmmuPriQueue } from "../../../lib/frontends/smmuv3/priq.ts";
import { decodeSmmuCommand, SmmuCommandError } from "../../../lib/frontends/smmuv3/commands.ts";
import type { HostPageFault } from "../../../lib/frontends/vtd/prq.ts";
import { prng } from "../../../lib/testing/workloads.ts";

function setup(now = { t: 0 }) {
  const ram = new Uint8Array(1 << 16);
  const memory = guestMemoryOver(ram);
  const answers: [number, number][] = [];
  const priq = new SmmuPriQueue(memory, (cookie, code) => answers.push([cookie, code]), { now: () => now.t }, 1000);
  priq.writeBase(0x3000 | 2); // 4 entries
  return { ram, priq, answers, now };
}
const fault = (over: Partial<HostPageFault> = {}): HostPageFault => ({
  rid: 0x88,
  pasid: 5,
  page: 0x7f_f123,
  read: true,
  write: true,
  exec: false,
  priv: true,
  lastInGroup: true,
  grpid: 0x1a5,
  cookie: 77,
  ...over,
});

Deno.test("smmuv3 priq: the PRI record carries SID, SSID, permissions, LAST, SSV, PRG index and the page", () => {
  const { ram, priq } = setup();
  assert.ok(priq.deliver(fault()));
  const v = new DataView(ram.buffer, 0x3000);
  const dw0 = v.getBigUint64(0, true), dw1 = v.getBigUint64(8, true);
  assert.equal(dw0 & 0xffff_ffffn, 0x88n, "SID [31:0]");
  assert.equal((dw0 >> 32n) & 0xfffffn, 5n, "SSID [51:32]");
  assert.deepEqual(
    [58n, 59n, 60n, 61n, 62n, 63n].map((b) => (dw0 >> b) & 1n),
    [1n, 0n, 1n, 1n, 1n, 1n],
    "PRIV EXEC READ WRITE LAST SSV",
  );
  assert.equal(dw1 & 0x1ffn, 0x1a5n, "PRG index");
  assert.equal(dw1 >> 12n, 0x7f_f123n, "page address");
  assert.ok(priq.deliver(fault({ pasid: undefined, cookie: 78, grpid: 1 })));
  assert.equal(new DataView(ram.buffer, 0x3010).getBigUint64(0, true) >> 63n, 0n, "no SSV without a PASID");
});

Deno.test("smmuv3 priq: CMD_PRI_RESP answers once; unknown, double and post-unbind answers are refused", () => {
  const { priq, answers } = setup();
  priq.deliver(fault());
  priq.deliver(fault({ grpid: 2, cookie: 90, pasid: 6 }));
  assert.equal(priq.guestResponse({ op: "pri-resp", sid: 0x88, ssid: 5, grpid: 0x1a5, resp: 2 }), undefined);
  assert.equal(priq.guestResponse({ op: "pri-resp", sid: 0x88, ssid: 5, grpid: 0x1a5, resp: 2 }), "already-answered");
  assert.equal(priq.guestResponse({ op: "pri-resp", sid: 0x89, ssid: 5, grpid: 0x1a5, resp: 2 }), "no-such-group");
  priq.pasidUnbound(0x88, 6);
  assert.equal(priq.guestResponse({ op: "pri-resp", sid: 0x88, ssid: 6, grpid: 2, resp: 0 }), "pasid-unbound");
  assert.deepEqual(answers, [[77, 0], [90, 1]], "success forwarded; the unbound group answered INVALID by the VMM");
  assert.equal(priq.telemetry.refused, 3);
});

Deno.test("smmuv3 priq: a full queue toggles OVFLG and answers INVALID; the guest's silence times out", () => {
  const { priq, answers, now } = setup();
  for (let i = 0; i < 4; i++) assert.ok(priq.deliver(fault({ grpid: i, cookie: i })));
  assert.equal(priq.deliver(fault({ grpid: 9, cookie: 9 })), false);
  assert.equal(priq.prod >>> 31, 1);
  assert.deepEqual(answers, [[9, 1]]);
  now.t = 1500;
  assert.equal(priq.expire(), 4);
  assert.equal(priq.telemetry.timedOut, 4);
  assert.equal(priq.guestResponse({ op: "pri-resp", sid: 0x88, ssid: 5, grpid: 0, resp: 2 }), "already-answered");
});

Deno.test("smmuv3 priq: 100,000 random guest commands: only typed refusals, and only pending groups are answered", () => {
  const rnd = prng(13);
  const { priq, answers } = setup();
  const open = new Set<number>();
  for (let i = 0; i < 100_000; i++) {
    if (i % 50 === 0 && priq.pending < 3) {
      const g = rnd(4);
      if (priq.deliver(fault({ grpid: g, cookie: 1000 + i }))) {
        open.add(1000 + i);
      }
      priq.writeCons(priq.prod);
    }
    const c = new Uint8Array(16);
    const v = new DataView(c.buffer);
    for (let k = 0; k < 16; k += 4) v.setUint32(k, rnd(2 ** 32), true);
    if (rnd(2)) {
      c[0] = 0x41; // a PRI_RESP, aimed near the pending groups now and then
      if (rnd(2)) {
        v.setUint32(4, 0x88, true),
          v.setUint32(0, 0x41 | (1 << 11) | (5 << 12), true),
          v.setUint32(8, rnd(4) | (rnd(3) << 12), true),
          v.setUint32(12, 0, true);
      }
    }
    let cmd;
    try {
      cmd = decodeSmmuCommand(c, 0);
    } catch (e) {
      assert.ok(e instanceof SmmuCommandError);
      continue;
    }
    if (cmd.op !== "pri-resp") continue;
    const r = priq.guestResponse(cmd);
    assert.ok(r === undefined || ["no-such-group", "already-answered", "pasid-unbound"].includes(r));
  }
  const cookies = answers.map(([c]) => c);
  assert.equal(new Set(cookies).size, cookies.length, "no group answered twice");
  assert.ok(cookies.every((c) => open.has(c)), "only delivered groups were answered");
  assert.ok(cookies.length > 0, "the fuzz did hit pending groups");
});
