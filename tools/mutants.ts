/**
 * `deno task mutants`: shows that the test suite notices the bugs it exists to catch. Each mutant is a throwaway
 * copy of the checkout with one deliberate break — a decoder that drops the VT-d address mask, routing that loses
 * PASID-scoped invalidations, a barrier that discards other devices' outcomes (the bug issue 15 found) — and the
 * tests named for it must fail on that copy. A mutant whose tests still pass "survived": the run fails.
 *
 * Prints one line per mutant and ends with `mutants: N killed, N survived`.
 *
 * @module
 */
import { parseArgs } from "node:util";

/** One deliberate break and the tests that must notice it. */
export interface Mutant {
  readonly name: string;
  readonly file: string;
  /** Text replaced (every occurrence; it must occur). */
  readonly from: string;
  readonly to: string;
  readonly tests: readonly string[];
}

/** The mutants RELIABILITY.md describes. */
export const MUTANTS: readonly Mutant[] = [
  {
    name: "decoder: VT-d page-selective invalidations lose their address mask (AM)",
    file: "lib/frontends/vtd/descriptors.ts",
    from: "d.am = field(lo1, 0, 5);",
    to: "d.am = 0;",
    tests: ["tests/frontends/vtd/descriptors_test.ts", "tests/testing/vtd_trace_test.ts"],
  },
  {
    name: "routing: PASID-scoped invalidations reach no target",
    file: "lib/relay/queue.ts",
    from: "? routes.byPasid.get(s.pasid)",
    to: "? undefined",
    tests: ["tests/relay/queue_test.ts", "tests/testing/soak_test.ts"],
  },
  {
    name: "barrier: a binding change drains and discards every owner's outcome",
    file: "lib/relay/queue.ts",
    from: "this.#flush(null, EVERY_OWNER);\n  }\n\n  /** Queue a guest request",
    to: "this.drain();\n  }\n\n  /** Queue a guest request",
    tests: ["tests/relay/queue_test.ts", "tests/testing/soak_test.ts"],
  },
];

const root = new URL("../", import.meta.url).pathname;

async function copyCheckout(to: string): Promise<void> {
  const list = await new Deno.Command("git", { args: ["ls-files", "-co", "--exclude-standard"], cwd: root }).output();
  if (!list.success) throw new Error("git ls-files failed");
  for (const file of new TextDecoder().decode(list.stdout).split("\n").filter(Boolean)) {
    const dir = `${to}/${file}`.replace(/\/[^/]*$/, "");
    await Deno.mkdir(dir, { recursive: true });
    try {
      await Deno.copyFile(`${root}${file}`, `${to}/${file}`);
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e; // deleted in the work tree
    }
  }
}

/** Apply `m` to a fresh copy and run its tests; true when they failed (the mutant was killed). */
async function killed(m: Mutant): Promise<boolean> {
  const dir = await Deno.makeTempDir({ prefix: "iommu-relay-mutant-" });
  try {
    await copyCheckout(dir);
    const path = `${dir}/${m.file}`;
    const text = await Deno.readTextFile(path);
    if (!text.includes(m.from)) throw new Error(`${m.name}: "${m.from}" is not in ${m.file} any more`);
    await Deno.writeTextFile(path, text.replaceAll(m.from, m.to));
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["test", "-A", "--no-check", "--v8-flags=--expose-gc", ...m.tests],
      cwd: dir,
      stdout: "null",
      stderr: "null",
      env: { NO_COLOR: "1" },
    }).output();
    return !out.success;
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

if (import.meta.main) {
  const { values } = parseArgs({ args: Deno.args, options: { only: { type: "string" } } });
  let dead = 0, alive = 0;
  for (const m of MUTANTS) {
    if (values.only && !m.name.includes(values.only)) continue;
    const k = await killed(m);
    console.log(`mutant ${k ? "killed" : "SURVIVED"}: ${m.name} (${m.tests.join(", ")})`);
    if (k) dead++;
    else alive++;
  }
  console.log(`mutants: ${dead} killed, ${alive} survived`);
  if (alive) Deno.exit(1);
}
