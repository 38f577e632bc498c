/**
 * The kernel suite's arm64 target (`--kernels arm64-7.3`): the project's SMMUv3 paths against Linux's unmodified
 * arm-smmu-v3 driver, in an arm64 Linux 7.3 booted under `qemu-system-aarch64` (TCG) on `virt` with QEMU's SMMUv3
 * (stage 1 + stage 2) and its `edu` DMA device on vfio-pci. `kernel-suite/arm64/` runs there, with Deno for arm64.
 *
 * What it takes, each cached in the suite's cache (docs/kernel-suite.md):
 * - the arm64 kernel, cross-built from the same `linux-source-7.3` by `build.sh --arch arm64` (config-arm64.fragment);
 * - QEMU 10 for aarch64 from bookworm-backports, and bookworm's UEFI firmware, arm64 glibc and busybox, fetched with
 *   a private apt state and unpacked with `dpkg -x` (tools/debian-fetch.sh): nothing is installed;
 * - Deno for arm64 from npm (`@deno/linux-arm64-glibc`, the version of the Deno running this);
 * - the shim and the edu DMA helper, cross-built with `aarch64-linux-gnu-gcc`;
 * - the IORT upgrade (see iort.ts): QEMU's IORT lacks CANWBS, without which `IOMMU_VIOMMU_ALLOC` is EOPNOTSUPP; a first
 *   boot prints the guest's own IORT, which is upgraded and cached, keyed by QEMU, firmware and machine.
 *
 * A host that cannot fetch or build these (no network, no cross compiler) gets one line and a counted skip; anything
 * that fails after that (a kernel build, a boot, a test) is a failure.
 *
 * @module
 */
import { cacheDir, ensureBuilt, ensureCrossShim } from "../../ffi/build.ts";
import {
  aarch64ElfProblem,
  arm64ImageProblem,
  arm64Tools,
  cpioEntries,
  gunzip,
  gzip,
  hasTool,
  HEADLESS_QEMU,
  missingLine,
  missingTools,
  newcArchive,
  type NewcMember,
  usable,
  writeChecked,
} from "./cache.ts";
import { iortProblem, upgradeIort } from "./iort.ts";

/** The name `--kernels` takes for this target. */
export const ARM64_TARGET = "arm64-7.3";
const KERNEL_SPEC = "linux-source-7.3/trixie-backports";
/** QEMU 10: bookworm's 7.2 emulates a stage-1-only SMMUv3 (no nesting); `virt` ≥ 9.2 makes it nested. */
const QEMU_PACKAGES = ["qemu-system-arm", "qemu-system-common", "qemu-system-data"].map((p) =>
  `${p}/bookworm-backports`
);
const GUEST_PACKAGES = ["libc6", "libgcc-s1", "busybox-static", "qemu-efi-aarch64"];
/** The machine: GICv3 with its ITS (isolated MSIs: without them VFIO_DEVICE_BIND_IOMMUFD is EPERM), SMMUv3, TCG. */
const MACHINE = [
  "-M",
  "virt,iommu=smmuv3,gic-version=3",
  "-accel",
  "tcg",
  "-cpu",
  "cortex-a57",
  "-smp",
  "2",
  "-m",
  "2G",
];
const CROSS = { cc: "aarch64-linux-gnu-gcc", target: "aarch64-unknown-linux-gnu" };
const decoder = new TextDecoder();

/** What the run gives the target. */
export interface Arm64Context {
  /** The checkout. */
  readonly root: string;
  readonly timeoutMs: number;
  readonly filter?: string;
  /** Prepare everything but build the kernel or boot. */
  readonly prepareOnly: boolean;
  /** Install missing tools with tools/require.sh when running as root (false: `--no-install`). */
  readonly install: boolean;
}

/** What the target adds to the suite's counts. */
export interface Arm64Result {
  passed: number;
  failed: number;
  skipped: number;
}

/** The host cannot fetch or build what the target needs: one line, a counted skip. */
class Skip extends Error {}

