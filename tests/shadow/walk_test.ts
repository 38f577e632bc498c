import assert from "node:assert/strict";
import { walkRange } from "../../lib/shadow/walk.ts";
import { GuestPageTables } from "../../lib/shadow/page_tables.ts";
import { prng } from "../../lib/testing/workloads.ts";

const RAM = 1 << 24;
function guest(format: "vtd-sl" | "vtd-fl" = "vtd-sl", levels: 4 | 5 = 4) {
  const ram = new Uint8Array(RAM);
  const tables = new GuestPageTables(ram, { format, levels, tablesAt: 0x80_0000 });
  const memory = {
    read: (a: number, n: number) => {
      if (a < 0 || a + n > RAM) throw new RangeError("not RAM");
      return ram.slice(a, a + n);
    },
  };
  return {
    ram,
    tables,
    memory,
    walk: (first: number, pages: number) => walkRange(memory, tables.config, first, pages, RAM),
  };
}

Deno.test("shadow walk: 4 KiB, 2 MiB and 1 GiB leaves, both formats, 4 and 5 levels; runs coalesce", () => {
  for (const format of ["vtd-sl", "vtd-fl"] as const) {
    for (const levels of [4, 5] as const) {
      const g = guest(format, levels);
      const hi = levels === 5 ? 512 ** 4 * 3 : 0; // an IOVA only a 5-level table reaches
      g.tables.map(hi + 0x10, 0x100, { read: true, write: true });
      g.tables.map(hi + 0x11, 0x101, { read: true, write: true }); // contiguous: one run
      g.tables.map(hi + 0x12, 0x300, { read: true, write: false }); // other gpa: new run
      g.tables.map(hi + 0x200, 0x400, { read: true, write: true }, 2); // 2 MiB
      const w = g.walk(hi, 0x400);
      assert.deepEqual(w.faults, []);
      assert.deepEqual(w.runs, [
        { firstPage: hi + 0x10, pages: 2, gpaPage: 0x100, read: true, write: true },
        { firstPage: hi + 0x12, pages: 1, gpaPage: 0x300, read: true, write: false },
        { firstPage: hi + 0x200, pages: 0x200, gpaPage: 0x400, read: true, write: true },
      ]);
      // A walk over part of a large page clips to the range.
      assert.deepEqual(g.walk(hi + 0x2f0, 4).runs, [
        { firstPage: hi + 0x2f0, pages: 4, gpaPage: 0x4f0, read: true, write: true },
      ]);
    }
  }
  // 1 GiB: 2^18 pages backed by guest RAM would need 1 GiB of RAM; point it inside a large fake RAM size instead.
  const g = guest();
  g.tables.map(512 * 512, 0, { read: true, write: true }, 3);
  const w = walkRange(g.memory, g.tables.config, 512 * 512, 512 * 512, 2 ** 31);
  assert.deepEqual(w.runs, [{ firstPage: 512 * 512, pages: 512 * 512, gpaPage: 0, read: true, write: true }]);
});

Deno.test("shadow walk: permissions are the AND over levels; SL write-only stays write-only, FL read follows P", () => {
  const g = guest("vtd-sl");
  g.tables.map(5, 0x10, { read: false, write: true });
  assert.deepEqual(g.walk(0, 8).runs, [{ firstPage: 5, pages: 1, gpaPage: 0x10, read: false, write: true }]);
  // A read-only upper level makes the leaf read-only.
  const top = g.tables.config.root;
  const v = new DataView(g.ram.buffer);
  v.setUint32(top, (v.getUint32(top, true) & ~2) | 1, true);
  g.tables.map(6, 0x11, { read: true, write: true });
  assert.deepEqual(g.walk(6, 1).runs, [{ firstPage: 6, pages: 1, gpaPage: 0x11, read: true, write: false }]);
  const f = guest("vtd-fl");
  f.tables.map(7, 0x12, { read: false, write: false }); // P only: readable
  assert.deepEqual(f.walk(7, 1).runs, [{ firstPage: 7, pages: 1, gpaPage: 0x12, read: true, write: false }]);
});

