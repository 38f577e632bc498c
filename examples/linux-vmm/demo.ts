/**
 * `deno task demo:linux`: the Linux guest where KVM can run one. This machine kind's own /dev/kvm (kvm_pvm) cannot
 * run a Linux kernel, so this starts the project's test VM (the cached 7.3 test kernel under QEMU TCG with
 * `-cpu max`, whose emulated SVM gives it a working nested `kvm_amd`) and runs examples/linux-vmm/main.ts inside it,
 * on the test kernel's /dev/kvm and /dev/iommu (selftest mocks as the host side). The guest's kernel is that same
 * test kernel; its /init is tools/kernel/guest-init.
 *
 * Options: `--strict`, `--timeout <s>` (whole test VM, default 900), `--quiet`.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { cacheDir, ensureShim } from "../../ffi/build.ts";
import { buildGuestInitramfs } from "./guest.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    strict: { type: "boolean", default: false },
    timeout: { type: "string", default: "900" },
    quiet: { type: "boolean", default: false },
    "verify-hits": { type: "boolean", default: false },
  },
});
const root = new URL("../..", import.meta.url).pathname.replace(/\/$/, "");
const decoder = new TextDecoder();

async function sha(text: string): Promise<string> {
  const d = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  return Array.from(new Uint8Array(d).slice(0, 8), (b) => b.toString(16).padStart(2, "0")).join("");
}

async function cached(name: string, source: string, build: (dir: string) => Promise<void>): Promise<string> {
  const dir = `${cacheDir()}/${name}-${await sha(await Deno.readTextFile(source))}`;
  const done = `${dir}/.done`;
  try {
    await Deno.stat(done);
    return dir;
  } catch { /* build */ }
  await Deno.mkdir(dir, { recursive: true });
  await build(dir);
  await Deno.writeTextFile(done, "");
  return dir;
}

const shim = await ensureShim();
const kernelBuild = await new Deno.Command("bash", {
  args: [`${root}/tools/kernel/build.sh`, "linux-source-7.3/trixie-backports"],
  stdout: "piped",
  stderr: "inherit",
}).output();
if (!kernelBuild.success) throw new Error("building the 7.3 test kernel failed");
const bzImage = decoder.decode(kernelBuild.stdout).trim().split("\n").at(-1)!;
// The test VM's /init: the same program and cache entry as tools/kernel/run.ts.
const vmInit = await cached("initramfs", `${root}/tools/kernel/init.c`, async (dir) => {
  await Deno.mkdir(`${dir}/root`, { recursive: true });
  for (
    const [cmd, args] of [
      ["cc", ["-static", "-O2", "-Wall", "-o", `${dir}/root/init`, `${root}/tools/kernel/init.c`]],
      ["sh", ["-c", `cd '${dir}/root' && find . | cpio -o -H newc --quiet | gzip -9 > '${dir}/initramfs.cpio.gz'`]],
    ] as const
  ) {
    if (!(await new Deno.Command(cmd, { args: [...args] }).output()).success) throw new Error(`${cmd} failed`);
  }
});
const guestDir = await cached("linux-guest", `${root}/tools/kernel/guest-init/init.c`, async (dir) => {
  await Deno.writeFile(`${dir}/initramfs.cpio`, await buildGuestInitramfs(dir));
});

const script = `${root}/target/kernel/linux-guest-demo.sh`;
await Deno.mkdir(`${root}/target/kernel`, { recursive: true });
await Deno.writeTextFile(
  script,
  `#!/bin/sh
export HOME=/run TMPDIR=/run DENO_DIR=/run/deno NO_COLOR=1 DENO_NO_UPDATE_CHECK=1 IOMMU_RELAY_SHIM='${shim}'
cd '${root}'
'${Deno.execPath()}' run --no-lock -A examples/linux-vmm/main.ts --kernel '${bzImage}' --initrd '${guestDir}/initramfs.cpio' \\
  ${values.strict ? "--strict" : ""} ${values.quiet ? "--quiet" : ""} ${values["verify-hits"] ? "--verify-hits" : ""}
`,
);
const args = [
  ...["-accel", "tcg", "-cpu", "max", "-smp", "2", "-m", "2G", "-nodefaults", "-no-user-config", "-display", "none"],
  ...[
    "-serial",
    "stdio",
    "-monitor",
    "none",
    "-no-reboot",
    "-kernel",
    bzImage,
    "-initrd",
    `${vmInit}/initramfs.cpio.gz`,
  ],
  ...["-append", `console=ttyS0 panic=-1 loglevel=4 -- ${script}`],
  ...["-virtfs", "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap"],
];
console.log(`demo:linux: starting the test VM (${bzImage}); the guest runs inside it`);
const start = performance.now();
const child = new Deno.Command("qemu-system-x86_64", { args, stdout: "piped", stderr: "inherit", stdin: "null" })
  .spawn();
const timer = setTimeout(() => {
  console.log(`demo:linux: timeout after ${values.timeout} s, stopping the test VM`);
  child.kill("SIGKILL");
}, Number(values.timeout) * 1000);
let exit: number | undefined;
let pending = "";
for await (const chunk of child.stdout) {
  pending += decoder.decode(chunk, { stream: true });
  const lines = pending.split("\n");
  pending = lines.pop() ?? "";
  for (const raw of lines) {
    const line = raw.replace(/\r$/, "");
    const m = line.match(/IOMMU_RELAY_GUEST_EXIT (\d+)/);
    if (m) exit = Number(m[1]);
    console.log(line);
  }
}
await child.status;
clearTimeout(timer);
console.log(`demo:linux: test VM done in ${((performance.now() - start) / 1000).toFixed(1)} s, exit ${exit ?? "none"}`);
Deno.exit(exit === 0 ? 0 : 1);
