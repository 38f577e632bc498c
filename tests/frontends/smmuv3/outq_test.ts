// The SMMUv3 output queues (EVTQ and PRIQ) under every register value a VMM may hand over: 64-bit bases as bigints,
// halves and numbers above 2^53, CONS values anywhere, bases outside guest RAM, records posted into a full queue, and
// the guest's recovery. No register write throws; what cannot be taken exactly is refused, never guessed.
import assert from "node:assert/strict";
import { guestMemoryOver } from "../../../lib/memory/guest_memory.ts";
import { selftestEventRecord, SmmuEventQueue } from "../../../lib/frontends/smmuv3/evtq.ts";
import { SmmuPriQueue } from "../../../lib/frontends/smmuv3/priq.ts";
import type { HostPageFault } from "../../../lib/frontends/vtd/prq.ts";

const OVFLG = 0x8000_0000;
const RAM = 1 << 20;

const fault = (cookie: number): HostPageFault => ({
  rid: 8,
  page: 0x1000 + cookie,
  read: true,
  write: false,
  exec: false,
  priv: false,
  lastInGroup: true,
  grpid: cookie & 0x1ff,
  cookie,
});

/** Both queues behind one interface: write a record, and how many the guest lost. */
function queues() {
  const ram = new Uint8Array(RAM);
  const memory = guestMemoryOver(ram);
  const evtq = new SmmuEventQueue(memory);
  const answers: [number, number][] = [];
  const priq = new SmmuPriQueue(memory, (cookie, code) => answers.push([cookie, code]));
  let cookie = 0;
  return [
    { name: "evtq", q: evtq, bytes: 32, post: () => evtq.post(selftestEventRecord(++cookie)), ram },
    { name: "priq", q: priq, bytes: 16, post: () => priq.deliver(fault(++cookie)), ram, answers },
  ];
}

const HOSTILE_64: (number | bigint)[] = [
  2 ** 62 + 0x12, // above 2^53: its low bits are already gone
  -1,
  -1n,
  NaN,
  Infinity,
  0.5,
  2n ** 64n + 0x2000n,
  -(2n ** 63n),
  Number.MAX_SAFE_INTEGER,
];
const HOSTILE_32: (number | bigint)[] = [-1, 2 ** 32, 2 ** 40 + 7, NaN, -0, 1.5, -1n, 2n ** 70n, 0xffff_ffffn];

