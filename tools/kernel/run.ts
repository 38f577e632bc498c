/**
 * `deno task test:kernel`: builds (or takes from the cache) Linux kernels with the iommufd selftest mock,
 * boots each under QEMU (TCG) with the host's root shared read-only over 9p, runs `kernel-suite/` with Deno
 * inside the guest in one process, and reports the counts. The last line is always
 * `kernel-suite: N passed, N failed` (`, N skipped` appended when the arm64 target cannot be fetched or built here),
 * which .ci/run adds to its total: a missing tool, a failed build, a QEMU that cannot start or a boot that times out
 * each count as one failure, with one line saying what happened.
 *
 * Options: `--kernels 7.3,6.12,arm64-7.3` (default all three; `arm64-7.3` is the SMMUv3 target of `arm64.ts`),
 * `--timeout <seconds per boot>` (600), `--filter <test name>`,
 * `--prepare-only` (check the tools, fetch the sources, build the initramfs and the C programs, report which kernels
 * are cached, and stop before building or booting a kernel), `--no-install` (name missing tools instead of installing
 * them, even as root).
 *
 * Before anything is built, every tool the run needs is checked ({@linkcode suiteTools}); as root, missing ones are
 * installed with `tools/require.sh`. Every cache entry is written under a temporary name, checked, and renamed into
 * place, and checked again before use; a bad one is deleted and rebuilt (see `cache.ts` and docs/kernel-suite.md).
 *
 * The guest sees the checkout and the Deno binary at their host paths. QEMU runs `-machine q35` with an
 * emulated VT-d (`intel-iommu`), QEMU's `edu` PCI device and its NVMe controller (FLR-capable, no drive), which the
 * guest binds to vfio-pci, so VFIO cdev calls — and `VFIO_DEVICE_RESET` — have real devices too.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { cacheDir, ensureBuilt, ensureShim } from "../../ffi/build.ts";
import { headerFlags, locateHeaders } from "../uapi_golden.ts";
import {
  bzImageProblem,
  elfProblem,
  gzip,
  gzipInitramfsProblem,
  hasTool,
  HEADLESS_QEMU,
  initramfsProblem,
  missingLine,
  missingTools,
  suiteTools,
  usable,
  writeChecked,
} from "./cache.ts";
import { ARM64_TARGET, arm64Target } from "./arm64.ts";

/** The folder of VM tests, relative to the checkout. */
const SUITE = "kernel-suite";

/** One boot of a kernel: with the emulated VT-d + edu device or without, and which tests it runs. */
interface Boot {
  readonly vtd: boolean;
  readonly filter?: string;
  readonly label: string;
}

/**
 * The kernels the suite runs on. On 6.12 the selftest mock device cannot attach while a platform IOMMU (the
 * emulated VT-d) is active — MOCK_DOMAIN answers EINVAL there, seen on 6.12.95 — so 6.12 boots twice: without
 * VT-d for the mock tests, with it for the VFIO cdev tests. 7.3 runs everything in one boot.
 */
const KERNELS: Record<string, { spec: string; boots: Boot[] }> = {
  "7.3": { spec: "linux-source-7.3/trixie-backports", boots: [{ vtd: true, label: "q35 + VT-d + edu" }] },
  "6.12": {
    spec: "linux-source-6.12/bookworm-backports",
    boots: [
      { vtd: false, label: "no platform IOMMU (mock tests)" },
      { vtd: true, filter: "vfio:", label: "q35 + VT-d + edu (VFIO tests)" },
    ],
  },
};

const { values } = parseArgs({
  args: Deno.args,
  options: {
    kernels: { type: "string", default: `7.3,6.12,${ARM64_TARGET}` },
    timeout: { type: "string", default: "600" },
    filter: { type: "string" },
    "prepare-only": { type: "boolean", default: false },
    "no-install": { type: "boolean", default: false },
  },
});
const root = new URL("../..", import.meta.url).pathname.replace(/\/$/, "");
const here = `${root}/tools/kernel`;
const timeoutMs = Number(values.timeout) * 1000;
const decoder = new TextDecoder();
const started = performance.now();

