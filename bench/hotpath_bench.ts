// The hot path's allocations (issue 8: "zero allocations after warm-up"): each probe runs 1,000,000 iterations of
// one path under V8's --trace-gc, and the scavenges between its markers are counted — zero means nothing reached the
// young generation's limit, i.e. (nearly) no allocation; otherwise bytes per iteration are estimated from the
// semi-space size. Printed as a table; the time per iteration is measured by deno bench below.
import { RelayQueue } from "../lib/core/queue.ts";
import type { Backend } from "../lib/backend/backend.ts";

const probe = new URL("./probes/alloc_probe.ts", import.meta.url).pathname;

/** MiB the young generation's scavenges freed in one probe run (V8's --trace-gc: "Scavenge A (..) -> B (..) MB"). */
async function freedMiB(path: string, n: number): Promise<{ mib: number; scavenges: number }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--quiet", "--v8-flags=--trace-gc", probe, path, String(n)],
    stdout: "piped",
    stderr: "null",
  }).output();
  let mib = 0, scavenges = 0;
  for (const m of new TextDecoder().decode(out.stdout).matchAll(/Scavenge ([\d.]+) \([\d.]+\) -> ([\d.]+)/g)) {
    mib += Number(m[1]) - Number(m[2]);
    scavenges++;
  }
  return { mib, scavenges };
}

const N = 1_000_000;
console.log("| hot path, after warm-up | scavenges per 1,000,000 | bytes allocated / iteration (estimate) |");
console.log("|---|---:|---:|");
for (
  const [path, label] of [
    ["encode", "encode iommu_hwpt_invalidate into a reused buffer"],
    ["relay", "relay: submit(invalidate) + submit(sync) + drain, null backend"],
  ] as const
) {
  const base = await freedMiB(path, 0), run = await freedMiB(path, N);
  const bytes = Math.max(0, ((run.mib - base.mib) * 2 ** 20) / N);
  console.log(`| ${label} | ${run.scavenges - base.scavenges} | ${bytes.toFixed(0)} |`);
}

const nullBackend: Backend = {
  invalidate(_t, _f, _e, count, status) {
    status.errno = 0;
    status.handled = count;
  },
};
const q = new RelayQueue(nullBackend);
q.bind(1, 5, { targetId: 7, format: "vtd-s1" });
const inv = {
  op: "invalidate" as const,
  domain: 1,
  scope: { kind: "pasid-range" as const, pasid: 5, firstPage: 0, pages: 1 },
};
Deno.bench({
  name: "relay one invalidation + wait (null backend)",
  fn() {
    q.submit(inv);
    q.submit({ op: "sync" });
    q.drain();
  },
});
