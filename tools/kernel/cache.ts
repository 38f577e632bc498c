/**
 * The kernel suite's checks of what it needs and of what it caches: which tools are missing, and whether a cached
 * kernel image, initramfs or compiled program is what it claims to be. The checks on bytes are pure (tested in
 * `cache_test.ts`); {@linkcode usable} applies one to a file on disk and deletes a bad entry so it is rebuilt.
 *
 * @module
 */

/** One thing the suite needs: a command on PATH or an absolute path, and the Debian package that provides it. */
export interface Tool {
  /** A command name (looked up on PATH) or an absolute path (must exist). */
  readonly need: string;
  /** The Debian package that provides it. */
  readonly pkg: string;
  /** What the suite uses it for (printed when it is missing). */
  readonly why: string;
}

/**
 * Every tool a whole kernel-suite run needs, host side: fetching and unpacking Debian's kernel sources, building the
 * kernels, the static /init and its initramfs, the C programs, and booting QEMU.
 */
export function suiteTools(multiarch = "x86_64-linux-gnu"): Tool[] {
  return [
    { need: "cc", pkg: "gcc", why: "C compiler (kernel, /init, shim)" },
    { need: "make", pkg: "make", why: "kernel build" },
    { need: "bc", pkg: "bc", why: "kernel build" },
    { need: "bison", pkg: "bison", why: "kernel build" },
    { need: "flex", pkg: "flex", why: "kernel build" },
    { need: "perl", pkg: "perl", why: "kernel build" },
    { need: "/usr/include/libelf.h", pkg: "libelf-dev", why: "kernel build (objtool)" },
    { need: "/usr/include/openssl/ssl.h", pkg: "libssl-dev", why: "kernel build (sign-file, certs)" },
    { need: `/usr/lib/${multiarch}/libc.a`, pkg: "libc6-dev", why: "the static /init" },
    { need: "cpio", pkg: "cpio", why: "initramfs" },
    { need: "xz", pkg: "xz-utils", why: "unpacking the kernel source" },
    { need: "tar", pkg: "tar", why: "unpacking the kernel source" },
    { need: "apt-get", pkg: "apt", why: "fetching Debian's kernel sources" },
    { need: "dpkg-deb", pkg: "dpkg", why: "checking and unpacking .deb files" },
    {
      need: "/usr/share/keyrings/debian-archive-keyring.gpg",
      pkg: "debian-archive-keyring",
      why: "verifying the Debian archive",
    },
    { need: "sha256sum", pkg: "coreutils", why: "cache keys" },
    { need: "qemu-system-x86_64", pkg: "qemu-system-x86", why: "booting the test kernels" },
  ];
}

/**
 * What the arm64 target (`--kernels arm64-7.3`) needs on top of {@linkcode suiteTools}: the cross compiler and the
 * arm64 C library headers (the kernel, the shim), and npm (Deno for arm64 comes from npm). QEMU for aarch64, its
 * UEFI firmware and the guest's userland are fetched into the cache, not installed.
 */
export function arm64Tools(): Tool[] {
  return [
    { need: "aarch64-linux-gnu-gcc", pkg: "gcc-aarch64-linux-gnu", why: "cross-building the arm64 kernel and shim" },
    {
      need: "/usr/aarch64-linux-gnu/include/stdio.h",
      pkg: "libc6-dev-arm64-cross",
      why: "cross-building the arm64 shim",
    },
    { need: "npm", pkg: "npm", why: "fetching Deno for arm64 (@deno/linux-arm64-glibc)" },
  ];
}

/** The tools of `tools` that `has` says are absent, in order. */
export function missingTools(tools: readonly Tool[], has: (need: string) => boolean): Tool[] {
  return tools.filter((t) => !has(t.need));
}

/**
 * The one line that names missing tools and the packages that provide them; `installed` says an install was tried
 * (as root), so the advice is to look at PATH rather than to run as root.
 */
export function missingLine(missing: readonly Tool[], installed = false): string {
  const pkgs = [...new Set(missing.map((t) => t.pkg))].join(" ");
  const what = missing.map((t) => `${t.need} (${t.why})`).join(", ");
  return installed
    ? `still missing after apt-get install ${pkgs}: ${what}; is PATH complete?`
    : `missing: ${what}; install them (Debian: apt-get install ${pkgs}) or run this as root to have them installed`;
}

/** Whether `need` (a command or an absolute path) is there, looking commands up in `path` (a PATH value). */
export function hasTool(need: string, path: string): boolean {
  const exists = (p: string, exec: boolean) => {
    try {
      const st = Deno.statSync(p);
      return exec ? st.isFile && ((st.mode ?? 0o111) & 0o111) !== 0 : true;
    } catch {
      return false;
    }
  };
  if (need.startsWith("/")) return exists(need, false);
  return path.split(":").some((dir) => dir !== "" && exists(`${dir}/${need}`, true));
}

const ascii = (bytes: Uint8Array, at: number, length: number) =>
  String.fromCharCode(...bytes.subarray(at, Math.min(bytes.length, at + length)));

