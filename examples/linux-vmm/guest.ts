/**
 * The guest's files: its kernel (the 7.x test kernel, which carries virtio-blk and the intel-iommu driver — see
 * tools/kernel/config-7.x.fragment) and its initramfs (tools/kernel/guest-init/init.c, built static and packed as
 * an uncompressed newc cpio, which the kernel unpacks without a decompressor).
 *
 * @module
 */

const here = new URL(".", import.meta.url).pathname;
const source = `${here}../../tools/kernel/guest-init/init.c`;

/** A newc cpio archive of `files` (path → mode and bytes), with the trailer. */
export function cpioNewc(files: readonly { path: string; mode: number; bytes: Uint8Array }[]): Uint8Array {
  const enc = new TextEncoder();
  const parts: Uint8Array[] = [];
  let size = 0;
  const push = (b: Uint8Array) => {
    parts.push(b);
    size += b.length;
    const pad = (4 - (size % 4)) % 4;
    if (pad) {
      parts.push(new Uint8Array(pad));
      size += pad;
    }
  };
  const hex = (n: number) => n.toString(16).padStart(8, "0");
  let ino = 1;
  for (const f of [...files, { path: "TRAILER!!!", mode: 0, bytes: new Uint8Array(0) }]) {
    const name = enc.encode(f.path + "\0");
    const header = "070701" + hex(f.path === "TRAILER!!!" ? 0 : ino++) + hex(f.mode) + hex(0) + hex(0) +
      hex(1) + hex(0) + hex(f.bytes.length) + hex(0) + hex(0) + hex(0) + hex(0) + hex(name.length) + hex(0);
    const h = new Uint8Array(header.length + name.length);
    h.set(enc.encode(header), 0);
    h.set(name, header.length);
    push(h);
    if (f.bytes.length) push(f.bytes);
  }
  const out = new Uint8Array(size);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** Compile the guest's /init (static) into `dir` and pack it; returns the initramfs bytes. */
export async function buildGuestInitramfs(dir: string): Promise<Uint8Array> {
  const binary = `${dir}/guest-init`;
  const cc = await new Deno.Command("cc", {
    args: ["-static", "-O2", "-Wall", "-Wextra", "-Werror", "-o", binary, source],
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!cc.success) throw new Error(`cc guest-init: ${new TextDecoder().decode(cc.stderr)}`);
  const init = await Deno.readFile(binary);
  return cpioNewc([
    { path: "dev", mode: 0o040755, bytes: new Uint8Array(0) },
    { path: "init", mode: 0o100755, bytes: init },
  ]);
}

/**
 * The bzImage of the running kernel when it is the test VM's (inside the test VM the host's cache is visible at its
 * host path, next to the shim `$IOMMU_RELAY_SHIM` points at): the one whose version string is /proc/version's.
 */
export async function runningKernelImage(): Promise<string | undefined> {
  const shim = Deno.env.get("IOMMU_RELAY_SHIM");
  if (!shim) return undefined;
  const cache = shim.split("/").slice(0, -2).join("/");
  let running: string;
  try {
    running = (await Deno.readTextFile("/proc/version")).trim();
  } catch {
    return undefined;
  }
  for await (const e of Deno.readDir(cache)) {
    if (!e.isDirectory || !e.name.startsWith("kernel-")) continue;
    const path = `${cache}/${e.name}/bzImage`;
    try {
      const image = await Deno.readFile(path);
      const v = new DataView(image.buffer);
      const at = 0x200 + v.getUint16(0x20e, true);
      const end = image.indexOf(0, at);
      const version = new TextDecoder().decode(image.subarray(at, end));
      // "7.3.4 (builder) #1 SMP <date>" against "Linux version 7.3.4 (builder) (compiler) #1 SMP <date>".
      const build = version.slice(version.indexOf("#"));
      if (
        running.startsWith(`Linux version ${version.split(" ")[0]} `) && build.length > 1 && running.endsWith(build)
      ) {
        return path;
      }
    } catch { /* not readable: not ours */ }
  }
  return undefined;
}
