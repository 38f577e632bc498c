/**
 * The CLI's exact-path permission rule: a device node is opened only when Deno's permissions grant read and write
 * for exactly its path, checked with `Deno.permissions` before the shim is called.
 *
 * @module
 */
import { CliError } from "./args.ts";

/**
 * Refuse a device path unless read and write are granted for exactly it — before the shim is touched. Deno counts a
 * grant on a folder (or a bare --allow-read) as a grant on everything under it; that is not a grant on a device
 * node here: a path counts only if a sibling name next to it is not granted too. A symlink is refused as well
 * (its target is not what was granted); the shim refuses one again, whatever this check says.
 */
export async function granted(path: string): Promise<boolean> {
  if (!path.startsWith("/") || path.endsWith("/") || path.includes("\0")) return false;
  const sibling = `${path}.iommu-relay-grant-probe`;
  for (const name of ["read", "write"] as const) {
    if ((await Deno.permissions.query({ name, path })).state !== "granted") return false;
    if ((await Deno.permissions.query({ name, path: sibling })).state === "granted") return false;
  }
  try {
    if (Deno.lstatSync(path).isSymlink) return false;
  } catch {
    // Missing (the shim reports ENOENT), or a node Deno will not stat without -A: the shim's lstat decides.
  }
  return true;
}

/** {@linkcode granted}, or a {@linkcode CliError} (exit code 2) saying which flags would grant `path`. */
export async function requireGrant(path: string): Promise<void> {
  if (!(await granted(path))) {
    throw new CliError(
      `not granted: ${path} (run with --allow-read=${path} --allow-write=${path}: that exact path, not a folder ` +
        `holding it nor a symlink to it)`,
      2,
    );
  }
}