function oneLine(e: unknown): string {
  const text = e instanceof Error ? e.message : String(e);
  return text.trim().split("\n")[0];
}

async function sha(text: string): Promise<string> {
  const d = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  return Array.from(new Uint8Array(d).slice(0, 8), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Run a command; its stderr is kept and its last lines go into the error of a failure. */
async function run(cmd: string, args: string[], opts: { cwd?: string; env?: Record<string, string> } = {}) {
  let out: Deno.CommandOutput;
  try {
    out = await new Deno.Command(cmd, {
      args,
      cwd: opts.cwd,
      env: opts.env,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    })
      .output();
  } catch (e) {
    throw new Error(`cannot run ${cmd}: ${oneLine(e)}`);
  }
  if (!out.success) {
    const tail = decoder.decode(out.stderr).trim().split("\n").slice(-2).join(" | ");
    throw new Error(`${cmd} ${args.join(" ")} failed (exit ${out.code})${tail ? `: ${tail}` : ""}`);
  }
  return decoder.decode(out.stdout);
}

/** Fetch Debian packages (tools/debian-fetch.sh); package → unpacked folder. */
async function fetchDebs(
  root: string,
  specs: string[],
  arch?: string,
): Promise<Map<string, { version: string; dir: string }>> {
  const args = [`${root}/tools/debian-fetch.sh`, ...(arch ? ["--arch", arch] : []), ...specs];
  const out = await run("bash", args);
  const found = new Map<string, { version: string; dir: string }>();
  for (const line of out.trim().split("\n")) {
    const [pkg, version, dir] = line.split(" ");
    if (pkg && version && dir) found.set(pkg, { version, dir });
  }
  for (const spec of specs) {
    if (!found.has(spec.split("/")[0])) throw new Error(`tools/debian-fetch.sh gave no folder for ${spec}`);
  }
  return found;
}

/** Deno for arm64 from npm, cached as `deno-arm64-<version>/deno`, checked to be an AArch64 ELF file. */
async function denoArm64(cache: string): Promise<string> {
  const version = Deno.version.deno;
  const dir = `${cache}/deno-arm64-${version}`;
  const path = `${dir}/deno`;
  if (await usable(path, "Deno for arm64", aarch64ElfProblem)) return path;
  await Deno.mkdir(dir, { recursive: true });
  const work = await Deno.makeTempDir({ dir, prefix: ".fetch-" });
  try {
    const pkg = `@deno/linux-arm64-glibc@${version}`;
    await run("npm", ["pack", "--silent", "--pack-destination", work, pkg], { cwd: work });
    const tgz = [...Deno.readDirSync(work)].find((e) => e.name.endsWith(".tgz"));
    if (!tgz) throw new Error(`npm pack ${pkg} left no archive`);
    await run("tar", ["-xzf", `${work}/${tgz.name}`, "-C", work]);
    const bytes = await Deno.readFile(`${work}/package/deno`);
    await writeChecked(path, bytes, "Deno for arm64", aarch64ElfProblem);
    await Deno.chmod(path, 0o755);
    console.log(`kernel-run: ${ARM64_TARGET}: fetched ${pkg} (${(bytes.length / 2 ** 20).toFixed(0)} MiB)`);
  } finally {
    await Deno.remove(work, { recursive: true });
  }
  return path;
}

/**
 * The guest's userland, shared read-only over 9p as "armroot": the arm64 glibc and libgcc trees and Deno, hard-linked
 * from their cache entries into one folder (no copy), marked complete only once whole.
 */
async function armRoot(cache: string, trees: string[], deno: string): Promise<string> {
  const dir = `${cache}/arm64-root-${await sha([...trees, deno].join("\n"))}`;
  try {
    await Deno.stat(`${dir}/.complete`);
    return dir;
  } catch { /* built below */ }
  await Deno.remove(dir, { recursive: true }).catch(() => {});
  const tmp = `${dir}.${Deno.pid}.tmp`;
  await Deno.remove(tmp, { recursive: true }).catch(() => {});
  await Deno.mkdir(tmp, { recursive: true });
  for (const tree of trees) {
    await run("cp", ["-a", "--link", `${tree}/.`, `${tmp}/`]);
    await Deno.remove(`${tmp}/.complete`); // each cache entry's file list: not the root's
  }
  await Deno.link(deno, `${tmp}/deno`);
  await Deno.stat(`${tmp}/lib/ld-linux-aarch64.so.1`).catch(() => {
    throw new Error(`the arm64 glibc tree has no lib/ld-linux-aarch64.so.1`);
  });
  await Deno.writeTextFile(`${tmp}/.complete`, [...trees, deno].join("\n") + "\n");
  await Deno.rename(tmp, dir);
  return dir;
}

/**
 * The guest's /init: busybox's shell. It mounts the host's root ("hostroot") at /host and the arm64 userland
 * ("armroot") at /arm — /lib and /usr point there, so Deno's dynamic loader is found — and runs the script named
 * after "--" on the kernel command line; "dump-iort" instead prints the firmware's IORT in base64.
 */
const INIT = `#!/bin/busybox sh
# /init of the kernel suite's arm64 VM (generated by tools/kernel/arm64.ts).
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs -o size=1g tmpfs /run
if [ "$1" = dump-iort ]; then
  echo IOMMU_RELAY_IORT_BEGIN
  base64 /sys/firmware/acpi/tables/IORT
  echo IOMMU_RELAY_IORT_END
  status=$?
else
  opts=trans=virtio,version=9p2000.L,cache=loose,msize=512000
  mount -t 9p -o $opts,ro hostroot /host || echo "init: cannot mount the host's root"
  mount -t 9p -o $opts,ro armroot /arm || echo "init: cannot mount the arm64 userland"
  sh "$1"
  status=$?
fi
echo "IOMMU_RELAY_GUEST_EXIT $status"
sync
poweroff -f
`;

/** Why an arm64 initramfs is unusable, or `undefined`: `init` must be an executable script, `bin/busybox` AArch64. */
export function arm64InitramfsProblem(bytes: Uint8Array): string | undefined {
  let entries;
  try {
    entries = cpioEntries(bytes);
  } catch (e) {
    return (e as Error).message;
  }
  const init = entries.find((e) => e.name === "init");
  if (!init || (init.mode & 0o170111) !== 0o100111) return "no executable /init";
  if (decoder.decode(bytes.subarray(init.data, init.data + 2)) !== "#!") return "/init is not a script";
  const busybox = entries.find((e) => e.name === "bin/busybox");
  if (!busybox) return "no /bin/busybox";
  const elf = aarch64ElfProblem(bytes.subarray(busybox.data, busybox.data + busybox.size));
  return elf ? `/bin/busybox: ${elf}` : undefined;
}

async function gzipArm64InitramfsProblem(bytes: Uint8Array): Promise<string | undefined> {
  try {
    return arm64InitramfsProblem(await gunzip(bytes));
  } catch (e) {
    return `does not decompress: ${oneLine(e)}`;
  }
}

async function initramfs(cache: string, busyboxTree: string): Promise<string> {
  const busybox = await Deno.readFile(`${busyboxTree}/bin/busybox`);
  const dir = `${cache}/initramfs-arm64-${await sha(INIT + busyboxTree)}`;
  const image = `${dir}/initramfs.cpio.gz`;
  if (await usable(image, "arm64 initramfs", gzipArm64InitramfsProblem)) return image;
  const dirs = ["bin", "dev", "proc", "sys", "host", "arm", "run", "tmp"];
  const members: NewcMember[] = [
    ...dirs.map((name) => ({ name, mode: 0o40755 })),
    { name: "lib", mode: 0o120777, target: "/arm/lib" },
    { name: "usr", mode: 0o120777, target: "/arm/usr" },
    { name: "bin/busybox", mode: 0o100755, data: busybox },
    { name: "init", mode: 0o100755, data: new TextEncoder().encode(INIT) },
  ];
  await Deno.mkdir(dir, { recursive: true });
  await writeChecked(image, await gzip(newcArchive(members)), "arm64 initramfs", gzipArm64InitramfsProblem);
  console.log(`kernel-run: ${ARM64_TARGET}: built the initramfs ${image}`);
  return image;
}

/** Why a cached IORT upgrade archive is unusable, or `undefined`. */
export function iortUpgradeProblem(bytes: Uint8Array): string | undefined {
  let entries;
  try {
    entries = cpioEntries(bytes);
  } catch (e) {
    return (e as Error).message;
  }
  const aml = entries.find((e) => e.name === "kernel/firmware/acpi/iort.aml");
  if (!aml) return "no kernel/firmware/acpi/iort.aml";
  return iortProblem(bytes.subarray(aml.data, aml.data + aml.size));
}

interface QemuSetup {
  readonly binary: string;
  readonly env: Record<string, string>;
  readonly version: string;
  readonly firmware: string;
  readonly dataDir: string;
}

function qemuArgs(q: QemuSetup, kernel: string, initrd: string, append: string, armroot: string): string[] {
  const share = (path: string, tag: string) => [
    "-virtfs",
    `local,path=${path},mount_tag=${tag},security_model=none,readonly=on,multidevs=remap`,
  ];
  return [
    ...MACHINE,
    "-bios",
    q.firmware,
    "-L",
    q.dataDir,
    ...HEADLESS_QEMU,
    "-device",
    "edu",
    ...share("/", "hostroot"),
    ...share(armroot, "armroot"),
    "-kernel",
    kernel,
    "-initrd",
    initrd,
    "-append",
    append,
  ];
}

interface Boot {
  log: string;
  seconds: number;
  timedOut: boolean;
  qemu: number;
}

/** Boot QEMU; `echo` prints the console as it comes (with "  | "). A hung QEMU is killed after the timeout. */
async function boot(q: QemuSetup, args: string[], timeoutMs: number, echo: boolean): Promise<Boot> {
  const start = performance.now();
  const child = new Deno.Command(q.binary, { args, env: q.env, stdout: "piped", stderr: "piped", stdin: "null" })
    .spawn();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    console.log(`kernel-run: ${ARM64_TARGET}: timeout after ${timeoutMs / 1000} s, killing QEMU`);
    child.kill("SIGKILL");
  }, timeoutMs);
  let log = "";
  const pump = async (stream: ReadableStream<Uint8Array>) => {
    let pending = "";
    for await (const chunk of stream) {
      const text = decoder.decode(chunk, { stream: true });
      log += text;
      if (!echo) continue;
      pending += text;
      const lines = pending.split("\n");
      pending = lines.pop() ?? "";
      for (const line of lines) console.log(`  | ${line.replace(/\r$/, "")}`);
    }
    if (echo && pending) console.log(`  | ${pending}`);
  };
  let qemu = -1;
  try {
    [, , { code: qemu }] = await Promise.all([pump(child.stdout), pump(child.stderr), child.status]);
  } finally {
    clearTimeout(timer);
  }
  return { log: log.replace(/\r/g, ""), seconds: (performance.now() - start) / 1000, timedOut, qemu };
}

