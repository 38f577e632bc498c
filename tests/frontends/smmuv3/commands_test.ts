// SMMUv3 command layouts as the Linux driver builds them (arm-smmu-v3.h CMDQ_*), decoded.
import assert from "node:assert/strict";
import { decodeSmmuCommand, SmmuCommandError } from "../../../lib/frontends/smmuv3/commands.ts";
import { EntryWriter } from "../../../lib/compile/entries.ts";
import { compileSmmuv3 } from "../../../lib/compile/smmuv3.ts";
import { PendingSet } from "../../../lib/request/pending.ts";

function cmd(w0: bigint, w1: bigint): Uint8Array {
  const b = new Uint8Array(16);
  new DataView(b.buffer).setBigUint64(0, w0, true);
  new DataView(b.buffer).setBigUint64(8, w1, true);
  return b;
}

Deno.test("smmuv3 commands: TLBI, CFGI, ATC_INV, CMD_SYNC decode from the driver's encoding", () => {
  assert.deepEqual(decodeSmmuCommand(cmd((7n << 48n) | 0x11n, 0n), 0), { op: "tlbi-nh-asid", asid: 7 });
  // Range TLBI: NUM=3 (4 granules), SCALE=2, TG=16K → 4 << 2 granules of 4 pages = 64 pages
  assert.deepEqual(
    decodeSmmuCommand(
      cmd((7n << 48n) | (2n << 20n) | (3n << 12n) | 0x12n, (0x40n << 12n) | (2n << 10n) | (3n << 8n) | 1n),
      0,
    ),
    {
      op: "tlbi-nh-va",
      asid: 7,
      leaf: true,
      ttl: 3,
      page: 0x40,
      pages: 64,
    },
  );
  assert.deepEqual(decodeSmmuCommand(cmd((0x42n << 32n) | (5n << 12n) | 0x05n, 1n), 0), {
    op: "cfgi-cd",
    sid: 0x42,
    ssid: 5,
    leaf: true,
  });
  assert.deepEqual(decodeSmmuCommand(cmd((0x42n << 32n) | (5n << 12n) | (1n << 11n) | 0x40n, (0x10n << 12n) | 4n), 0), {
    op: "atc-inv",
    sid: 0x42,
    ssid: 5,
    global: false,
    page: 0x10,
    size: 4,
  });
  assert.deepEqual(decodeSmmuCommand(cmd((0xabcn << 32n) | (1n << 12n) | 0x46n, 0x8000n), 0), {
    op: "sync",
    cs: "irq",
    msiData: 0xabc,
    msiAddress: 0x8000,
    msh: 0,
    msiAttr: 0,
  });
  // Linux's CMD_SYNC on QEMU (recorded): CS=SEV, MSH=3 (ISH), MSIATTR=15 (OIWB), no MSI.
  assert.deepEqual(decodeSmmuCommand(cmd(0x0fc02046n, 0n), 0), {
    op: "sync",
    cs: "sev",
    msiData: 0,
    msiAddress: 0,
    msh: 3,
    msiAttr: 15,
  });
  assert.throws(
    () => decodeSmmuCommand(cmd(0x7fn, 0n), 0),
    (e) => e instanceof SmmuCommandError && e.reason === "unknown-opcode",
  );
  assert.throws(() => decodeSmmuCommand(cmd((3n << 12n) | 0x46n, 0n), 0), SmmuCommandError);
});

Deno.test("smmuv3 commands: what the relay's compiler emits decodes back to the same pages", () => {
  for (const ril of [false, true]) {
    const p = new PendingSet({ maxRanges: 64, maxPages: 1 << 20 });
    p.addRange(0x1234, 77, true, 1);
    const w = new EntryWriter(16);
    compileSmmuv3(p, { kind: "asid", asid: 9 }, ril, w);
    let covered = 0;
    for (let i = 0; i < w.count; i++) {
      const c = decodeSmmuCommand(w.bytes, i * 16);
      assert.ok(c.op === "tlbi-nh-va" && c.asid === 9 && c.leaf);
      if (c.op === "tlbi-nh-va") {
        assert.equal(c.page, 0x1234 + covered);
        covered += c.pages;
      }
    }
    assert.equal(covered, 77);
  }
});

Deno.test("smmuv3 commands: random bytes yield a command or an SmmuCommandError", () => {
  let seed = 7;
  const rnd = () => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0);
  for (let i = 0; i < 200_000; i++) {
    const b = new Uint8Array(16);
    for (let k = 0; k < 16; k++) b[k] = rnd() & 0xff;
    if (rnd() % 2) b[0] = [0x10, 0x11, 0x12, 0x13, 0x40, 0x46, 0x05][rnd() % 7];
    try {
      decodeSmmuCommand(b, 0);
    } catch (e) {
      if (!(e instanceof SmmuCommandError)) throw new Error(`seed 7 input ${i}: ${e}`);
    }
  }
});

Deno.test("smmuv3 commands: TLBI SCALE is bits 24:20 (five bits); bit 25 is RES0", () => {
  // SMMUv3 CMD_TLBI_NH_VA: NUM [16:12], SCALE [24:20]; range = (NUM + 1) << SCALE granules.
  const tlbi = (scale: bigint, extra = 0n) =>
    decodeSmmuCommand(cmd((1n << 48n) | extra | (scale << 20n) | 0x12n, (0x100n << 12n) | (1n << 10n)), 0) as {
      pages: number;
    };
  assert.equal(tlbi(31n).pages, 2 ** 31, "SCALE 31: 2^31 pages of 4 KiB");
  assert.equal(tlbi(5n, 1n << 25n).pages, 32, "bit 25 is not part of SCALE");
  assert.equal(tlbi(0n, 1n << 25n).pages, 1);
});

Deno.test("smmuv3 commands: a range TLBI inside a granule widens down to the granule, never narrower", () => {
  // TG=64K (16 pages), NUM=0, SCALE=0 at 4 KiB page 0x103: the 64 KiB granule holding it starts at page 0x100.
  const c = decodeSmmuCommand(cmd((1n << 48n) | 0x12n, (0x103n << 12n) | (3n << 10n)), 0) as {
    page: number;
    pages: number;
  };
  assert.ok(c.page <= 0x100 && c.page + c.pages >= 0x113, `${c.page}+${c.pages} covers 0x100..0x112`);
});
