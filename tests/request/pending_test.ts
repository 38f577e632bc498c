import assert from "node:assert/strict";
import { PendingSet } from "../../lib/request/pending.ts";

const limits = { maxRanges: 4, maxPages: 1000 };

Deno.test("pending: adjacent and overlapping ranges merge; leaf survives only if every part had it", () => {
  const p = new PendingSet(limits);
  p.addRange(10, 5, true, 3); // 10..14
  p.addRange(15, 5, true, 1); // adjacent: 10..19
  assert.deepEqual(p.ranges, [{ first: 10, last: 19, leaf: true, origins: [1, 3] }]);
  p.addRange(12, 1, false, 7); // inside, not leaf
  assert.deepEqual(p.ranges, [{ first: 10, last: 19, leaf: false, origins: [1, 3, 7] }]);
  p.addRange(30, 1, true, 8);
  p.addRange(21, 1, true, 9); // a gap of one page (20) keeps them apart
  assert.deepEqual(p.ranges.map((r) => [r.first, r.last]), [[10, 19], [21, 21], [30, 30]]);
  p.addRange(20, 10, true, 10); // bridges all three
  assert.deepEqual(p.ranges.map((r) => [r.first, r.last, r.leaf]), [[10, 30, false]]);
  assert.equal(p.pages, 21);
  assert.deepEqual(p.ranges[0].origins, [1, 3, 7, 8, 9, 10]);
});

Deno.test("pending: whole-space absorbs ranges, and too many ranges or pages escalate", () => {
  const p = new PendingSet(limits);
  for (let i = 0; i < 4; i++) p.addRange(i * 10, 1, true, i + 1);
  assert.equal(p.all, false);
  p.addRange(100, 1, true, 5); // a fifth range
  assert.equal(p.all, true);
  assert.deepEqual(p.allOrigins, [1, 2, 3, 4, 5]);
  p.addRange(7, 3, true, 6);
  assert.deepEqual(p.ranges, []);
  assert.deepEqual(p.allOrigins, [1, 2, 3, 4, 5, 6]);
  const q = new PendingSet(limits);
  q.addRange(0, 1001, true, 1);
  assert.ok(q.all && q.covers(2 ** 52 - 1));
});

Deno.test("pending: covers exactly what was added (random check against a page set)", () => {
  let seed = 12345;
  const rnd = (n: number) => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) % n;
  for (let round = 0; round < 200; round++) {
    const p = new PendingSet({ maxRanges: 1000, maxPages: 1e9 });
    const truth = new Set<number>();
    for (let k = 0; k < 20; k++) {
      const first = rnd(200), pages = 1 + rnd(8);
      p.addRange(first, pages, rnd(2) === 0, k);
      for (let i = 0; i < pages; i++) truth.add(first + i);
    }
    for (let page = 0; page < 220; page++) assert.equal(p.covers(page), truth.has(page), `round ${round} page ${page}`);
    // Ranges stay sorted, disjoint and non-adjacent.
    for (let i = 1; i < p.ranges.length; i++) assert.ok(p.ranges[i].first > p.ranges[i - 1].last + 1);
  }
});