/** Smallest believable bzImage: the suite's tinyconfig-based kernels are a few MB. */
export const MIN_BZIMAGE = 512 * 1024;

/**
 * Why `bytes` is not an x86 bzImage, or `undefined` if it is one: the boot sector signature 0x55AA at 510, the
 * setup header's "HdrS" at 0x202 and a believable size.
 */
export function bzImageProblem(bytes: Uint8Array): string | undefined {
  if (bytes.length < MIN_BZIMAGE) return `${bytes.length} bytes, too small for a kernel`;
  if (bytes[510] !== 0x55 || bytes[511] !== 0xaa) return "no 0x55AA boot signature at 510";
  if (ascii(bytes, 0x202, 4) !== "HdrS") return `no "HdrS" setup header at 0x202`;
  return undefined;
}

/**
 * Why `bytes` is not an arm64 kernel `Image`, or `undefined` if it is one: the Image header's magic "ARM\x64" at
 * 0x38 and a believable size.
 */
export function arm64ImageProblem(bytes: Uint8Array): string | undefined {
  if (bytes.length < MIN_BZIMAGE) return `${bytes.length} bytes, too small for a kernel`;
  if (ascii(bytes, 0x38, 4) !== "ARM\x64") return 'no arm64 Image magic "ARM\\x64" at 0x38';
  return undefined;
}

/** `e_machine` of an AArch64 ELF file. */
export const EM_AARCH64 = 183;

/** Why `bytes` is not a 64-bit little-endian AArch64 ELF file (the cross-built shim, Deno for arm64), or `undefined`. */
export function aarch64ElfProblem(bytes: Uint8Array): string | undefined {
  const elf = elfProblem(bytes);
  if (elf) return elf;
  const machine = bytes[18] | (bytes[19] << 8);
  return machine === EM_AARCH64 ? undefined : `ELF machine ${machine}, not AArch64 (${EM_AARCH64})`;
}

/** Why `bytes` is not an ELF file of the host's kind (64-bit little-endian), or `undefined` if it is one. */
export function elfProblem(bytes: Uint8Array): string | undefined {
  if (bytes.length < 64) return `${bytes.length} bytes, too small for an ELF file`;
  if (bytes[0] !== 0x7f || ascii(bytes, 1, 3) !== "ELF") return "no ELF magic";
  if (bytes[4] !== 2 || bytes[5] !== 1) return "not a 64-bit little-endian ELF file";
  return undefined;
}

/** One member of a newc ("070701") cpio archive. */
export interface CpioEntry {
  readonly name: string;
  readonly mode: number;
  readonly size: number;
  /** Offset of the member's data in the archive. */
  readonly data: number;
}

/** The members of a newc cpio archive up to its trailer; throws with a reason if it is not one. */
export function cpioEntries(bytes: Uint8Array): CpioEntry[] {
  const entries: CpioEntry[] = [];
  let at = 0;
  const align = (n: number) => (n + 3) & ~3;
  for (;;) {
    if (at + 110 > bytes.length) throw new Error(`archive ends at ${bytes.length} bytes without a TRAILER!!! member`);
    const magic = ascii(bytes, at, 6);
    if (magic !== "070701" && magic !== "070702") throw new Error(`no newc cpio header at offset ${at}`);
    const field = (i: number) => {
      const text = ascii(bytes, at + 6 + i * 8, 8);
      if (!/^[0-9a-fA-F]{8}$/.test(text)) throw new Error(`bad cpio header field at offset ${at}`);
      return parseInt(text, 16);
    };
    const mode = field(1);
    const size = field(6);
    const nameSize = field(11);
    if (nameSize < 1) throw new Error(`empty cpio member name at offset ${at}`);
    const name = ascii(bytes, at + 110, nameSize - 1);
    const data = align(at + 110 + nameSize);
    if (data + size > bytes.length) throw new Error(`member ${name} runs past the end of the archive`);
    if (name === "TRAILER!!!") return entries;
    entries.push({ name, mode, size, data });
    at = align(data + size);
  }
}

/** One member for {@linkcode newcArchive}: a regular file (with `data`), a directory or a symlink (`target`). */
export interface NewcMember {
  readonly name: string;
  /** Full st_mode, type bits included (0o100755 a program, 0o40755 a directory, 0o120777 a symlink). */
  readonly mode: number;
  readonly data?: Uint8Array;
  /** A symlink's target (its data in the archive). */
  readonly target?: string;
}

/**
 * A newc ("070701") cpio archive of `members`, with its trailer — what `cpio -o -H newc` writes, and what the kernel
 * unpacks as an initramfs and scans for ACPI table upgrades.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { cpioEntries, newcArchive } from "./cache.ts";
 * const a = newcArchive([{ name: "init", mode: 0o100755, data: new Uint8Array([1, 2, 3]) }]);
 * assert.deepEqual(cpioEntries(a).map((e) => [e.name, e.size]), [["init", 3]]);
 * ```
 */
