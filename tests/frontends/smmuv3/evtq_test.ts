import assert from "node:assert/strict";
import { guestMemoryOver } from "../../../lib/memory/guest_memory.ts";
import { selftestEventRecord, SMMU_EVENT, SmmuEventQueue } from "../../../lib/frontends/smmuv3/evtq.ts";

function guest() {
  const ram = new Uint8Array(1 << 16);
  const memory = guestMemoryOver(ram);
  let interrupts = 0;
  const q = new SmmuEventQueue(memory, { interrupt: () => interrupts++ });
  return { ram, q, interrupts: () => interrupts };
}

Deno.test("smmuv3 evtq: records land at PROD with the spec's layout; PROD wraps with its wrap bit", () => {
  const { ram, q, interrupts } = guest();
  q.writeBase(0x2000 | 1); // 2 entries
  assert.ok(q.post(selftestEventRecord(0x88, 0x7f00_0000_1000)));
  const v = new DataView(ram.buffer);
  assert.equal(v.getUint32(0x2000, true) & 0xff, SMMU_EVENT.F_TRANSLATION);
  assert.equal(v.getUint32(0x2004, true), 0x88, "StreamID in dword 0 [63:32]");
  assert.equal(v.getBigUint64(0x2010, true), 0x7f00_0000_1000n, "input address in dword 2");
  assert.ok(q.post(selftestEventRecord(0x89)));
  assert.equal(q.prod, 0b10, "index 0, wrap bit set");
  q.writeCons(0b10); // the guest consumed both
  assert.ok(q.post(selftestEventRecord(0x8a)));
  assert.equal(q.prod, 0b11);
  assert.equal(v.getUint32(0x2004, true), 0x8a, "written over the consumed slot 0");
  assert.equal(interrupts(), 3);
});

Deno.test("smmuv3 evtq: a full queue or a host loss toggles PROD.OVFLG once until the guest acknowledges it", () => {
  const { q } = guest();
  q.writeBase(0x2000 | 1);
  q.post(selftestEventRecord(1));
  q.post(selftestEventRecord(2));
  assert.equal(q.post(selftestEventRecord(3)), false, "full: not written");
  assert.equal(q.prod >>> 31, 1, "OVFLG toggled");
  assert.equal(q.post(selftestEventRecord(4)), false);
  assert.equal(q.prod >>> 31, 1, "not toggled again before the guest acknowledges");
  assert.deepEqual(q.telemetry, { posted: 2, lost: 2, overflows: 1 });
  q.writeCons((0b10 | (1 << 31)) >>> 0); // consumed both, OVACKFLG = OVFLG
  q.hostLost(5);
  assert.equal(q.prod >>> 31, 0, "a new overflow toggles it back");
  assert.deepEqual(q.telemetry, { posted: 2, lost: 7, overflows: 2 });
});

Deno.test("smmuv3 evtq: a base outside guest RAM loses the record as an overflow, never throws", () => {
  const { q } = guest();
  q.writeBase(0xfff_f000 | 3);
  assert.equal(q.post(selftestEventRecord(1)), false);
  assert.equal(q.telemetry.lost, 1);
  assert.throws(() => q.post(new Uint8Array(16)), RangeError, "the VMM's own mistake is loud");
});

Deno.test("smmuv3 evtq stalls: a stalled record with its STAG; CMD_RESUME answers once; silence terminates", () => {
  const { ram, q } = guest();
  const now = { t: 0 };
  (q.hooks as { now?: () => number }).now = () => now.t;
  q.writeBase(0x2000 | 2);
  const answers: [number, number][] = [];
  assert.throws(() =>
    q.postStall({
      rid: 1,
      page: 1,
      read: true,
      write: false,
      exec: false,
      priv: false,
      lastInGroup: true,
      grpid: 0,
      cookie: 1,
    })
  );
  q.enableStalls((cookie, code) => answers.push([cookie, code]), 1000);
  const f = {
    rid: 0x88,
    pasid: 4,
    page: 0xcafe0,
    read: false,
    write: true,
    exec: false,
    priv: false,
    lastInGroup: true,
    grpid: 0,
    cookie: 55,
  };
  assert.ok(q.postStall(f));
  const v = new DataView(ram.buffer, 0x2000);
  const stag = v.getUint32(8, true) & 0xffff;
  assert.equal(v.getUint32(8, true) >>> 31, 1, "Stall");
  assert.equal((v.getUint32(12, true) >> 3) & 1, 0, "RnW = 0: a write");
  assert.equal(v.getUint32(4, true), 0x88);
  assert.equal((v.getUint32(0, true) >>> 12) & 0xfffff, 4, "SubstreamID, with SSV");
  assert.equal(q.guestResume({ op: "resume", sid: 0x88, stag: stag + 1, resp: 1 }), "no-such-group");
  assert.equal(q.guestResume({ op: "resume", sid: 0x88, stag, resp: 1 }), undefined);
  assert.equal(q.guestResume({ op: "resume", sid: 0x88, stag, resp: 1 }), "already-answered");
  assert.ok(q.postStall({ ...f, cookie: 56 }));
  now.t = 2000;
  assert.equal(q.expire(), 1);
  assert.deepEqual(answers, [[55, 0], [56, 1]], "RETRY → success; the unanswered stall terminated");
  assert.equal(q.stallTelemetry!.timedOut, 1);
});
