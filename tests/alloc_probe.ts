// Allocation counting for the hot-path tests: V8's scavenges over one run of bench/probes/alloc_probe.ts under a
// 1 MiB young generation, so every ~1 MiB allocated is one more scavenge than the same run without the iterations.
import assert from "node:assert/strict";

/** Scavenges V8 reports for `n` iterations of probe `path` (after its own warm-up). */
export async function scavenges(path: string, n: number): Promise<number> {
  const probe = new URL("../bench/probes/alloc_probe.ts", import.meta.url).pathname;
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--quiet",
      "--allow-read",
      "--v8-flags=--trace-gc,--max-semi-space-size=1,--min-semi-space-size=1",
      probe,
      path,
      String(n),
    ],
    stdout: "piped",
    stderr: "inherit",
  }).output();
  assert.ok(out.success, `probe ${path} failed`);
  return [...new TextDecoder().decode(out.stdout).matchAll(/Scavenge/g)].length;
}

/** Assert that 1,000,000 iterations of `path` allocate (next to) nothing: one byte each would be ~1 MiB. */
export async function assertAllocatesNothing(path: string): Promise<void> {
  const base = await scavenges(path, 0), run = await scavenges(path, 1_000_000);
  assert.ok(run - base <= 1, `${run - base} scavenges over 1,000,000 iterations of ${path} (base ${base})`);
}
