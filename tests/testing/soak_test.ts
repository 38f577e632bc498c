import assert from "node:assert/strict";
import { soak } from "../../lib/testing/soak.ts";

Deno.test("soak (CI length): 300,000 guest operations over 4 devices, invariants checked at every drain, heap flat", () => {
  const seed = Number(Deno.env.get("IOMMU_RELAY_SEED") ?? 7);
  const r = soak({ ops: 300_000, seed });
  console.log(
    `soak: seed ${seed}, ${r.drains} drains, ${r.pagesChecked} pages checked, heap ${r.heapMiB.join(" ")} MiB`,
  );
  assert.deepEqual(r.violations, []);
  assert.ok(r.injectedFailures > 0 && r.reportedFailures >= r.injectedFailures, "failures were injected and reported");
  assert.ok(r.pagesChecked > 100_000);
  if ((globalThis as { gc?: unknown }).gc) {
    // After a GC, the heap of the second tenth and of the last differ by noise only (a per-op leak would show).
    const growth = Math.max(...r.heapMiB.slice(2)) - r.heapMiB[1];
    assert.ok(growth < 3, `heap grew ${growth.toFixed(1)} MiB: ${r.heapMiB.join(" ")}`);
  }
});
