import assert from "node:assert/strict";
import { PendingSet } from "../../lib/request/pending.ts";
import { EntryWriter } from "../../lib/compile/entries.ts";
import { compileSmmuv3, decodeSmmuTlbi, SmmuOpcode, type SmmuUnit } from "../../lib/compile/smmuv3.ts";

function compile(unit: SmmuUnit, ril: boolean, add: (p: PendingSet) => void) {
  const p = new PendingSet({ maxRanges: 64, maxPages: 2 ** 40 });
  add(p);
  const w = new EntryWriter(16, 1);
  compileSmmuv3(p, unit, ril, w);
  return Array.from(
    { length: w.count },
    (_, i) => ({ raw: w.bytes.slice(i * 16, i * 16 + 16), ...decodeSmmuTlbi(w.bytes, i * 16) }),
  );
}

Deno.test("smmuv3: TLBI_NH_VA word layout (ASID [63:48], LEAF, VA [63:12]) without RIL", () => {
  const [c] = compile({ kind: "asid", asid: 0xbeef }, false, (p) => p.addRange(0x12345, 1, true, 1));
  const v = new DataView(c.raw.buffer);
  assert.equal(v.getBigUint64(0, true), (0xbeefn << 48n) | 0x12n);
  assert.equal(v.getBigUint64(8, true), (0x12345n << 12n) | 1n);
  assert.deepEqual([c.opcode, c.asid, c.page, c.pages, c.leaf], [SmmuOpcode.TLBI_NH_VA, 0xbeef, 0x12345, 1, true]);
});

Deno.test("smmuv3: without RIL one command per page; with RIL the Linux NUM/SCALE decomposition", () => {
  assert.equal(compile({ kind: "asid", asid: 1 }, false, (p) => p.addRange(100, 64, false, 1)).length, 64);
  for (const pages of [1, 2, 31, 32, 33, 64, 512, 513, 262144, 1000003]) {
    const cmds = compile({ kind: "asid", asid: 1 }, true, (p) => p.addRange(7, pages, false, 1));
    let next = 7;
    for (const c of cmds) {
      assert.equal(c.page, next, `contiguous, ${pages} pages`);
      assert.equal(c.raw[9] >> 2 & 3, 1, "TG = 4 KiB");
      next += c.pages;
    }
    assert.equal(next - 7, pages, `exact cover of ${pages} pages`);
    assert.ok(cmds.length <= 2 * Math.ceil(Math.log2(pages + 1)) + 1, `${cmds.length} commands for ${pages} pages`);
  }
});

Deno.test("smmuv3: whole space → NH_ASID for one ASID, NH_ALL for every ASID; ranges over every ASID → NH_VAA", () => {
  assert.equal(compile({ kind: "asid", asid: 3 }, false, (p) => p.addAll(1))[0].opcode, SmmuOpcode.TLBI_NH_ASID);
  assert.equal(compile({ kind: "every-asid" }, false, (p) => p.addAll(1))[0].opcode, SmmuOpcode.TLBI_NH_ALL);
  const vaa = compile({ kind: "every-asid" }, false, (p) => p.addRange(2 ** 52 - 1, 1, false, 1))[0];
  assert.deepEqual([vaa.opcode, vaa.page], [SmmuOpcode.TLBI_NH_VAA, 2 ** 52 - 1]);
});

Deno.test("smmuv3: ATC_INV spans are naturally aligned powers of two covering the range; SIZE 52 for all", async () => {
  const { compileAtcInv, decodeAtcInv, ATC_INV_SIZE_ALL } = await import("../../lib/compile/smmuv3.ts");
  const run = (add: (p: PendingSet) => void, ssid?: number) => {
    const p = new PendingSet({ maxRanges: 64, maxPages: 2 ** 52 });
    add(p);
    const w = new EntryWriter(16, 1);
    compileAtcInv(p, 0x77, ssid, w);
    return Array.from(
      { length: w.count },
      (_, i) => ({ raw: w.bytes.slice(i * 16, i * 16 + 16), ...decodeAtcInv(w.bytes, i * 16) }),
    );
  };
  let seed = 9;
  const rnd = (n: number) => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) % n;
  for (let i = 0; i < 2000; i++) {
    const first = rnd(2) ? rnd(1 << 20) : 2 ** 52 - 1 - rnd(1000);
    const pages = 1 + rnd(Math.min(2 ** 52 - first, 5000));
    const cmds = run((p) => p.addRange(first, pages, false, 1), 3);
    for (const c of cmds) {
      assert.equal(c.page % 2 ** c.size, 0, "aligned");
      assert.deepEqual([c.vsid, c.ssid], [0x77, 3]);
    }
    if (cmds.length > 1) {
      // Several blocks: an exact, contiguous cover.
      assert.ok(cmds.length <= 4);
      cmds.forEach((c, k) => assert.equal(c.page, k === 0 ? first : cmds[k - 1].page + 2 ** cmds[k - 1].size));
      assert.equal(cmds.reduce((n, c) => n + 2 ** c.size, 0), pages);
    } else {
      assert.ok(cmds[0].page <= first && cmds[0].page + 2 ** cmds[0].size >= first + pages, "covers");
    }
  }
  const [all] = run((p) => p.addAll(1));
  assert.deepEqual([all.size, all.ssid, all.raw[0]], [ATC_INV_SIZE_ALL, undefined, 0x40], "SSV clear without a PASID");
});

Deno.test("smmuv3: CFGI_CD carries SID [63:32], SSID [31:12] and LEAF", async () => {
  const { writeCfgiCd } = await import("../../lib/compile/smmuv3.ts");
  const w = new EntryWriter(16, 1);
  writeCfgiCd(w, [], 0x42, 0xabcde);
  const v = new DataView(w.bytes.buffer);
  assert.equal(v.getBigUint64(0, true), (0x42n << 32n) | (0xabcden << 12n) | 0x05n);
  assert.equal(v.getBigUint64(8, true), 1n);
});
