import assert from "node:assert/strict";
import { PendingSet } from "../../lib/request/pending.ts";
import { EntryWriter } from "../../lib/compile/entries.ts";
import { compileVtd } from "../../lib/compile/vtd.ts";
import { IommuHwptVtdS1Invalidate } from "../../lib/uapi/mod.ts";

function compile(add: (p: PendingSet) => void) {
  const p = new PendingSet({ maxRanges: 64, maxPages: 2 ** 52 });
  add(p);
  const w = new EntryWriter(24, 1);
  compileVtd(p, w);
  return Array.from(
    { length: w.count },
    (_, i) => IommuHwptVtdS1Invalidate.decode(w.bytes.subarray(i * 24, i * 24 + 24)),
  );
}

Deno.test("vtd: a range is {addr, npages, LEAF}; whole space is {0, U64_MAX}", () => {
  assert.deepEqual(compile((p) => p.addRange(0x7f000, 512, true, 1)), [
    { addr: 0x7f000000n, npages: 512n, flags: 1, __reserved: 0 },
  ]);
  assert.deepEqual(compile((p) => p.addAll(1)), [{
    addr: 0n,
    npages: 0xffff_ffff_ffff_ffffn,
    flags: 0,
    __reserved: 0,
  }]);
});

Deno.test("vtd: boundaries — 4 KiB, 2 MiB, 1 GiB and the last page below 2^64", () => {
  assert.deepEqual(compile((p) => p.addRange(1, 1, false, 1))[0].npages, 1n);
  assert.deepEqual(compile((p) => p.addRange(512, 512, false, 1))[0], {
    addr: 0x200000n,
    npages: 512n,
    flags: 0,
    __reserved: 0,
  });
  assert.deepEqual(compile((p) => p.addRange(2 ** 18, 2 ** 18, false, 1))[0].addr, 1n << 30n);
  const top = compile((p) => p.addRange(2 ** 52 - 1, 1, true, 1))[0];
  assert.equal(top.addr, 0xffff_ffff_ffff_f000n);
  assert.equal(top.addr + top.npages * 4096n, 1n << 64n, "ends exactly at 2^64, no wrap");
});

Deno.test("vtd: several ranges give one entry each, in address order, and the writer grows", () => {
  const entries = compile((p) => {
    for (let i = 0; i < 10; i++) p.addRange(1000 - i * 10, 1, i % 2 === 0, i);
  });
  assert.equal(entries.length, 10);
  assert.ok(entries.every((e, i) => i === 0 || e.addr > entries[i - 1].addr));
});
