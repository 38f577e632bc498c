// The per-CI-run fuzz budget: 1,100,000 random and mutated inputs over every guest-facing and uAPI decoder; only
// typed errors may come out, no input may take longer than a second, and memory must stay bounded. IOMMU_RELAY_SEED
// replays; `deno task fuzz` runs the same targets much longer.
import assert from "node:assert/strict";
import { fuzz } from "../../lib/testing/fuzz.ts";
import { fuzzTargets } from "../fuzz_targets.ts";

const BUDGET = 1_100_000;

Deno.test(`fuzz: ${BUDGET.toLocaleString("en")} inputs over every guest-facing and uAPI decoder, typed errors only`, () => {
  const seed = Number(Deno.env.get("IOMMU_RELAY_SEED") ?? Date.now() % 1_000_000);
  console.log(`fuzz: seed ${seed} (IOMMU_RELAY_SEED=${seed} replays)`);
  const rss0 = Deno.memoryUsage().rss;
  let total = 0, typed = 0, slowest = 0;
  for (const [i, { target, weight }] of fuzzTargets().entries()) {
    const r = fuzz(target, { inputs: Math.ceil(BUDGET * weight), seed: seed + i });
    total += r.inputs;
    typed += r.typedErrors;
    slowest = Math.max(slowest, r.slowestMs);
  }
  const grownMb = (Deno.memoryUsage().rss - rss0) / 2 ** 20;
  console.log(`fuzz: ${total} inputs, ${typed} typed errors, slowest ${slowest} ms, RSS +${grownMb.toFixed(0)} MiB`);
  assert.ok(total >= BUDGET);
  assert.ok(grownMb < 512, `memory grew by ${grownMb.toFixed(0)} MiB`);
});