/**
 * The IORT upgrade for this QEMU, firmware and machine: from the cache, else from a first boot that prints the
 * guest's own table, upgraded (iort.ts) and packed as the uncompressed cpio the kernel scans for table upgrades.
 */
async function iortUpgrade(
  cache: string,
  q: QemuSetup,
  kernel: string,
  image: string,
  armroot: string,
  timeoutMs: number,
): Promise<string> {
  const dir = `${cache}/iort-${await sha([q.version, q.firmware, ...MACHINE].join("\n"))}`;
  const path = `${dir}/iort-upgrade.cpio`;
  if (await usable(path, "IORT upgrade", iortUpgradeProblem)) return path;
  console.log(`kernel-run: ${ARM64_TARGET}: reading the guest's IORT (a first boot, once per QEMU and firmware)`);
  const args = qemuArgs(q, kernel, image, "console=ttyAMA0 acpi=force panic=-1 loglevel=4 -- dump-iort", armroot);
  const r = await boot(q, args, Math.min(timeoutMs, 300_000), false);
  const m = r.log.match(/IOMMU_RELAY_IORT_BEGIN\n([\s\S]*?)IOMMU_RELAY_IORT_END/);
  if (!m) {
    console.log(r.log.split("\n").slice(-30).join("\n"));
    throw new Error(
      `the IORT boot printed no table (${r.timedOut ? "timed out" : `QEMU exit ${r.qemu}`}; console tail above)`,
    );
  }
  const original = Uint8Array.from(atob(m[1].replace(/\s+/g, "")), (c) => c.charCodeAt(0));
  const up = upgradeIort(original);
  await Deno.mkdir(dir, { recursive: true });
  await Deno.writeFile(`${dir}/IORT.firmware`, original);
  await Deno.writeFile(`${dir}/IORT.upgraded`, up.table);
  const archive = newcArchive([
    { name: "kernel", mode: 0o40755 },
    { name: "kernel/firmware", mode: 0o40755 },
    { name: "kernel/firmware/acpi", mode: 0o40755 },
    { name: "kernel/firmware/acpi/iort.aml", mode: 0o100644, data: up.table },
  ]);
  await writeChecked(path, archive, "IORT upgrade", iortUpgradeProblem);
  const flags = up.rootComplexes.map((rc) => `0x${rc.flags[0].toString(16)} → 0x${rc.flags[1].toString(16)}`);
  console.log(
    `kernel-run: ${ARM64_TARGET}: IORT ${up.oemId.trim()}/${up.oemTableId.trim()} (${original.length} bytes, ` +
      `${r.seconds.toFixed(1)} s boot): root complex memory access flags ${flags.join(", ")} (CANWBS), ` +
      `OEM revision ${up.oemRevision[0]} → ${up.oemRevision[1]}`,
  );
  return path;
}

