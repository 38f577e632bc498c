// The whole VT-d doorbell pipeline, TypeScript against its C twin (issue 19 item 1): bench/vtd_doorbell.c reads the
// same descriptors from guest RAM, decodes and validates them, routes them, batches them with the relay's policy
// (sorted ranges, merge, escalation, origins), compiles VT-d stage-1 entries, makes one ioctl and writes the wait
// status — and, as a second baseline, QEMU's per-descriptor path (one ioctl per invalidation as it is decoded).
// The TypeScript side is the library's own: VtdInvalidationQueue → RelayQueue → a KernelBackend-like sink.
//
// Sinks, the same on both sides: "ioctl" — a real, cheap ioctl the shim allows (KVM_SET_USER_MEMORY_REGION on a VM fd
// with memory_size 0 and the entries' address as userspace_addr: copied in, refused with EINVAL; see
// bench/probes/paths.ts CheapIoctlBackend) — and "none" (no call). Shapes: one invalidation + wait per doorbell, and
// 64 invalidations (64 host entries) + wait per doorbell.
//
// Rounds are interleaved (C twin, QEMU-shaped C, TypeScript, per case and round). Each round reports the mean time
// per doorbell (the median of 3 timed runs of N doorbells) and, in a second pass, every doorbell timed alone (p50,
// p99, p99.9; one clock read included, whose own cost is printed). The table gives the medians over the rounds.
// Writes bench/pipeline.json (tools/bench.ts adds it to the ratio table). Needs /dev/kvm for the ioctl sink.
import { ensureBuilt } from "../ffi/build.ts";
import { NativeShim } from "../ffi/native.ts";
import { RelayQueue } from "../lib/relay/queue.ts";
import type { Backend } from "../lib/host/backend.ts";
import {
  CheapIoctlBackend,
  nullBackend,
  PIPELINE_ENTRIES,
  type PipelineShape,
  vtdPipelineStep,
} from "./probes/paths.ts";

const ROUNDS = Number(Deno.env.get("PIPELINE_ROUNDS") ?? 5);
const N: Record<PipelineShape, number> = { single: 20_000, batch64: 2_000 };
const shim = await NativeShim.load();
const probeKvm = shim.open("/dev/kvm");
const sinks = probeKvm >= 0 ? (["ioctl", "none"] as const) : (["none"] as const);
if (probeKvm >= 0) shim.close(probeKvm);
else console.log(`pipeline: /dev/kvm does not open here (errno ${-probeKvm}): the cheap-ioctl sink is skipped`);

const exe = await ensureBuilt({
  source: new URL("./vtd_doorbell.c", import.meta.url),
  flags: ["-O2", "-Wall", "-Wextra", "-Werror"],
  prefix: "bench",
  file: "vtd_doorbell",
});

interface Sample {
  meanNs: number;
  p50: number;
  p99: number;
  p999: number;
  clockNs: number;
}

