// The VT-d queue models under hostile register values and queue contents, each input under a deadline enforced from
// outside the Worker running it: an input that never returns (an IQT that loops forever) fails with its seed.
// IOMMU_RELAY_SEED replays.
import assert from "node:assert/strict";
import { fuzzWithDeadline } from "../../lib/testing/fuzz_deadline.ts";
import { FuzzFailure } from "../../lib/testing/fuzz.ts";

const TARGETS = new URL("./vtd_queue_fuzz_targets.ts", import.meta.url);
const seed = Number(Deno.env.get("IOMMU_RELAY_SEED") ?? Date.now() % 1_000_000);

for (const [i, name] of ["vtdQueueTarget", "vtdPageRequestTarget"].entries()) {
  Deno.test(`fuzz with deadline: ${name}, nothing thrown, no input hangs (seed ${seed + i})`, async () => {
    const r = await fuzzWithDeadline(TARGETS, name, { inputs: 20_000, seed: seed + i, hangMs: 5000 });
    assert.equal(r.inputs, 20_000);
    assert.equal(r.typedErrors, 0, "the queue models throw nothing at all");
  });
}

Deno.test("fuzz with deadline: an input that never returns fails with the target, seed and input index", async () => {
  const err = await fuzzWithDeadline(
    new URL("./hanging_fuzz_target.ts", import.meta.url),
    "hangsOnThirdInput",
    { inputs: 10, seed: 42, hangMs: 300 },
  ).then(() => undefined, (e) => e);
  assert.ok(err instanceof FuzzFailure, `${err}`);
  assert.equal(err.seed, 42);
  assert.equal(err.index, 2);
  assert.match(err.message, /hang/);
});
