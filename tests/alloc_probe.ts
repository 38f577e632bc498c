// Allocation counting for the hot-path tests: V8's scavenges over one run of bench/probes/alloc_probe.ts under a
// 1 MiB young generation, so every ~1 MiB allocated is one more scavenge than the same run without the iterations.
import assert from "node:assert/strict";

/** Scavenges V8 reports for `n` iterations of probe `path` (after `warmUp` more). */
export async function scavenges(path: string, n: number, warmUp = 50_000): Promise<number> {
  const probe = new URL("../bench/probes/alloc_probe.ts", import.meta.url).pathname;
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--quiet",
      "--allow-read",
      "--allow-ffi",
      "--allow-env",
      "--v8-flags=--trace-gc,--max-semi-space-size=1,--min-semi-space-size=1",
      probe,
      path,
      String(n),
      String(warmUp),
    ],
    stdout: "piped",
    stderr: "inherit",
  }).output();
  assert.ok(out.success, `probe ${path} failed`);
  return [...new TextDecoder().decode(out.stdout).matchAll(/Scavenge/g)].length;
}

/**
 * Assert that `n` iterations of `path` allocate (next to) nothing: at 1,000,000 one byte each would be ~1 MiB, one
 * more scavenge; fewer iterations (the kernel VM's emulated CPU) still catch a boxed number (16 B each).
 */
export async function assertAllocatesNothing(path: string, n = 1_000_000, warmUp = 50_000): Promise<void> {
  const base = await scavenges(path, 0, warmUp), run = await scavenges(path, n, warmUp);
  assert.ok(run - base <= 1, `${run - base} scavenges over ${n} iterations of ${path} (base ${base})`);
}