/** The script the guest's /init runs; paths are the host's under /host. */
function guestScript(root: string, shim: string, eduDma: string, filter: string | undefined): string {
  const filterArg = filter ? ` --filter '${filter.replace(/'/g, "")}'` : "";
  return `#!/bin/sh
# Generated by tools/kernel/arm64.ts: runs inside the arm64 test VM (the host's root read-only at /host).
export HOME=/run TMPDIR=/run DENO_DIR=/run/deno NO_COLOR=1 DENO_NO_UPDATE_CHECK=1 PATH=/bin
export IOMMU_RELAY_SHIM='/host${shim}' IOMMU_RELAY_KERNEL_VM='${ARM64_TARGET}' IOMMU_RELAY_EDU_DMA='/host${eduDma}'
# QEMU's edu device (1234:11e8) goes to vfio-pci.
for d in /sys/bus/pci/devices/*; do
  if [ "$(cat "$d/vendor")" = 0x1234 ] && [ "$(cat "$d/device")" = 0x11e8 ]; then
    echo vfio-pci > "$d/driver_override"
    echo "\${d##*/}" > /sys/bus/pci/drivers_probe
  fi
done
echo "guest: $(uname -r -m), /dev/iommu: $(ls /dev/iommu 2>&1), vfio: $(ls /dev/vfio/devices 2>&1 | tr '\\n' ' ')"
dmesg | grep -E 'Table Upgrade|arm-smmu-v3.*(features|oas)' | sed 's/^/guest: /'
cd '/host${root}'
/arm/deno test --no-check --no-lock -A${filterArg} kernel-suite/arm64/
`;
}