export function newcArchive(members: readonly NewcMember[]): Uint8Array {
  const encoder = new TextEncoder();
  const parts: Uint8Array[] = [];
  let length = 0;
  const push = (b: Uint8Array) => {
    parts.push(b);
    length += b.length;
    const pad = (4 - (length % 4)) % 4;
    if (pad) {
      parts.push(new Uint8Array(pad));
      length += pad;
    }
  };
  const hex = (n: number) => (n >>> 0).toString(16).padStart(8, "0");
  const all = [...members, { name: "TRAILER!!!", mode: 0 }];
  all.forEach((m: NewcMember, i) => {
    const data = m.target !== undefined ? encoder.encode(m.target) : m.data ?? new Uint8Array(0);
    const name = encoder.encode(m.name);
    const isDir = (m.mode & 0o170000) === 0o040000;
    // ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor, rdevmajor, rdevminor, namesize, check
    const fields = [i + 1, m.mode, 0, 0, isDir ? 2 : 1, 0, data.length, 0, 0, 0, 0, name.length + 1, 0];
    push(new Uint8Array([...encoder.encode(`070701${fields.map(hex).join("")}`), ...name, 0]));
    if (data.length) push(data);
  });
  const out = new Uint8Array(length);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/**
 * Why `bytes` (an uncompressed newc cpio archive) is not a usable initramfs for the test VM, or `undefined`: it must
 * hold an executable regular file `init` that is a static ELF program.
 */
export function initramfsProblem(bytes: Uint8Array): string | undefined {
  let entries: CpioEntry[];
  try {
    entries = cpioEntries(bytes);
  } catch (e) {
    return (e as Error).message;
  }
  const init = entries.find((e) => e.name === "init" || e.name === "./init");
  if (!init) return `no /init in the archive (members: ${entries.map((e) => e.name).join(", ") || "none"})`;
  if ((init.mode & 0o170000) !== 0o100000) return "/init is not a regular file";
  if ((init.mode & 0o111) === 0) return "/init is not executable";
  const elf = elfProblem(bytes.subarray(init.data, init.data + init.size));
  return elf ? `/init: ${elf}` : undefined;
}

/** Whether `bytes` start with the gzip magic (1f 8b, deflate). */
export function isGzip(bytes: Uint8Array): boolean {
  return bytes.length > 18 && bytes[0] === 0x1f && bytes[1] === 0x8b && bytes[2] === 8;
}

async function streamBytes(stream: ReadableStream<Uint8Array>): Promise<Uint8Array> {
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

/** gzip `bytes`. */
export function gzip(bytes: Uint8Array): Promise<Uint8Array> {
  return streamBytes(new Blob([bytes as Uint8Array<ArrayBuffer>]).stream().pipeThrough(new CompressionStream("gzip")));
}

/** gunzip `bytes`. */
export function gunzip(bytes: Uint8Array): Promise<Uint8Array> {
  return streamBytes(
    new Blob([bytes as Uint8Array<ArrayBuffer>]).stream().pipeThrough(new DecompressionStream("gzip")),
  );
}

/** Why a gzip-compressed initramfs is unusable, or `undefined`. */
export async function gzipInitramfsProblem(bytes: Uint8Array): Promise<string | undefined> {
  if (!isGzip(bytes)) return `${bytes.length} bytes without the gzip magic`;
  let inner: Uint8Array;
  try {
    inner = await gunzip(bytes);
  } catch (e) {
    return `does not decompress: ${(e as Error).message}`;
  }
  return initramfsProblem(inner);
}

/** A check of a cache entry's bytes: why it is bad, or `undefined`. */
export type Check = (bytes: Uint8Array) => string | undefined | Promise<string | undefined>;

/**
 * Whether the cache entry at `path` exists and passes `check`. A bad entry is deleted (with its folder's other
 * files left alone) and one line says so, so the caller rebuilds it; a missing one is just `false`.
 */
export async function usable(path: string, what: string, check: Check, log = console.log): Promise<boolean> {
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
  const problem = await check(bytes);
  if (problem === undefined) return true;
  log(`kernel-run: the cached ${what} ${path} is bad (${problem}); deleting it and building it again`);
  await Deno.remove(path);
  return false;
}

/**
 * Write `bytes` to `path` atomically: to a temporary name beside it, checked with `check`, then renamed into place.
 * Throws (leaving nothing at `path`) if the check fails.
 */
export async function writeChecked(path: string, bytes: Uint8Array, what: string, check: Check): Promise<void> {
  const problem = await check(bytes);
  if (problem !== undefined) throw new Error(`the ${what} just built is bad (${problem}); not caching it`);
  const tmp = `${path}.${Deno.pid}.tmp`;
  await Deno.writeFile(tmp, bytes);
  await Deno.rename(tmp, path);
}

/** QEMU flags every test VM boots with: no default devices or user config, no display, the serial console on stdio,
 * no monitor, and a reboot ends QEMU (the guest's power-off or panic is the end of the run). */
export const HEADLESS_QEMU: readonly string[] = [
  "-nodefaults",
  "-no-user-config",
  "-display",
  "none",
  "-serial",
  "stdio",
  "-monitor",
  "none",
  "-no-reboot",
];
