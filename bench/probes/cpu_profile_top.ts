// Summarize V8 .cpuprofile files (deno run --cpu-prof): the functions with the most self time, with their share of
// the samples. Usage: deno run --allow-read bench/probes/cpu_profile_top.ts <file.cpuprofile>... [--top N]
interface Node {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
}
const args = Deno.args.filter((a) => !a.startsWith("--top"));
const topAt = Deno.args.findIndex((a) => a.startsWith("--top"));
const top = topAt >= 0 ? Number(Deno.args[topAt].split("=")[1] ?? 20) : 20;
const self = new Map<string, number>();
let total = 0;
for (const file of args) {
  const profile = JSON.parse(await Deno.readTextFile(file)) as { nodes: Node[]; samples: number[] };
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  for (const id of profile.samples) {
    const f = byId.get(id)!.callFrame;
    const where = f.url ? `${f.url.replace(/^.*\/(lib|bench|ffi)\//, "$1/")}:${f.lineNumber + 1}` : "";
    const key = `${f.functionName || "(anonymous)"} ${where}`.trim();
    self.set(key, (self.get(key) ?? 0) + 1);
    total++;
  }
}
console.log(`| function | self samples | share |\n|---|---:|---:|`);
for (const [k, v] of [...self].sort((a, b) => b[1] - a[1]).slice(0, top)) {
  console.log(`| ${k} | ${v} | ${((v / total) * 100).toFixed(1)} % |`);
}