/** Prepare (and, unless `prepareOnly`, boot) the arm64 target. */
export async function arm64Target(ctx: Arm64Context): Promise<Arm64Result> {
  const started = performance.now();
  const result: Arm64Result = { passed: 0, failed: 0, skipped: 0 };
  try {
    await runTarget(ctx, result);
  } catch (e) {
    if (e instanceof Skip) {
      console.log(`kernel-run: ${ARM64_TARGET} skipped: ${e.message}`);
      result.skipped++;
    } else {
      console.log(`kernel-run: ${ARM64_TARGET}: ${oneLine(e)}`);
      result.failed++;
    }
  }
  const seconds = ((performance.now() - started) / 1000).toFixed(0);
  if (!ctx.prepareOnly || result.failed > 0) {
    console.log(
      `kernel-run: ${ARM64_TARGET} result: ${result.passed} passed, ${result.failed} failed, ${result.skipped} skipped ` +
        `(${seconds} s)`,
    );
  }
  return result;
}

async function runTarget(ctx: Arm64Context, result: Arm64Result): Promise<void> {
  const cache = cacheDir();
  const path = () => Deno.env.get("PATH") ?? "";
  let missing = missingTools(arm64Tools(), (need) => hasTool(need, path()));
  const install = missing.length > 0 && ctx.install && Deno.uid() === 0;
  if (install) {
    const specs = missing.map((t) => `${t.need}:${t.pkg}`);
    await run("bash", [`${ctx.root}/tools/require.sh`, ...specs]).catch(() => {});
    missing = missingTools(arm64Tools(), (need) => hasTool(need, path()));
  }
  if (missing.length > 0) throw new Skip(missingLine(missing, install));

  // Everything fetched: a host without the network (or without these packages) skips, with the reason.
  let qemuDebs, guestDebs, deno;
  try {
    qemuDebs = await fetchDebs(ctx.root, QEMU_PACKAGES);
    guestDebs = await fetchDebs(ctx.root, GUEST_PACKAGES, "arm64");
    deno = await denoArm64(cache);
  } catch (e) {
    throw new Skip(`cannot fetch QEMU 10, the arm64 userland or Deno for arm64: ${oneLine(e)}`);
  }
  const common = qemuDebs.get("qemu-system-common")!.dir;
  const q: QemuSetup = {
    binary: `${qemuDebs.get("qemu-system-arm")!.dir}/usr/bin/qemu-system-aarch64`,
    // Its own modules, not the system QEMU's (a module of another build refuses to load).
    env: { QEMU_MODULE_DIR: `${common}/usr/lib/x86_64-linux-gnu/qemu` },
    version: "",
    firmware: `${guestDebs.get("qemu-efi-aarch64")!.dir}/usr/share/qemu-efi-aarch64/QEMU_EFI.fd`,
    dataDir: `${qemuDebs.get("qemu-system-data")!.dir}/usr/share/qemu`,
  };
  try {
    const version = (await run(q.binary, ["--version"], { env: q.env })).split("\n")[0];
    const m = version.match(/version (\d+)\.(\d+)/);
    if (!m || Number(m[1]) * 100 + Number(m[2]) < 902) throw new Error(`${version}: nesting needs QEMU 9.2 or later`);
    Object.assign(q, { version });
  } catch (e) {
    throw new Skip(`the fetched QEMU does not run here: ${oneLine(e)}`);
  }

  const shim = await ensureCrossShim(CROSS);
  if (!await usable(shim, "arm64 shim", aarch64ElfProblem)) throw new Error(`the arm64 shim ${shim} is bad`);
  const eduDma = await ensureBuilt({
    source: new URL("../../kernel-suite/arm64/edu_dma.c", import.meta.url),
    flags: ["-O2", "-static", "-Wall", "-Wextra", "-Werror"],
    prefix: "edu-dma-aarch64",
    file: "edu_dma",
    cross: CROSS,
  });
  if (!await usable(eduDma, "edu DMA helper", aarch64ElfProblem)) throw new Error(`the edu helper ${eduDma} is bad`);
  const armroot = await armRoot(cache, [guestDebs.get("libc6")!.dir, guestDebs.get("libgcc-s1")!.dir], deno);
  const image = await initramfs(cache, guestDebs.get("busybox-static")!.dir);

  const kernel = await kernelImage(ctx.root, ctx.prepareOnly);
  if (ctx.prepareOnly) {
    console.log(
      `kernel-run: ${ARM64_TARGET}: ${q.version}; ${kernel ? `cached ${kernel}` : "not cached (a full run builds it)"}`,
    );
    return;
  }
  const upgrade = await iortUpgrade(cache, q, kernel!, image, armroot, ctx.timeoutMs);
  const dir = `${ctx.root}/target/kernel`;
  await Deno.mkdir(dir, { recursive: true });
  // The uncompressed table-upgrade archive first: the kernel scans the start of the initrd for it.
  const initrd = `${dir}/initrd-${ARM64_TARGET}.img`;
  await Deno.writeFile(initrd, new Uint8Array([...await Deno.readFile(upgrade), ...await Deno.readFile(image)]));
  const script = `${dir}/guest-${ARM64_TARGET}.sh`;
  await Deno.writeTextFile(script, guestScript(ctx.root, shim, eduDma, ctx.filter));
  const append = `console=ttyAMA0 acpi=force panic=-1 loglevel=4 -- /host${script}`;
  console.log(`kernel-run: booting ${ARM64_TARGET}, virt + SMMUv3 (nested) + edu, ${q.version} (${kernel})`);
  const r = await boot(q, qemuArgs(q, kernel!, initrd, append, armroot), ctx.timeoutMs, true);
  const summaries = [...r.log.matchAll(/^(?:ok|FAILED) \| (\d+) passed.*?\| (\d+) failed(?: \| (\d+) ignored)?/gm)];
  const last = summaries.at(-1);
  const exit = r.log.match(/IOMMU_RELAY_GUEST_EXIT (\d+)/);
  if (!last) {
    console.log(
      `kernel-run: ${ARM64_TARGET}: no test summary from the guest (${
        r.timedOut
          ? `timed out after ${ctx.timeoutMs / 1000} s`
          : `guest exit ${exit?.[1] ?? "none"}, QEMU exit ${r.qemu}`
      }); console tail:`,
    );
    console.log(r.log.split("\n").slice(-40).join("\n"));
    result.failed++;
    return;
  }
  const [passed, failed, ignored] = [Number(last[1]), Number(last[2]), Number(last[3] ?? 0)];
  console.log(
    `kernel-run: ${ARM64_TARGET} (virt + SMMUv3 + edu): ${passed} passed, ${failed} failed, ${ignored} ignored, ` +
      `guest exit ${exit?.[1]}, ${r.seconds.toFixed(1)} s`,
  );
  result.passed += passed;
  result.failed += failed;
  if (exit?.[1] !== "0" && failed === 0) result.failed++;
  if (passed === 0 && failed === 0) {
    console.log(`kernel-run: ${ARM64_TARGET}: no test ran in the guest: counted as a failure`);
    result.failed++;
  }
}

/** The arm64 kernel from tools/kernel/build.sh, checked; with `cachedOnly`, undefined when it is not built yet. */
async function kernelImage(root: string, cachedOnly: boolean): Promise<string | undefined> {
  for (let attempt = 0; attempt < 2; attempt++) {
    const args = [
      `${root}/tools/kernel/build.sh`,
      ...(cachedOnly ? ["--cached-only"] : []),
      "--arch",
      "arm64",
      KERNEL_SPEC,
    ];
    const out = await new Deno.Command("bash", { args, stdin: "null", stdout: "piped", stderr: "inherit" }).output();
    if (cachedOnly && out.code === 4) return undefined;
    if (!out.success) throw new Error(`tools/kernel/build.sh --arch arm64 ${KERNEL_SPEC} failed (exit ${out.code})`);
    const image = decoder.decode(out.stdout).trim().split("\n").at(-1) ?? "";
    if (await usable(image, "arm64 kernel image", arm64ImageProblem)) return image;
  }
  throw new Error(`tools/kernel/build.sh --arch arm64 gave a bad kernel image twice`);
}
