/**
 * `deno task fuzz`: the long fuzz run over the same targets as tests/testing/fuzz_test.ts. Options: `--inputs N` (total,
 * default 50,000,000), `--seed N` (default: the time). Prints one line per target and the totals; exits 1 with the
 * replaying seed and input on the first untyped error or hang.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { fuzz, FuzzFailure } from "../lib/testing/fuzz.ts";
import { fuzzTargets } from "../tests/fuzz_targets.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: { inputs: { type: "string", default: "50000000" }, seed: { type: "string" } },
});
const inputs = Number(values.inputs), seed = Number(values.seed ?? Date.now() % 1_000_000);
if (!Number.isSafeInteger(inputs) || inputs < 1 || !Number.isSafeInteger(seed)) {
  console.error("error: --inputs takes a positive integer, --seed an integer");
  Deno.exit(2);
}
console.log(`fuzz: ${inputs} inputs, seed ${seed}`);
const started = performance.now();
let total = 0, typed = 0;
try {
  for (const [i, { target, weight }] of fuzzTargets().entries()) {
    const r = fuzz(target, { inputs: Math.ceil(inputs * weight), seed: seed + i });
    total += r.inputs;
    typed += r.typedErrors;
    if (weight >= 0.01) {
      console.log(`  ${r.name}: ${r.inputs} inputs, ${r.typedErrors} typed errors, slowest ${r.slowestMs} ms`);
    }
  }
} catch (e) {
  if (e instanceof FuzzFailure) {
    console.error(`fuzz: FAILED: ${e.message}`);
    Deno.exit(1);
  }
  throw e;
}
const rss = Deno.memoryUsage().rss / 2 ** 20;
console.log(
  `fuzz: ${total} inputs, ${typed} typed errors, 0 untyped, ${((performance.now() - started) / 1000).toFixed(0)} s, ` +
    `RSS ${rss.toFixed(0)} MiB`,
);
