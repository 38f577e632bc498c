// Shadow mode on the recorded caching-mode shape (issue 6): syscalls per (map-side, unmap-side) invalidation pair
// for iommu-relay's area map and the naive policy, printed as a table, and the time per pair of each on the
// in-process IOAS (deno bench). The kernel figure — the pair against a C loop making the same IOAS calls — is in
// kernel-suite/figures_test.ts.
import { cachingModeStream, runShadowPolicy } from "../lib/testing/shadow_policies.ts";

const stream = cachingModeStream({ pairs: 2000, seed: 1 });
const pages = stream.pairs.reduce((n, p) => n + p.gpaPages.length, 0);
console.log(`caching-mode stream: ${stream.pairs.length} DMA pairs, ${pages} pages`);
console.log("| policy | syscalls / pair | mismatched pages | walk faults |");
console.log("|---|---:|---:|---:|");
for (const policy of ["naive", "area-map"] as const) {
  const r = runShadowPolicy(stream, policy);
  console.log(`| ${policy} | ${(r.syscalls / stream.pairs.length).toFixed(2)} | ${r.mismatches} | ${r.faults} |`);
}

const short = cachingModeStream({ pairs: 200, seed: 2 });
for (const policy of ["naive", "area-map"] as const) {
  Deno.bench({
    name: policy,
    group: "shadow: 200 DMA pairs, in-process IOAS",
    baseline: policy === "naive",
    n: 10,
    fn() {
      runShadowPolicy(short, policy);
    },
  });
}