for (const [which, name] of ["evtq", "priq"].entries()) {
  Deno.test(`smmuv3 ${name}: *_BASE taken exactly as a bigint or as halves; a number above 2^53 is refused`, () => {
    const { q, bytes } = queues()[which];
    // Linux: WA (bit 62) | address | LOG2SIZE.
    assert.equal(q.writeBase((1n << 62n) | 0x4_0000n | 3n), true);
    assert.deepEqual([q.base, q.log2size, q.baseRegister.decode().allocateHint], [0x4_0000, 3, true]);
    assert.equal(q.writeBase(2 ** 62 + 0x4_0003), false, "2^62 + x as a number: refused");
    assert.deepEqual([q.base, q.log2size], [0x4_0000, 3], "nothing changed");
    // The same value as two 32-bit MMIO writes, in either order.
    q.writeBaseHigh(0x4000_0000), q.writeBaseLow(0x8_0004);
    assert.deepEqual([q.base, q.log2size], [0x8_0000, 4]);
    q.writeBaseLow(0x2_0003), q.writeBaseHigh(0x4000_0001);
    assert.deepEqual([q.base, q.log2size], [0x1_0002_0000, 3], "ADDR bits 51:32 from the high half");
    // LOG2SIZE 19 (2^19 records) at an address above 4 GiB, aligned down to the queue's size.
    assert.equal(q.writeBase(0x000f_ffff_ffff_ffe0n | 31n), true);
    assert.equal(q.log2size, 19, "LOG2SIZE above 19 reads as 19");
    assert.equal(q.base % (bytes * 2 ** 19), 0);
    for (const v of HOSTILE_64) {
      assert.doesNotThrow(() => q.writeBase(v), `writeBase(${v})`);
      assert.ok(q.log2size >= 0 && q.log2size <= 19 && Number.isSafeInteger(q.base) && q.base >= 0);
    }
    for (const v of HOSTILE_32) {
      assert.doesNotThrow(() => (q.writeBaseLow(v), q.writeBaseHigh(v), q.writeCons(v)), `32-bit write ${v}`);
      assert.ok(Number.isSafeInteger(q.base) && q.base >= 0 && q.base < 2 ** 52);
      assert.ok(q.cons >= 0 && q.cons <= 0xffff_ffff);
    }
    assert.equal(q.writeBase(-1n), true, "a bigint is taken modulo 2^64: reserved bits ignored");
    assert.equal(q.log2size, 19);
  });

  Deno.test(`smmuv3 ${name}: a base outside guest RAM loses records as an overflow; a RAM base recovers`, () => {
    const { q, bytes, post } = queues()[which];
    q.writeBase(BigInt(RAM) | 2n); // 4 records just past the end of RAM
    assert.equal(post(), false);
    assert.equal((q.prod & OVFLG) >>> 0, OVFLG, "OVFLG toggled: the guest learns records were lost");
    assert.equal(q.prod & 0xffff, 0, "PROD did not move");
    q.writeBase((1n << 62n) | BigInt(RAM - 4 * bytes) | 2n); // the guest moves the queue into RAM
    assert.equal(q.prod, 0);
    assert.ok(post());
    assert.equal(q.prod, 1);
  });

  Deno.test(`smmuv3 ${name}: records into a full queue toggle OVFLG once; the guest consumes, acknowledges and recovers`, () => {
    const { q, post } = queues()[which];
    q.writeBase(0x1_0000n | 2n); // 4 records
    for (let i = 0; i < 4; i++) assert.ok(post());
    assert.equal(q.prod, 0b100, "index 0, wrap bit set: full");
    assert.equal(post(), false, "full: nothing written over an unread record");
    assert.equal((q.prod & OVFLG) >>> 0, OVFLG, "OVFLG toggled");
    assert.equal(post(), false);
    assert.equal((q.prod & OVFLG) >>> 0, OVFLG, "not toggled again before the guest acknowledges");
    // A CONS past PROD (records never written) keeps the index; its OVACKFLG is taken.
    q.writeCons((0b101 | OVFLG) >>> 0);
    assert.equal(q.cons & 0b111, 0, "the index stays");
    assert.equal((q.cons & OVFLG) >>> 0, OVFLG, "the acknowledgement is taken");
    // Linux: consumed all four, OVACKFLG = OVFLG.
    q.writeCons((0b100 | OVFLG) >>> 0);
    assert.ok(post(), "room again");
    assert.equal(q.prod & 0b111, 0b101);
    for (let i = 0; i < 3; i++) assert.ok(post());
    assert.equal(post(), false, "full again");
    assert.equal(q.prod & OVFLG, 0, "a new overflow toggles OVFLG back");
  });
}

Deno.test("smmuv3 priq: a page request into a full queue is answered INVALID at once, each exactly once", () => {
  const [, p] = queues();
  const priq = p.q as SmmuPriQueue;
  priq.writeBase(0x1_0000n | 1n); // 2 records
  assert.ok(p.post() && p.post());
  assert.equal(p.post(), false);
  assert.equal(p.post(), false);
  assert.deepEqual(p.answers, [[3, 1], [4, 1]]);
  assert.equal(priq.pending, 2);
});

Deno.test("smmuv3 evtq: the host's lost events are an overflow too, counted; a base write resets PROD and CONS", () => {
  const [e] = queues();
  const evtq = e.q as SmmuEventQueue;
  evtq.writeBase(0x1_0000n | 1n);
  evtq.hostLost(3);
  assert.deepEqual(evtq.telemetry, { posted: 0, lost: 3, overflows: 1 });
  evtq.hostLost(-5);
  assert.equal(evtq.telemetry.lost, 3, "a negative count loses nothing");
  evtq.writeBase(0x2_0000n | 1n);
  assert.deepEqual([evtq.prod, evtq.cons], [0, 0]);
  assert.ok(e.post());
});
