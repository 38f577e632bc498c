/**
 * Builds the C shim (`ffi/shim.c`) into a per-user cache, keyed by a hash of its source, the target and the
 * compiler flags, so it is rebuilt only when one of them changes.
 *
 * Run ahead of time with `deno task build` (prints the library path); otherwise {@linkcode ensureShim} builds
 * it on first use. The cache is `$IOMMU_RELAY_CACHE`, else `$XDG_CACHE_HOME/iommu-relay`, else
 * `$HOME/.cache/iommu-relay`.
 *
 * @module
 */

/**
 * Compiler flags; part of the cache key. `-z nodelete`: the shim installs a signal handler, arms POSIX timers and
 * registers a thread-exit destructor, so it must stay mapped after the last `NativeShim` closes (a Worker's vCPU
 * thread exiting, or a repeating deadline signal, after dlclose would otherwise jump into unmapped code).
 */
const CFLAGS = ["-O2", "-shared", "-fPIC", "-Wall", "-Wextra", "-Werror", "-fvisibility=hidden", "-Wl,-z,nodelete"];

/** File name of the built library inside its cache folder. */
export const SHIM_FILE = "libiommu_relay_shim.so";

/** Raised when the shim cannot be built; `message` is one line saying what to do. */
export class ShimBuildError extends Error {
  /** Always `"ShimBuildError"`. */
  override name = "ShimBuildError";
}

/**
 * The cache folder for iommu-relay's built artefacts.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { cacheDir } from "./build.ts";
 * assert.ok(cacheDir().endsWith("iommu-relay"));
 * ```
 */
export function cacheDir(): string {
  const explicit = Deno.env.get("IOMMU_RELAY_CACHE");
  if (explicit) return explicit;
  const xdg = Deno.env.get("XDG_CACHE_HOME");
  if (xdg) return `${xdg}/iommu-relay`;
  const home = Deno.env.get("HOME");
  if (!home) throw new ShimBuildError("neither IOMMU_RELAY_CACHE, XDG_CACHE_HOME nor HOME is set");
  return `${home}/.cache/iommu-relay`;
}

async function sha256Hex(text: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** A C source compiled with `cc` into the cache, keyed by its text, the target and the flags. */
export interface CachedBuild {
  /** The C file. */
  readonly source: URL;
  readonly flags: readonly string[];
  /** Cache folder prefix (`<prefix>-<hash>/`) and the output's file name in it. */
  readonly prefix: string;
  readonly file: string;
  /**
   * A cross compiler instead of `$CC`/`cc`, and the target it builds for (part of the cache key in place of this
   * Deno's own target), e.g. `aarch64-linux-gnu-gcc` for `aarch64-unknown-linux-gnu`: the kernel suite's arm64 VM.
   */
  readonly cross?: { readonly cc: string; readonly target: string };
}

/**
 * Where `build`'s output lives (built or not).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { cachedPath } from "./build.ts";
 * const shim = { source: new URL("./shim.c", import.meta.url), flags: ["-O2"], prefix: "demo", file: "x.so" };
 * assert.ok((await cachedPath(shim)).endsWith("/x.so"));
 * ```
 */
export async function cachedPath(build: CachedBuild): Promise<string> {
  const source = await Deno.readTextFile(build.source);
  const target = build.cross?.target ?? Deno.build.target;
  const key = await sha256Hex([source, target, build.flags.join(" ")].join("\0"));
  return `${cacheDir()}/${build.prefix}-${key.slice(0, 16)}/${build.file}`;
}

/**
 * The path of `build`'s output, compiling it with `cc` first if this source has not been built yet. Concurrent
 * callers are safe: the output is written to a temporary name and renamed into place.
 *
 * @example
 * ```ts ignore
 * import { ensureBuilt } from "./build.ts";
 * const exe = await ensureBuilt({ source: new URL("../bench/minivmm.c", import.meta.url), flags: ["-O2", "-pthread"], prefix: "bench", file: "minivmm" });
 * ```
 */
export async function ensureBuilt(build: CachedBuild): Promise<string> {
  const path = await cachedPath(build);
  try {
    await Deno.stat(path);
    return path;
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  const dir = path.slice(0, path.lastIndexOf("/"));
  await Deno.mkdir(dir, { recursive: true });
  const tmp = `${path}.${Deno.pid}.tmp`;
  const source = build.source.pathname;
  const cc = build.cross?.cc ?? Deno.env.get("CC") ?? "cc";
  let out: Deno.CommandOutput;
  try {
    out = await new Deno.Command(cc, { args: [...build.flags, "-o", tmp, source], stderr: "piped" }).output();
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new ShimBuildError(
        `no C compiler '${cc}' found: install one (Debian: apt-get install gcc) or set CC`,
      );
    }
    throw e;
  }
  if (!out.success) {
    const detail = new TextDecoder().decode(out.stderr).trim().split("\n").slice(0, 3).join(" | ");
    throw new ShimBuildError(`compiling ${source} with ${cc} failed: ${detail}`);
  }
  await Deno.rename(tmp, path);
  return path;
}

const SHIM: CachedBuild = {
  source: new URL("./shim.c", import.meta.url),
  flags: CFLAGS,
  prefix: "shim",
  file: SHIM_FILE,
};

/**
 * The shim cross-built for another machine with `cc` (e.g. `aarch64-linux-gnu-gcc` for the kernel suite's arm64 VM),
 * cached like the native one under a key of its own target.
 *
 * @example
 * ```ts ignore
 * import { ensureCrossShim } from "./build.ts";
 * const path = await ensureCrossShim({ cc: "aarch64-linux-gnu-gcc", target: "aarch64-unknown-linux-gnu" });
 * ```
 */
export function ensureCrossShim(cross: { readonly cc: string; readonly target: string }): Promise<string> {
  return ensureBuilt({ ...SHIM, prefix: `shim-${cross.target.split("-")[0]}`, cross });
}

/**
 * Path the shim for this source and machine lives at (built or not).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { shimPath } from "./build.ts";
 * assert.ok((await shimPath()).endsWith(".so"));
 * ```
 */
export function shimPath(): Promise<string> {
  return cachedPath(SHIM);
}

/**
 * Returns the path of the built shim, compiling it with `cc` first if this source has not been built yet.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { ensureShim } from "./build.ts";
 * const path = await ensureShim();
 * assert.ok(path.endsWith("libiommu_relay_shim.so"));
 * ```
 */
export function ensureShim(): Promise<string> {
  return ensureBuilt(SHIM);
}

if (import.meta.main) {
  try {
    console.log(await ensureShim());
  } catch (e) {
    console.error(e instanceof ShimBuildError ? `error: ${e.message}` : e);
    Deno.exit(1);
  }
}
