/**
 * `deno task bench`: runs every suite under bench/ in one `deno bench` (each file's own tables print as they run),
 * then prints one table of ratios — each case's mean time over its group's baseline (the C loop, the reused buffer,
 * the allocation-free relay, QEMU's per-descriptor policy…; ungrouped cases with their time only), with the pipeline
 * bench's rows against its C twin (bench/pipeline.json) — and writes it to bench/ratios.json.
 *
 * @module
 */
const root = new URL("../", import.meta.url);
const flags = ["--allow-read", "--allow-write", "--allow-env", "--allow-run", "--allow-ffi", "--allow-sys=loadavg"];
const out = await new Deno.Command(Deno.execPath(), {
  args: ["bench", "--json", "--v8-flags=--expose-gc", ...flags, ...Deno.args, "bench/"],
  cwd: root.pathname,
  stdout: "piped",
  stderr: "inherit",
}).output();
const text = new TextDecoder().decode(out.stdout);
// deno bench --json prints the suites' own output first, then one JSON document.
const at = text.search(/^\{\n\s+"version"/m);
if (at < 0) {
  console.log(text);
  console.error("bench: no JSON report from deno bench");
  Deno.exit(1);
}
console.log(text.slice(0, at).trimEnd());

interface BenchResult {
  readonly origin: string;
  readonly group: string | null;
  readonly name: string;
  readonly baseline: boolean;
  readonly results: readonly { ok?: { avg: number } }[];
}
const report = JSON.parse(text.slice(at)) as { runtime: string; cpu: string; benches: BenchResult[] };
const rows: { suite: string; group: string; name: string; avgNs: number; ratio: number | null }[] = [];
const groups = new Map<string, BenchResult[]>();
for (const b of report.benches) {
  const key = `${b.origin}\0${b.group ?? b.name}`;
  groups.set(key, [...(groups.get(key) ?? []), b]);
}
for (const benches of groups.values()) {
  const base = benches.find((b) => b.baseline)?.results[0]?.ok?.avg;
  for (const b of benches) {
    const avg = b.results[0]?.ok?.avg;
    if (avg === undefined) continue;
    const suite = b.origin.slice(b.origin.lastIndexOf("/") + 1);
    const ratio = base && b.group ? Number((avg / base).toFixed(2)) : null;
    rows.push({ suite, group: b.group ?? "—", name: b.name, avgNs: Math.round(avg), ratio });
  }
}
// The pipeline bench times its C twin in a process of its own, so its rows come from the file it wrote: each case's
// mean time per doorbell over the C twin's (bench/pipeline_bench.ts).
try {
  const pipeline = JSON.parse(await Deno.readTextFile(new URL("bench/pipeline.json", root))) as {
    rows: { path: string; sink: string; invalidations: number; meanNs: number; ratioMean: number }[];
  };
  for (const r of pipeline.rows) {
    rows.push({
      suite: "pipeline_bench.ts",
      group: `VT-d doorbell, ${r.invalidations} invalidation(s), sink ${r.sink}`,
      name: r.path,
      avgNs: r.meanNs,
      ratio: r.ratioMean,
    });
  }
} catch (e) {
  if (!(e instanceof Deno.errors.NotFound)) throw e;
}
console.log(`\nRatios to each group's baseline (${report.runtime}, ${report.cpu}; mean time per iteration):\n`);
console.log("| suite | group | case | mean | ratio |");
console.log("|---|---|---|---:|---:|");
const time = (ns: number) =>
  ns >= 1e6 ? `${(ns / 1e6).toFixed(2)} ms` : ns >= 1e3 ? `${(ns / 1e3).toFixed(1)} µs` : `${ns} ns`;
for (const r of rows) console.log(`| ${r.suite} | ${r.group} | ${r.name} | ${time(r.avgNs)} | ${r.ratio ?? "—"} |`);
await Deno.writeTextFile(new URL("bench/ratios.json", root), JSON.stringify(rows, null, 2) + "\n");
if (!out.success) Deno.exit(out.code);
