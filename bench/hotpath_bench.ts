// The hot path's allocations (issue 8: "zero allocations after warm-up"): each probe runs 1,000,000 iterations of
// one path under V8's --trace-gc with a 1 MiB young generation, so every ~1 MiB allocated is a scavenge; the bytes
// the scavenges freed, minus a run without the million, over a million, are the bytes per iteration. Printed as a
// table (tests/relay/outcome_test.ts and tests/frontends/vtd/queue_test.ts assert the zeros); the time per iteration
// is measured by deno bench below.
import { RelayQueue } from "../lib/relay/queue.ts";
import { nullBackend, relayStep } from "./probes/paths.ts";

const probe = new URL("./probes/alloc_probe.ts", import.meta.url).pathname;

/** MiB the young generation's scavenges freed in one probe run (V8's --trace-gc: "Scavenge A (..) -> B (..) MB"). */
async function freedMiB(path: string, n: number): Promise<{ mib: number; scavenges: number }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--quiet",
      "--v8-flags=--trace-gc,--max-semi-space-size=1,--min-semi-space-size=1",
      probe,
      path,
      String(n),
    ],
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
    ["relay", "relay: submit(invalidate) + submit(sync) + drainInto, null backend"],
    ["doorbell", "VT-d doorbell: (PASID-IOTLB, wait) decoded from guest RAM, relayed, status written"],
    ["smmu-cmdq", "SMMUv3 CMDQ_PROD: (TLBI_NH_VA, CMD_SYNC) decoded from guest RAM, relayed"],
    ["shared", "SharedRelay.doorbellInto, combining (the multi-vCPU relay, uncontended)"],
  ] as const
) {
  const base = await freedMiB(path, 0), run = await freedMiB(path, N);
  const bytes = Math.max(0, ((run.mib - base.mib) * 2 ** 20) / N);
  console.log(`| ${label} | ${Math.max(0, run.scavenges - base.scavenges)} | ${bytes.toFixed(0)} |`);
}

const q = new RelayQueue(nullBackend);
q.bind(1, 5, { targetId: 7, format: "vtd-s1" });
const relay = relayStep(q);
const inv = {
  op: "invalidate" as const,
  domain: 1,
  scope: { kind: "pasid-range" as const, pasid: 5, firstPage: 0, pages: 1 },
};
const sync = { op: "sync" as const };
Deno.bench({
  name: "relay one invalidation + wait, drainInto (null backend)",
  group: "relay",
  baseline: true,
  fn: relay,
});
Deno.bench({
  name: "relay one invalidation + wait, drain() with a fresh report (null backend)",
  group: "relay",
  fn() {
    q.submit(inv);
    q.submit(sync);
    q.drain();
  },
});