async function twin(sink: string, shape: PipelineShape, policy: "relay" | "per-descriptor"): Promise<Sample> {
  const n = policy === "per-descriptor" && shape === "batch64" && sink === "ioctl" ? N.batch64 / 4 : N[shape];
  const out = await new Deno.Command(exe, {
    args: [sink, shape, policy, String(n), "3", "latency"],
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!out.success) throw new Error(`vtd_doorbell: ${new TextDecoder().decode(out.stderr)}`);
  const r = JSON.parse(new TextDecoder().decode(out.stdout));
  return { meanNs: r.medianNs, p50: r.p50Ns, p99: r.p99Ns, p999: r.p999Ns, clockNs: r.clockNs };
}

const median = (xs: number[]) => xs.toSorted((a, b) => a - b)[Math.floor(xs.length / 2)];

/** The TypeScript pipeline of one case, built once (warm across rounds). */
function tsCase(backend: Backend, shape: PipelineShape): () => Sample {
  const q = new RelayQueue(backend);
  q.bind(1, 5, { targetId: 7, format: "vtd-s1" });
  q.bind(1, "rid", { targetId: 7, format: "vtd-s1" });
  const step = vtdPipelineStep(q, shape);
  const n = N[shape];
  for (let i = 0; i < 3 * n; i++) step(); // warm-up: the optimizing compiler
  const lat = new Float64Array(n);
  return () => {
    const means: number[] = [];
    for (let r = 0; r < 3; r++) {
      const t = performance.now();
      for (let i = 0; i < n; i++) step();
      means.push(((performance.now() - t) * 1e6) / n);
    }
    const c0 = performance.now();
    for (let i = 0; i < n; i++) lat[i] = performance.now();
    const clockNs = ((performance.now() - c0) * 1e6) / n;
    for (let i = 0; i < n; i++) {
      const t = performance.now();
      step();
      lat[i] = performance.now() - t;
    }
    lat.sort();
    const at = (p: number) => lat[Math.min(n - 1, Math.floor(n * p))] * 1e6;
    return { meanNs: median(means), p50: at(0.5), p99: at(0.99), p999: at(0.999), clockNs };
  };
}

using cheap = sinks.length === 2 ? new CheapIoctlBackend(shim) : undefined;
const paths = [
  "TypeScript (VtdInvalidationQueue → RelayQueue → sink)",
  "C twin (same policy)",
  "C, QEMU's per-descriptor",
];
const samples = new Map<string, Sample[]>();
const key = (path: string, sink: string, shape: string) => `${path}\0${sink}\0${shape}`;
const tsRuns = new Map<string, () => Sample>();
for (const shape of ["single", "batch64"] as const) {
  for (const sink of sinks) tsRuns.set(`${sink}\0${shape}`, tsCase(sink === "ioctl" ? cheap! : nullBackend, shape));
}
const load = () => Deno.loadavg()[0].toFixed(2);
const loadBefore = load();
for (let r = 0; r < ROUNDS; r++) {
  for (const shape of ["single", "batch64"] as const) {
    for (const sink of sinks) {
      const add = (path: string, s: Sample) => {
        const k = key(path, sink, shape);
        samples.set(k, [...(samples.get(k) ?? []), s]);
      };
      add(paths[1], await twin(sink, shape, "relay"));
      add(paths[0], tsRuns.get(`${sink}\0${shape}`)!());
      add(paths[2], await twin(sink, shape, "per-descriptor"));
    }
  }
}
if (cheap && cheap.unexpected) throw new Error(`the cheap ioctl answered ${cheap.unexpected} times other than EINVAL`);

const rows: Record<string, string | number>[] = [];
console.log(
  `\nVT-d doorbell pipeline, ${ROUNDS} interleaved rounds (load average ${loadBefore} before, ${load()} after); ` +
    "medians over the rounds:\n",
);
console.log(
  "| path | sink | invalidations / doorbell | mean / doorbell | per entry | ratio to twin (mean) | p50 | p99 | p99.9 | ratio to twin (p50) |",
);
console.log("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
const ns = (x: number) => (x >= 10_000 ? `${(x / 1000).toFixed(1)} µs` : `${Math.round(x)} ns`);
for (const shape of ["single", "batch64"] as const) {
  for (const sink of sinks) {
    const twinS = samples.get(key(paths[1], sink, shape))!;
    const twinMean = median(twinS.map((s) => s.meanNs)), twinP50 = median(twinS.map((s) => s.p50));
    for (const path of paths) {
      const s = samples.get(key(path, sink, shape))!;
      const m = (f: (x: Sample) => number) => median(s.map(f));
      const row = {
        path,
        sink,
        invalidations: PIPELINE_ENTRIES[shape],
        meanNs: Math.round(m((x) => x.meanNs)),
        perEntryNs: Math.round(m((x) => x.meanNs) / PIPELINE_ENTRIES[shape]),
        ratioMean: Number((m((x) => x.meanNs) / twinMean).toFixed(2)),
        p50Ns: Math.round(m((x) => x.p50)),
        p99Ns: Math.round(m((x) => x.p99)),
        p999Ns: Math.round(m((x) => x.p999)),
        ratioP50: Number((m((x) => x.p50) / twinP50).toFixed(2)),
        clockNs: Math.round(m((x) => x.clockNs)),
      };
      rows.push(row);
      console.log(
        `| ${path} | ${sink} | ${row.invalidations} | ${ns(row.meanNs)} | ${ns(row.perEntryNs)} | ${row.ratioMean} | ` +
          `${ns(row.p50Ns)} | ${ns(row.p99Ns)} | ${ns(row.p999Ns)} | ${row.ratioP50} |`,
      );
    }
  }
}
const clock = (path: string) => median(rows.filter((r) => r.path === path).map((r) => Number(r.clockNs)));
console.log(
  `\nOne clock read (included once in each latency): ${Math.round(clock(paths[0]))} ns in TypeScript ` +
    `(performance.now), ${Math.round(clock(paths[1]))} ns in C (clock_gettime).`,
);
await Deno.writeTextFile(
  new URL("./pipeline.json", import.meta.url),
  JSON.stringify({ rounds: ROUNDS, loadBefore, loadAfter: load(), rows }, null, 2) + "\n",
);
