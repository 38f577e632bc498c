// The layering of lib/ (docs/architecture.md): every import between lib/ folders goes down the written order, and
// no two folders import each other. Read from Deno's own module graph (`deno info --json`), plus the imports of
// doc examples (which the graph does not see but `deno test --doc` runs).
import assert from "node:assert/strict";

/** Bottom to top. A folder imports only folders of a lower rank (folders of one rank are independent). */
export const LAYERS: readonly (readonly string[])[] = [
  ["ffi", "uapi"],
  ["kernel", "memory"],
  ["request"],
  ["compile"],
  ["host"],
  ["shadow"],
  ["relay"],
  ["device"],
  ["frontends"],
  ["plugin"],
  ["broker"],
  ["testing"],
];

const root = new URL("../", import.meta.url);
const rank = new Map(LAYERS.flatMap((folders, r) => folders.map((f) => [f, r] as const)));

/** `lib/relay/queue.ts` → "relay"; `ffi/native.ts` → "ffi"; anything else → undefined. */
function layerOf(path: string): string | undefined {
  if (path.startsWith("ffi/")) return "ffi";
  const m = /^lib\/([^/]+)\//.exec(path);
  return m?.[1];
}

async function libFiles(dir = "lib"): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir(new URL(dir + "/", root))) {
    const p = `${dir}/${e.name}`;
    if (e.isDirectory) out.push(...await libFiles(p));
    else if (e.name.endsWith(".ts")) out.push(p);
  }
  return out.sort();
}

/** Every edge (from → to) between the checkout's modules under lib/ and ffi/, as Deno resolves them. */
async function graphEdges(files: string[]): Promise<[string, string][]> {
  const entry = await Deno.makeTempFile({ suffix: ".ts" });
  try {
    await Deno.writeTextFile(entry, files.map((f) => `import ${JSON.stringify(new URL(f, root).href)};`).join("\n"));
    const out = await new Deno.Command(Deno.execPath(), { args: ["info", "--json", entry], stdout: "piped" }).output();
    assert.ok(out.success, "deno info --json failed");
    const graph = JSON.parse(new TextDecoder().decode(out.stdout)) as {
      modules: { specifier: string; dependencies?: { code?: { specifier: string } }[] }[];
    };
    const rel = (s: string) => s.startsWith(root.href) ? s.slice(root.href.length) : undefined;
    const edges: [string, string][] = [];
    for (const m of graph.modules) {
      const from = rel(m.specifier);
      if (!from) continue;
      for (const d of m.dependencies ?? []) {
        const to = d.code ? rel(d.code.specifier) : undefined;
        if (to) edges.push([from, to]);
      }
    }
    return edges;
  } finally {
    await Deno.remove(entry);
  }
}

/** Imports written in doc examples (`from "./x.ts"` inside comments). */
async function docEdges(files: string[]): Promise<[string, string][]> {
  const edges: [string, string][] = [];
  for (const f of files) {
    const text = await Deno.readTextFile(new URL(f, root));
    for (const m of text.matchAll(/^\s*\*\s*import[^"]*"(\.\.?\/[^"]+)"/gm)) {
      edges.push([f, new URL(m[1], new URL(f, root)).href.slice(root.href.length)]);
    }
  }
  return edges;
}

/** The edges that break the written order. */
export function violations(edges: [string, string][]): string[] {
  const bad: string[] = [];
  for (const [from, to] of edges) {
    const a = layerOf(from), b = layerOf(to);
    if (a === undefined || b === undefined || a === b) continue;
    const ra = rank.get(a), rb = rank.get(b);
    if (ra === undefined) bad.push(`${from}: folder lib/${a} is not in docs/architecture.md's order`);
    else if (rb === undefined) bad.push(`${to}: folder lib/${b} is not in docs/architecture.md's order`);
    else if (rb >= ra) bad.push(`${from} → ${to} (${a} may not import ${b})`);
  }
  return bad;
}

Deno.test("layers: the rule itself refuses an upward or sideways import and a cycle", () => {
  assert.deepEqual(violations([["lib/relay/queue.ts", "lib/host/model.ts"]]), []);
  assert.equal(violations([["lib/compile/vtd.ts", "lib/relay/queue.ts"]]).length, 1);
  assert.equal(violations([["ffi/native.ts", "lib/uapi/mod.ts"]]).length, 1, "ffi and uapi are independent");
  assert.equal(violations([["lib/a/x.ts", "lib/b/y.ts"], ["lib/b/y.ts", "lib/a/x.ts"]]).length, 2);
});

Deno.test("layers: lib/ and ffi/ import only down the order of docs/architecture.md (module graph)", async () => {
  const files = [...await libFiles("lib"), ...(await libFiles("ffi"))];
  const edges = await graphEdges(files);
  assert.ok(edges.length > 100, `the graph has edges (${edges.length})`);
  assert.deepEqual(violations(edges), []);
});

Deno.test("layers: doc examples import only down the order too", async () => {
  const files = [...await libFiles("lib"), ...(await libFiles("ffi"))];
  const edges = await docEdges(files);
  assert.ok(edges.length > 20, `doc examples import modules (${edges.length})`);
  assert.deepEqual(violations(edges), []);
});

Deno.test("layers: the written order in docs/architecture.md is this test's order", async () => {
  const doc = await Deno.readTextFile(new URL("docs/architecture.md", root));
  const written = [...doc.matchAll(/^\|\s*(\d+)\s*\|([^|]+)\|/gm)].map((m) =>
    m[2].trim().split(/,\s*/).map((f) => f.replace(/`/g, "").replace(/^lib\//, "").replace(/\/$/, ""))
  );
  assert.deepEqual(written, LAYERS.map((l) => [...l]));
});
