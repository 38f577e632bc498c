// The SMMUv3 queue models (CMDQ, EVTQ, PRIQ) and the virtio-iommu request queue under hostile register values,
// queue contents and request buffers, each input under a deadline enforced from outside the Worker running it: an
// input that never returns fails with its seed. IOMMU_RELAY_SEED replays.
import assert from "node:assert/strict";
import { fuzzWithDeadline } from "../../lib/testing/fuzz_deadline.ts";

const TARGETS = new URL("./smmuv3_virtio_fuzz_targets.ts", import.meta.url);
const seed = Number(Deno.env.get("IOMMU_RELAY_SEED") ?? Date.now() % 1_000_000);

const RUNS: [string, number][] = [
  ["smmuCmdqTarget", 1_000],
  ["smmuEvtqTarget", 20_000],
  ["smmuPriqTarget", 20_000],
  ["virtioRequestTarget", 10_000],
];
for (const [i, [name, inputs]] of RUNS.entries()) {
  Deno.test(`fuzz with deadline: ${name}, nothing thrown, invariants hold, no input hangs (seed ${seed + i})`, async () => {
    const r = await fuzzWithDeadline(TARGETS, name, { inputs, seed: seed + i, hangMs: 10_000 });
    assert.equal(r.inputs, inputs);
    assert.equal(r.typedErrors, 0, "the models throw nothing at all");
  });
}
