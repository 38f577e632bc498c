import assert from "node:assert/strict";
import { cachingModeStream, runShadowPolicy } from "../../lib/testing/shadow_policies.ts";

Deno.test("shadow policies: both keep the host equal to the guest; the area map makes fewer syscalls", () => {
  const stream = cachingModeStream({ pairs: 500, seed: 3 });
  const naive = runShadowPolicy(stream, "naive"), areas = runShadowPolicy(stream, "area-map");
  assert.equal(naive.mismatches, 0);
  assert.equal(areas.mismatches, 0);
  assert.deepEqual([naive.faults, areas.faults], [0, 0]);
  assert.ok(areas.syscalls < naive.syscalls, `${areas.syscalls} < ${naive.syscalls}`);
  // Counts, not times: the area map maps each physically contiguous run once and unmaps it once.
  const runs = stream.pairs.reduce(
    (n, p) => n + p.gpaPages.filter((g, i) => i === 0 || p.gpaPages[i - 1] !== g - 1).length,
    0,
  );
  assert.equal(areas.syscalls, 2 * runs);
});
