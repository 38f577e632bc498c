import assert from "node:assert/strict";
import { ShadowDomain } from "../../lib/shadow/domain.ts";
import { ModelIoas } from "../../lib/shadow/model_ioas.ts";
import { GuestPageTables } from "../../lib/shadow/page_tables.ts";
import { prng } from "../../lib/testing/workloads.ts";
import { walkRange } from "../../lib/shadow/walk.ts";

const RAM = 1 << 24;
function setup() {
  const ram = new Uint8Array(RAM);
  const tables = new GuestPageTables(ram, { format: "vtd-sl", levels: 4, tablesAt: 0x80_0000 });
  const memory = {
    read: (a: number, n: number) => {
      if (a < 0 || a + n > RAM) throw new RangeError("not RAM");
      return ram.slice(a, a + n);
    },
  };
  const ioas = new ModelIoas();
  const domain = new ShadowDomain(memory, RAM, ioas, tables.config);
  return { ram, tables, memory, ioas, domain };
}

Deno.test("shadow domain: map side, unmap side, and a range already mapped identically costs no syscall", () => {
  const { tables, ioas, domain } = setup();
  tables.map(0x100, 0x10, { read: true, write: true });
  tables.map(0x101, 0x11, { read: true, write: true });
  let r = domain.sync(0x100, 2); // IH=0 before DMA: map side
  assert.deepEqual([r.errno, r.maps, r.unmaps, ioas.calls], [0, 1, 0, 1], "one contiguous run: one map");
  assert.deepEqual(ioas.lookup(0x101), { gpaPage: 0x11, read: true, write: true });
  r = domain.sync(0x100, 2);
  assert.deepEqual([r.maps, r.unmaps, r.kept, ioas.calls], [0, 0, 1, 1], "unchanged: nothing sent");
  tables.unmap(0x100);
  tables.unmap(0x101);
  r = domain.sync(0x100, 2); // IH=1 after unmap: unmap side
  assert.deepEqual([r.maps, r.unmaps, ioas.calls, ioas.areas.size], [0, 1, 2, 0]);
});

Deno.test("shadow domain: a change inside a bigger area splits it; pages outside the range are kept as they were", () => {
  const { tables, ioas, domain } = setup();
  for (let p = 0; p < 16; p++) tables.map(0x200 + p, 0x40 + p, { read: true, write: true });
  domain.sync(0x200, 16);
  assert.equal(ioas.areas.size, 1);
  // The guest changes page 0x205 and page 0x20a but invalidates only 0x205.
  tables.map(0x205, 0x99, { read: true, write: false });
  tables.map(0x20a, 0x98, { read: true, write: true });
  const r = domain.sync(0x205, 1);
  assert.deepEqual([r.unmaps, r.maps], [1, 3], "whole area unmapped; before, the page, after: three maps");
  assert.deepEqual(ioas.lookup(0x205), { gpaPage: 0x99, read: true, write: false });
  assert.deepEqual(ioas.lookup(0x20a), { gpaPage: 0x4a, read: true, write: true }, "not invalidated: the old view");
  assert.deepEqual(ioas.lookup(0x204), { gpaPage: 0x44, read: true, write: true });
});

Deno.test("shadow domain: a host failure stops the sync with its errno; the area map still equals the host", () => {
  const { tables, ioas, domain } = setup();
  for (let p = 0; p < 8; p++) tables.map(0x300 + p, 0x50 + p, { read: true, write: true });
  domain.sync(0x300, 8);
  tables.map(0x303, 0x77, { read: true, write: true });
  ioas.failNext = { op: "map", errno: 12 };
  const r = domain.sync(0x303, 1);
  assert.equal(r.errno, 12);
  assert.deepEqual(r.failed, { op: "map", firstPage: 0x300, pages: 3 });
  assert.deepEqual(domain.areas.all, ioas.areas.all, "nothing half-mapped is forgotten or invented");
  assert.equal(ioas.lookup(0x303), undefined, "the stale page is not reachable");
  // The next sync of the range repairs it.
  assert.equal(domain.sync(0x300, 8).errno, 0);
  assert.deepEqual(ioas.lookup(0x303), { gpaPage: 0x77, read: true, write: true });
  ioas.failNext = { op: "unmap", errno: 16 };
  tables.unmap(0x300);
  const u = domain.sync(0x300, 1);
  assert.equal(u.errno, 16);
  assert.deepEqual(domain.areas.all, ioas.areas.all);
});

Deno.test("shadow domain: virtio-iommu MAP/UNMAP go to the same IOAS path with virtio's rules", () => {
  const { ioas, domain } = setup();
  assert.equal(domain.mapDirect(0x400, 4, 0x60, true, false), 0);
  assert.equal(domain.mapDirect(0x402, 1, 0x70, true, true), 17, "overlap: EEXIST");
  assert.equal(domain.mapDirect(0x500, 1, RAM / 4096, true, true), 14, "not guest RAM: EFAULT");
  assert.equal(domain.unmapDirect(0x401, 1), 34, "partial: ERANGE, nothing unmapped");
  assert.equal(ioas.areas.size, 1);
  assert.equal(domain.unmapDirect(0x3ff, 8), 0);
  assert.equal(ioas.areas.size, 0);
});

Deno.test("shadow domain: 2,000 random table edits + invalidations: the invalidated range equals the guest's view, nothing else moves", () => {
  const { tables, memory, ioas, domain } = setup();
  const rnd = prng(Number(Deno.env.get("IOMMU_RELAY_SEED") ?? 21));
  const SPACE = 4096; // IOVA pages in play
  for (let step = 0; step < 2000; step++) {
    for (let e = rnd(6); e > 0; e--) {
      const page = rnd(SPACE);
      if (rnd(3) === 0) tables.unmap(page);
      else tables.map(page, 0x100 + rnd(0x600), { read: rnd(4) !== 0, write: rnd(2) === 0 });
    }
    if (rnd(50) === 0) {
      // A 2 MiB page over pages 512..1023 now and then.
      tables.map(512, 0x1000, { read: true, write: true }, 2);
    }
    const first = rnd(SPACE), pages = 1 + rnd(64);
    const before = new Map<number, string>();
    for (let p = 0; p < SPACE; p++) before.set(p, JSON.stringify(ioas.lookup(p)));
    const r = domain.sync(first, pages);
    assert.equal(r.errno, 0);
    assert.deepEqual(domain.areas.all, ioas.areas.all);
    const view = walkRange(memory, tables.config, first, pages, RAM).runs;
    const want = new Map<number, string>();
    for (const run of view) {
      for (let i = 0; i < run.pages; i++) {
        want.set(run.firstPage + i, JSON.stringify({ gpaPage: run.gpaPage + i, read: run.read, write: run.write }));
      }
    }
    for (let p = 0; p < SPACE; p++) {
      const now = JSON.stringify(ioas.lookup(p));
      if (p >= first && p < first + pages) assert.equal(now, want.get(p) ?? JSON.stringify(undefined), `page ${p}`);
      else assert.equal(now, before.get(p), `page ${p} outside the range moved`);
    }
  }
});