/** A failure that ends the run: its message is the one line printed before the result line. */
class Fatal extends Error {}

/** The first line of an error, for the one line a failure prints. */
function oneLine(e: unknown): string {
  const text = e instanceof Error ? e.message : String(e);
  return text.trim().split("\n")[0];
}

async function run(cmd: string, args: string[], opts: { cwd?: string; quiet?: boolean } = {}): Promise<string> {
  let out: Deno.CommandOutput;
  try {
    out = await new Deno.Command(cmd, {
      args,
      cwd: opts.cwd,
      stdin: "null",
      stdout: "piped",
      stderr: opts.quiet ? "piped" : "inherit",
    }).output();
  } catch (e) {
    throw new Error(`cannot run ${cmd}: ${oneLine(e)}`);
  }
  const text = decoder.decode(out.stdout);
  if (!out.success) {
    const detail = opts.quiet ? `: ${decoder.decode(out.stderr).trim().split("\n").slice(-3).join(" | ")}` : "";
    throw new Error(`${cmd} ${args.join(" ")} failed (exit ${out.code})${detail}`);
  }
  return text;
}

async function sha(text: string): Promise<string> {
  const d = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  return Array.from(new Uint8Array(d).slice(0, 8), (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * Every tool the whole run needs, checked before anything is built. As root (unless `--no-install`) missing ones
 * are installed with tools/require.sh and checked again; whatever is still missing ends the run with one line.
 */
async function preflight(): Promise<void> {
  const tools = suiteTools();
  const path = () => Deno.env.get("PATH") ?? "";
  let missing = missingTools(tools, (need) => hasTool(need, path()));
  if (missing.length === 0) return;
  const install = Deno.uid() === 0 && !values["no-install"];
  if (install) {
    const specs = missing.map((t) => `${t.need}:${t.pkg}`);
    // require.sh says on stderr what went wrong; the check below decides.
    await run("bash", [`${root}/tools/require.sh`, ...specs]).catch(() => {});
    missing = missingTools(tools, (need) => hasTool(need, path()));
    if (missing.length === 0) return;
  }
  throw new Fatal(missingLine(missing, install));
}

/** A compiled program from the cache, checked to be an ELF file; a bad one is deleted and built again. */
async function checkedBuild(what: string, build: () => Promise<string>): Promise<string> {
  const path = await build();
  if (await usable(path, what, elfProblem)) return path;
  const again = await build();
  if (!await usable(again, what, elfProblem)) throw new Error(`the ${what} at ${again} is bad after a rebuild`);
  return again;
}

/**
 * The initramfs: just /init (static), cached by the source's hash. cpio's output is checked (it must hold an
 * executable ELF /init) before it is compressed, and the compressed archive is checked again before it is renamed
 * into place and on every later use.
 */
async function initramfs(): Promise<string> {
  const source = await Deno.readTextFile(`${here}/init.c`);
  const dir = `${cacheDir()}/initramfs-${await sha(source)}`;
  const image = `${dir}/initramfs.cpio.gz`;
  if (await usable(image, "initramfs", gzipInitramfsProblem)) return image;
  await Deno.mkdir(dir, { recursive: true });
  const work = await Deno.makeTempDir({ dir, prefix: ".build-" });
  try {
    await run("cc", ["-static", "-O2", "-Wall", "-o", `${work}/init`, `${here}/init.c`], { quiet: true });
    let cpio: Deno.ChildProcess;
    try {
      cpio = new Deno.Command("cpio", {
        args: ["-o", "-H", "newc", "--quiet"],
        cwd: work,
        stdin: "piped",
        stdout: "piped",
        stderr: "piped",
      }).spawn();
    } catch (e) {
      throw new Error(`cannot run cpio: ${oneLine(e)}`);
    }
    const writer = cpio.stdin.getWriter();
    // A cpio that exits at once breaks this pipe; its exit status below says why.
    await writer.write(new TextEncoder().encode("init\n")).then(() => writer.close()).catch(() => {});
    const out = await cpio.output();
    if (!out.success) {
      const detail = decoder.decode(out.stderr).trim().split("\n").slice(-3).join(" | ");
      throw new Error(`cpio failed (exit ${out.code})${detail ? `: ${detail}` : ""}`);
    }
    const problem = initramfsProblem(out.stdout);
    if (problem) throw new Error(`cpio wrote a bad archive (${problem})`);
    await writeChecked(image, await gzip(out.stdout), "initramfs", gzipInitramfsProblem);
  } finally {
    await Deno.remove(work, { recursive: true });
  }
  console.log(`kernel-run: built the initramfs ${image}`);
  return image;
}

/**
 * The kernel image for `spec`, from tools/kernel/build.sh (which builds it unless its cache holds a good one) and
 * checked here again before use. With `cachedOnly`, nothing is built: `undefined` if it is not cached.
 */
async function kernelImage(spec: string, cachedOnly: boolean): Promise<string | undefined> {
  for (let attempt = 0; attempt < 2; attempt++) {
    const args = [`${here}/build.sh`, ...(cachedOnly ? ["--cached-only"] : []), spec];
    const out = await new Deno.Command("bash", { args, stdin: "null", stdout: "piped", stderr: "inherit" }).output();
    if (cachedOnly && out.code === 4) return undefined;
    if (!out.success) throw new Error(`tools/kernel/build.sh ${spec} failed (exit ${out.code})`);
    const bzImage = decoder.decode(out.stdout).trim().split("\n").at(-1) ?? "";
    if (await usable(bzImage, "kernel image", bzImageProblem)) return bzImage;
  }
  throw new Error(`tools/kernel/build.sh ${spec} gave a bad kernel image twice`);
}

interface GuestResult {
  passed: number;
  failed: number;
  ignored: number;
  exit: number | undefined;
  summary: boolean;
  log: string;
  seconds: number;
  timedOut: boolean;
  /** QEMU's own exit status. */
  qemu: number;
}

async function boot(kernel: string, image: string, script: string, vtd: boolean): Promise<GuestResult> {
  const args = [
    "-accel",
    "tcg",
    "-cpu",
    "max",
    "-smp",
    "2",
    "-m",
    "2G",
    // edu has no reset method (no PCIe capability, no PM, on the root bus); QEMU's NVMe controller is a PCIe
    // endpoint with FLR, so VFIO_DEVICE_RESET has a real device too. No drive: no namespace is needed for a reset.
    ...(vtd ? ["-machine", "q35", "-device", "intel-iommu,intremap=on", "-device", "edu"] : []),
    ...(vtd ? ["-device", "nvme,serial=relay-flr"] : []),
    ...HEADLESS_QEMU,
    "-kernel",
    kernel,
    "-initrd",
    image,
    "-append",
    `console=ttyS0 panic=-1 loglevel=4 ${vtd ? "intel_iommu=on" : ""} -- ${script}`,
    "-virtfs",
    "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
  ];
  const start = performance.now();
  const child = new Deno.Command("qemu-system-x86_64", { args, stdout: "piped", stderr: "piped", stdin: "null" })
    .spawn();
  // QEMU can pause instead of exiting on an internal error: the timeout kills it.
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    console.log(`kernel-run: timeout after ${timeoutMs / 1000} s, killing QEMU`);
    child.kill("SIGKILL");
  }, timeoutMs);
  let log = "";
  const pump = async (stream: ReadableStream<Uint8Array>) => {
    let pending = "";
    for await (const chunk of stream) {
      const text = decoder.decode(chunk, { stream: true });
      log += text;
      pending += text;
      const lines = pending.split("\n");
      pending = lines.pop() ?? "";
      for (const line of lines) console.log(`  | ${line.replace(/\r$/, "")}`);
    }
    if (pending) console.log(`  | ${pending}`);
  };
  let qemu = -1;
  try {
    [, , { code: qemu }] = await Promise.all([pump(child.stdout), pump(child.stderr), child.status]);
  } finally {
    clearTimeout(timer);
  }
  const clean = log.replace(/\r/g, "");
  const summaries = [...clean.matchAll(/^(?:ok|FAILED) \| (\d+) passed.*?\| (\d+) failed(?: \| (\d+) ignored)?/gm)];
  const last = summaries.at(-1);
  const exit = clean.match(/IOMMU_RELAY_GUEST_EXIT (\d+)/);
  return {
    passed: last ? Number(last[1]) : 0,
    failed: last ? Number(last[2]) : 0,
    ignored: last?.[3] ? Number(last[3]) : 0,
    exit: exit ? Number(exit[1]) : undefined,
    summary: last !== undefined,
    log: clean,
    seconds: (performance.now() - start) / 1000,
    timedOut,
    qemu,
  };
}

/** The shell script the VM's /init runs (inside the chroot of the host's root). */
function guestScript(name: string, shim: string, filter: string | undefined, cLoop: string, cDoorbell: string): string {
  const filterArg = filter ? ` --filter '${filter.replace(/'/g, "")}'` : "";
  return `#!/bin/sh
# Generated by tools/kernel/run.ts: runs inside the test VM (root = the host's, read-only; /run is tmpfs).
export HOME=/run TMPDIR=/run DENO_DIR=/run/deno NO_COLOR=1 DENO_NO_UPDATE_CHECK=1
export IOMMU_RELAY_SHIM='${shim}' IOMMU_RELAY_KERNEL_VM='${name}' IOMMU_RELAY_C_INVALIDATE='${cLoop}'
export IOMMU_RELAY_C_DOORBELL='${cDoorbell}'
# QEMU's edu device (1234:11e8), where present, goes to vfio-pci so VFIO cdev tests have a device; then QEMU's NVMe
# controller (1b36:0010, FLR-capable, for the reset tests), so that edu stays vfio0.
for id in 0x1234:0x11e8 0x1b36:0x0010; do
  for d in /sys/bus/pci/devices/*; do
    [ -e "$d/vendor" ] || continue
    if [ "$(cat "$d/vendor"):$(cat "$d/device")" = "$id" ]; then
      echo vfio-pci > "$d/driver_override"
      echo "\${d##*/}" > /sys/bus/pci/drivers_probe
    fi
  done
done
echo "guest: $(uname -r), /dev/iommu: $(ls /dev/iommu 2>&1), vfio: $(ls /dev/vfio/devices 2>&1 | tr '\\n' ' ')"
cd '${root}'
'${Deno.execPath()}' test --no-check --no-lock -A${filterArg} ${SUITE}/
`;
}

let passed = 0;
let failed = 0;
/** Targets this host cannot fetch or build (the arm64 one): each said so in one line. */
let skipped = 0;
/** Whether the tools were all there (the run's time is worth a line only then). */
let equipped = false;

async function main(): Promise<void> {
  await preflight();
  equipped = true;
  const image = await initramfs();
  const shim = await checkedBuild("shim", ensureShim);
  console.log(`kernel-run: type-checking ${SUITE} on the host`);
  await run(Deno.execPath(), ["check", `${SUITE}/`], { cwd: root });
  /**
   * The standalone C programs the figures report (built against the 7.3 headers; "" if not): the invalidation loop
   * beside the shim's loop, and the VT-d doorbell's C twin with its selftest sink. Both include
   * bench/selftest_chain.h, whose hash is a flag so that an edit to it rebuilds them (the cache key is the source's).
   */
  const cProgram = async (what: string, file: string) => {
    try {
      const chain = await Deno.readTextFile(new URL("../../bench/selftest_chain.h", import.meta.url));
      const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(chain)));
      const key = Array.from(digest.subarray(0, 8), (b) => b.toString(16).padStart(2, "0")).join("");
      return await checkedBuild(what, async () =>
        ensureBuilt({
          source: new URL(`../../bench/${file}.c`, import.meta.url),
          flags: [
            "-O2",
            "-std=gnu11",
            "-Wall",
            "-Werror",
            `-DSELFTEST_CHAIN_KEY=${key}`,
            ...await headerFlags(await locateHeaders()),
          ],
          prefix: "bench",
          file,
        }));
    } catch (e) {
      console.log(`kernel-run: the ${what} is not built (${oneLine(e)})`);
      return "";
    }
  };
  const cLoop = await cProgram("standalone C program", "hwpt_invalidate_loop");
  const cDoorbell = await cProgram("C twin of the VT-d doorbell", "vtd_doorbell");
  await Deno.mkdir(`${root}/target/kernel`, { recursive: true });

  for (const name of values.kernels.split(",").map((k) => k.trim()).filter(Boolean)) {
    if (name === ARM64_TARGET) {
      const r = await arm64Target({
        root,
        timeoutMs,
        filter: values.filter,
        prepareOnly: values["prepare-only"],
        install: !values["no-install"],
      });
      passed += r.passed;
      failed += r.failed;
      skipped += r.skipped;
      continue;
    }
    const kernel = KERNELS[name];
    if (!kernel) {
      console.log(
        `kernel-run: unknown kernel '${name}' (known: ${[...Object.keys(KERNELS), ARM64_TARGET].join(", ")})`,
      );
      failed++;
      continue;
    }
    let bzImage: string | undefined;
    try {
      bzImage = await kernelImage(kernel.spec, values["prepare-only"]);
    } catch (e) {
      console.log(`kernel-run: building ${kernel.spec} failed: ${oneLine(e)}`);
      failed++;
      continue;
    }
    if (values["prepare-only"]) {
      console.log(`kernel-run: ${name}: ${bzImage ? `cached ${bzImage}` : "not cached (a full run builds it)"}`);
      continue;
    }
    for (const [index, plan] of kernel.boots.entries()) {
      if (plan.filter && values.filter && !values.filter.startsWith(plan.filter)) {
        console.log(`kernel-run: ${name} (${plan.label}) skipped: that boot only runs '${plan.filter}' tests`);
        continue;
      }
      const what = `${name} (${plan.label})`;
      const script = `${root}/target/kernel/guest-${name}-${index}.sh`;
      const filter = values.filter ?? plan.filter;
      await Deno.writeTextFile(script, guestScript(name, shim, filter, cLoop, cDoorbell));
      console.log(`kernel-run: booting ${name}, ${plan.label} (${bzImage})`);
      let r: GuestResult;
      try {
        r = await boot(bzImage!, image, script, plan.vtd);
      } catch (e) {
        console.log(`kernel-run: ${what}: QEMU failed: ${oneLine(e)}`);
        failed++;
        continue;
      }
      if (!r.summary) {
        console.log(
          `kernel-run: ${what}: no test summary from the guest (${
            r.timedOut ? `timed out after ${timeoutMs / 1000} s` : `guest exit ${r.exit ?? "none"}, QEMU exit ${r.qemu}`
          }); console tail:`,
        );
        console.log(r.log.split("\n").slice(-40).join("\n"));
        failed++;
        continue;
      }
      console.log(
        `kernel-run: ${what}: ${r.passed} passed, ${r.failed} failed, ${r.ignored} ignored, guest exit ${r.exit}, ` +
          `${r.seconds.toFixed(1)} s`,
      );
      passed += r.passed;
      failed += r.failed;
      if (r.exit !== 0 && r.failed === 0) failed++;
    }
  }
}

try {
  await main();
} catch (e) {
  console.log(`kernel-run: ${oneLine(e)}`);
  failed++;
}
const seconds = ((performance.now() - started) / 1000).toFixed(0);
if (values["prepare-only"] && failed === 0) {
  console.log(`kernel-run: prepared in ${seconds} s (no kernel built or booted: --prepare-only)`);
  Deno.exit(0);
}
if (equipped) console.log(`kernel-run: ${seconds} s in all`);
console.log(`kernel-suite: ${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ""}`);
Deno.exit(failed === 0 && passed > 0 ? 0 : 1);
