// The TypeScript VT-d doorbell pipeline alone, for profiling (BENCHMARKS.md's profile of the pipeline bench):
//   deno run --allow-read --allow-env --allow-ffi --cpu-prof --cpu-prof-dir=<dir> \
//     bench/probes/pipeline_probe.ts <ioctl|none> <single|batch64> [doorbells]
// then summarize the profile with `deno run --allow-read bench/probes/cpu_profile_top.ts <dir>/*.cpuprofile`.
import { NativeShim } from "../../ffi/native.ts";
import { RelayQueue } from "../../lib/relay/queue.ts";
import { CheapIoctlBackend, nullBackend, type PipelineShape, vtdPipelineStep } from "./paths.ts";

const sink = Deno.args[0] ?? "ioctl";
const shape = (Deno.args[1] ?? "single") as PipelineShape;
const n = Number(Deno.args[2] ?? 1_000_000);
using cheap = sink === "ioctl" ? new CheapIoctlBackend(await NativeShim.load()) : undefined;
const q = new RelayQueue(cheap ?? nullBackend);
q.bind(1, 5, { targetId: 7, format: "vtd-s1" });
q.bind(1, "rid", { targetId: 7, format: "vtd-s1" });
const step = vtdPipelineStep(q, shape);
const t = performance.now();
for (let i = 0; i < n; i++) step();
console.log(`${sink} ${shape}: ${(((performance.now() - t) * 1e6) / n).toFixed(0)} ns per doorbell over ${n}`);