Deno.test("shadow walk: hostile tables fault the pages concerned, never throw, never run away", () => {
  const g = guest();
  g.tables.map(0, 1, { read: true, write: true }); // builds the table chain for pages 0..511
  g.tables.raw(0x200, 2, 0x80 | 3 | (0x401 * 4096), 0); // 2 MiB leaf at a misaligned gpa
  g.tables.raw(0x600, 2, 3 | 0x7ff000, 0x1000); // next table far outside RAM
  g.tables.raw(2, 1, 3 | (RAM + 4096 * 16), 0); // leaf outside RAM
  g.tables.raw(512 ** 3, 4, 0x80 | 3, 0); // PS at level 4 (root entry 1): reserved
  const w = walkRange(g.memory, g.tables.config, 0, 512 ** 4, RAM);
  const reasons = w.faults.map((f) => `${f.reason}@${f.firstPage}+${f.pages}`);
  assert.deepEqual(
    reasons.toSorted(),
    [
      "large-page-misaligned@512+512",
      `leaf-outside-ram@2+1`,
      `reserved-large-page@${512 ** 3}+${512 ** 3}`,
      "table-unreadable@1536+512",
    ].toSorted(),
  );
  assert.deepEqual(w.runs, [{ firstPage: 0, pages: 1, gpaPage: 1, read: true, write: true }]);
  // A misaligned root faults the whole range.
  assert.equal(
    walkRange(g.memory, { ...g.tables.config, root: 0x1234 }, 0, 10, RAM).faults[0].reason,
    "root-misaligned",
  );
});

Deno.test("shadow walk: a table that points at itself at every level stops at the budget", () => {
  const g = guest();
  const root = g.tables.config.root;
  const v = new DataView(g.ram.buffer);
  for (let i = 0; i < 512; i++) v.setUint32(root + i * 8, root | 3, true); // every entry: the root again
  const w = walkRange(g.memory, g.tables.config, 0, 512 ** 4, RAM, { tables: 1000, leaves: 10_000 });
  assert.ok(w.tablesRead <= 1001);
  assert.equal(w.faults.at(-1)!.reason, "budget");
  const mapped = w.runs.reduce((n, r) => n + r.pages, 0);
  const faulted = w.faults.reduce((n, f) => n + f.pages, 0);
  assert.ok(mapped + faulted <= 512 ** 4, "every page is either mapped or faulted once");
  // The walk ends with every leaf mapping the root page itself (the table is also a leaf at level 1).
  assert.ok(w.runs.every((r) => r.gpaPage * 4096 === root));
});

Deno.test("shadow walk: 3,000 random tables of random bytes: runs inside range and RAM, or typed faults", () => {
  const rnd = prng(5);
  for (let t = 0; t < 3000; t++) {
    const ram = new Uint8Array(1 << 16);
    for (let i = 0; i < ram.length; i += 4) new DataView(ram.buffer).setUint32(i, rnd(2 ** 32), true);
    const memory = {
      read: (a: number, n: number) => {
        if (a < 0 || a + n > ram.length) throw new RangeError("x");
        return ram.slice(a, a + n);
      },
    };
    const first = rnd(1 << 20), pages = 1 + rnd(1 << 12);
    const w = walkRange(
      memory,
      { format: t % 2 ? "vtd-sl" : "vtd-fl", root: rnd(16) * 4096, levels: 4 },
      first,
      pages,
      ram.length,
      { tables: 64, leaves: 4096 },
    );
    for (const r of w.runs) {
      assert.ok(r.firstPage >= first && r.firstPage + r.pages <= first + pages);
      assert.ok((r.gpaPage + r.pages) * 4096 <= ram.length);
    }
  }
});
