// The host CLI as a user runs it, for the tests under tests/cli/: a deno subprocess of cli/main.ts with exactly the
// permissions a test grants.
import { ensureShim } from "../../ffi/build.ts";

/** The CLI's entry point. */
export const cli: string = new URL("../../cli/main.ts", import.meta.url).pathname;
/** The shim, built if need be. */
export const shim: string = await ensureShim();
/** The grants that let the CLI load the shim. */
export const FFI: string[] = [`--allow-ffi=${shim}`, "--allow-env=IOMMU_RELAY_SHIM"];
/** A VFIO cdev path (absent on most hosts). */
export const CDEV = "/dev/vfio/devices/vfio0";

/** Run `cli/main.ts args...` under deno with `flags` (permissions) and nothing else granted. */
export async function run(flags: string[], args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--no-prompt", "--quiet", ...flags, cli, ...args],
    env: { IOMMU_RELAY_SHIM: shim, NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const d = new TextDecoder();
  return { code: out.code, stdout: d.decode(out.stdout), stderr: d.decode(out.stderr) };
}
