/**
 * `deno task test:kernel`: builds (or takes from the cache) Linux kernels with the iommufd selftest mock,
 * boots each under QEMU (TCG) with the host's root shared read-only over 9p, runs `kernel-suite/` with Deno
 * inside the guest in one process, and reports the counts. The last line is
 * `kernel-suite: N passed, N failed`, which .ci/run adds to its total.
 *
 * Options: `--kernels 7.3,6.12` (default both), `--timeout <seconds per boot>` (600), `--filter <test name>`.
 *
 * The guest sees the checkout and the Deno binary at their host paths. QEMU runs `-machine q35` with an
 * emulated VT-d (`intel-iommu`) and QEMU's `edu` PCI device, which the guest binds to vfio-pci, so VFIO cdev
 * calls have a real device too.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { ensureBuilt, ensureShim } from "../../ffi/build.ts";
import { headerFlags, locateHeaders } from "../uapi_golden.ts";
import { cacheDir } from "../../ffi/build.ts";

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
    kernels: { type: "string", default: "7.3,6.12" },
    timeout: { type: "string", default: "600" },
    filter: { type: "string" },
  },
});
const root = new URL("../..", import.meta.url).pathname.replace(/\/$/, "");
const here = `${root}/tools/kernel`;
const timeoutMs = Number(values.timeout) * 1000;
const decoder = new TextDecoder();

async function run(cmd: string, args: string[], opts: { cwd?: string; quiet?: boolean } = {}): Promise<string> {
  const out = await new Deno.Command(cmd, {
    args,
    cwd: opts.cwd,
    stdout: "piped",
    stderr: opts.quiet ? "piped" : "inherit",
  }).output();
  const text = decoder.decode(out.stdout);
  if (!out.success) {
    throw new Error(`${cmd} ${args.join(" ")} failed${opts.quiet ? `: ${decoder.decode(out.stderr).trim()}` : ""}`);
  }
  return text;
}

async function sha(text: string): Promise<string> {
  const d = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  return Array.from(new Uint8Array(d).slice(0, 8), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** The initramfs: just /init (static), cached by the source's hash. */
async function initramfs(): Promise<string> {
  const source = await Deno.readTextFile(`${here}/init.c`);
  const dir = `${cacheDir()}/initramfs-${await sha(source)}`;
  const image = `${dir}/initramfs.cpio.gz`;
  try {
    await Deno.stat(image);
    return image;
  } catch { /* build it */ }
  await Deno.mkdir(`${dir}/root`, { recursive: true });
  await run("cc", ["-static", "-O2", "-Wall", "-o", `${dir}/root/init`, `${here}/init.c`]);
  await run("sh", ["-c", `cd '${dir}/root' && find . | cpio -o -H newc --quiet | gzip -9 > '${image}.tmp'`]);
  await Deno.rename(`${image}.tmp`, image);
  return image;
}

interface GuestResult {
  passed: number;
  failed: number;
  ignored: number;
  exit: number | undefined;
  summary: boolean;
  log: string;
  seconds: number;
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
    ...(vtd ? ["-machine", "q35", "-device", "intel-iommu,intremap=on", "-device", "edu"] : []),
    "-nodefaults",
    "-no-user-config",
    "-display",
    "none",
    "-serial",
    "stdio",
    "-monitor",
    "none",
    "-no-reboot",
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
  const timer = setTimeout(() => {
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
  await Promise.all([pump(child.stdout), pump(child.stderr), child.status]);
  clearTimeout(timer);
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
  };
}

/** The shell script the VM's /init runs (inside the chroot of the host's root). */
function guestScript(name: string, shim: string, filter: string | undefined, cLoop: string): string {
  const filterArg = filter ? ` --filter '${filter.replace(/'/g, "")}'` : "";
  return `#!/bin/sh
# Generated by tools/kernel/run.ts: runs inside the test VM (root = the host's, read-only; /run is tmpfs).
export HOME=/run TMPDIR=/run DENO_DIR=/run/deno NO_COLOR=1 DENO_NO_UPDATE_CHECK=1
export IOMMU_RELAY_SHIM='${shim}' IOMMU_RELAY_KERNEL_VM='${name}' IOMMU_RELAY_C_INVALIDATE='${cLoop}'
# QEMU's edu device (1234:11e8), where present, goes to vfio-pci so VFIO cdev tests have a device.
for d in /sys/bus/pci/devices/*; do
  [ -e "$d/vendor" ] || continue
  if [ "$(cat "$d/vendor")" = 0x1234 ] && [ "$(cat "$d/device")" = 0x11e8 ]; then
    echo vfio-pci > "$d/driver_override"
    echo "\${d##*/}" > /sys/bus/pci/drivers_probe
  fi
done
echo "guest: $(uname -r), /dev/iommu: $(ls /dev/iommu 2>&1), vfio: $(ls /dev/vfio/devices 2>&1 | tr '\\n' ' ')"
cd '${root}'
'${Deno.execPath()}' test --no-check --no-lock -A${filterArg} kernel-suite/
`;
}

const shim = await ensureShim();
/** The standalone C program the figures report beside the shim's loop (built against the 7.3 headers; "" if not). */
const cLoop = await (async () => {
  try {
    return await ensureBuilt({
      source: new URL("../../bench/hwpt_invalidate_loop.c", import.meta.url),
      flags: ["-O2", "-std=gnu11", "-Wall", "-Werror", ...await headerFlags(await locateHeaders())],
      prefix: "bench",
      file: "hwpt_invalidate_loop",
    });
  } catch (e) {
    console.log(`kernel-run: the standalone C program is not built (${(e as Error).message.split("\n")[0]})`);
    return "";
  }
})();
console.log(`kernel-run: type-checking kernel-suite on the host`);
await run(Deno.execPath(), ["check", "kernel-suite/"], { cwd: root });
const image = await initramfs();
await Deno.mkdir(`${root}/target/kernel`, { recursive: true });

let passed = 0;
let failed = 0;
for (const name of values.kernels.split(",").map((k) => k.trim()).filter(Boolean)) {
  const kernel = KERNELS[name];
  if (!kernel) {
    console.log(`kernel-run: unknown kernel '${name}' (known: ${Object.keys(KERNELS).join(", ")})`);
    failed++;
    continue;
  }
  let bzImage: string;
  try {
    bzImage = (await run("bash", [`${here}/build.sh`, kernel.spec])).trim().split("\n").at(-1)!;
  } catch (e) {
    console.log(`kernel-run: building ${kernel.spec} failed: ${(e as Error).message}`);
    failed++;
    continue;
  }
  for (const [index, plan] of kernel.boots.entries()) {
    if (plan.filter && values.filter && !values.filter.startsWith(plan.filter)) {
      console.log(`kernel-run: ${name} (${plan.label}) skipped: that boot only runs '${plan.filter}' tests`);
      continue;
    }
    const script = `${root}/target/kernel/guest-${name}-${index}.sh`;
    const filter = values.filter ?? plan.filter;
    await Deno.writeTextFile(script, guestScript(name, shim, filter, cLoop));
    console.log(`kernel-run: booting ${name}, ${plan.label} (${bzImage})`);
    const r = await boot(bzImage, image, script, plan.vtd);
    const what = `${name} (${plan.label})`;
    if (!r.summary) {
      console.log(`kernel-run: ${what}: no test summary from the guest (exit ${r.exit ?? "none"}); console tail:`);
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
console.log(`kernel-suite: ${passed} passed, ${failed} failed`);
Deno.exit(failed === 0 && passed > 0 ? 0 : 1);
