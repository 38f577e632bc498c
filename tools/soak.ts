/**
 * `deno task soak`: the long soak (default 10,000,000 guest operations) with the invariants of lib/testing/soak.ts
 * checked at every drain. Options: `--ops N`, `--seed N`, `--devices N`. Exits 1 on any violation.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { soak } from "../lib/testing/soak.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    ops: { type: "string", default: "10000000" },
    seed: { type: "string" },
    devices: { type: "string", default: "4" },
  },
});
const ops = Number(values.ops), seed = Number(values.seed ?? Date.now() % 1_000_000), devices = Number(values.devices);
if (![ops, seed, devices].every(Number.isSafeInteger) || ops < 1 || devices < 1) {
  console.error("error: --ops, --seed and --devices take integers");
  Deno.exit(2);
}
const t0 = performance.now();
const r = soak({ ops, seed, devices });
const s = ((performance.now() - t0) / 1000).toFixed(0);
console.log(
  `soak: ${r.ops} operations (seed ${r.seed}, ${devices} devices) in ${s} s: ${r.invalidations} invalidations, ` +
    `${r.waits} waits, ${r.drains} drains, ${r.injectedFailures} injected host failures -> ${r.reportedFailures} ` +
    `requests reported failed, ${r.pagesChecked} pages checked on the host`,
);
console.log(`soak: heap after each tenth (MiB): ${r.heapMiB.join(", ")}`);
if (r.violations.length) {
  console.error(`soak: ${r.violations.length}+ violations:\n  ${r.violations.join("\n  ")}`);
  Deno.exit(1);
}
console.log("soak: every invariant held");
