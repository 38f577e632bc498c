// The policy bench's workloads against the Linux guest recordings (issue 19 item 2): the recordings replayed as
// workloads reproduce the recorder's own statistics, and the synthetic shapes match them — ~73 % 4 KiB, 93–97 % (here
// up to 98 %) of page invalidations repeating the previous range, unmap-side invalidations IH=1 and, in caching mode,
// map-side ones IH=0. Counts only; no timing.
import assert from "node:assert/strict";
import { recordedWorkload, VTD_RECORDINGS } from "../../bench/recorded_workloads.ts";
import { cachingWorkload, shapeStatistics, strictWorkload } from "../../lib/testing/workloads.ts";
import { comparePolicies } from "../../lib/testing/policies.ts";

Deno.test("workload shapes: each recording, replayed as a workload, has the statistics its stats.json gives", async () => {
  for (const name of VTD_RECORDINGS) {
    const r = await recordedWorkload(name);
    const s = shapeStatistics(r.workload), stats = r.stats;
    const pct = (n: number) => Number(((n * 100) / stats.psi_descriptors).toFixed(1));
    assert.equal(s.ranges, stats.psi_descriptors, name);
    assert.equal(s.small, pct(stats.psi_size_hist["4K"]), name);
    assert.equal(s.repeats, pct(stats.contiguous_with_prev_detail.same_range_as_prev), name);
    assert.equal(s.leaf, pct(stats.psi_ih["ih=1"] ?? 0), name);
  }
});

Deno.test("workload shapes: the synthetic VT-d shapes carry the recordings' sizes, repeats and IH", async () => {
  const recorded = await Promise.all(VTD_RECORDINGS.map((n) => recordedWorkload(n)));
  const small = recorded.map((r) => shapeStatistics(r.workload).small);
  for (
    const w of [strictWorkload({ doorbells: 4000, seed: 1 }), strictWorkload({ doorbells: 4000, vcpus: 4, seed: 2 })]
  ) {
    const s = shapeStatistics(w);
    assert.ok(Math.abs(s.small - small[0]) <= 1, `${w.name}: ${s.small} % 4 KiB`);
    assert.ok(s.repeats >= 93 && s.repeats <= 98, `${w.name}: ${s.repeats} % repeats`);
    assert.equal(s.leaf, 100, `${w.name}: strict unmap-side invalidations are IH=1`);
  }
  const caching = cachingWorkload({ pairs: 2000, seed: 7 });
  const s = shapeStatistics(caching);
  assert.ok(Math.abs(s.small - small[0]) <= 1 && s.repeats >= 93 && s.repeats <= 98, JSON.stringify(s));
  for (const bell of caching.doorbells) {
    const inv = bell.requests[0];
    assert.ok(inv.op === "invalidate");
    // Map side (even doorbells of a pair: arrival order) IH=0, unmap side IH=1.
    assert.equal(inv.leaf, bell.at % 40_000 >= 20_000);
  }
});

Deno.test("workload shapes: on the recordings no policy under-invalidates, and iommu-relay never sends more ioctls", async () => {
  for (const name of VTD_RECORDINGS) {
    const r = await recordedWorkload(name);
    const results = comparePolicies(r.workload, {
      bindings: r.domains.map((domain) => ({ domain, pasid: "rid" as const, format: "vtd-s1" as const })),
    });
    for (const x of results) assert.equal(x.underInvalidated, 0, `${x.policy} on ${name}`);
    const ours = results.find((x) => x.policy === "iommu-relay")!;
    for (const x of results) assert.ok(ours.ioctls <= x.ioctls, `${name}: ${ours.ioctls} > ${x.policy} ${x.ioctls}`);
  }
});
