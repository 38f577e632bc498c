/**
 * `deno run -A examples/linux-vmm/main.ts`: boot the Linux guest on this machine's KVM with the relay on the
 * kernel's iommufd (selftest mock devices as the host side) or in-process, and print a summary. It needs a KVM that
 * runs Linux guests: inside the test VM (`deno task demo:linux` starts one), not on a kvm_pvm host.
 *
 * Options: `--kernel <bzImage>` (default: the running test kernel's), `--initrd <cpio>` (default: built from
 * tools/kernel/guest-init), `--strict` (iommu.strict=1), `--host kernel|in-process` (default kernel when /dev/iommu
 * opens), `--timeout <s>`, `--json`, `--quiet` (no console echo).
 *
 * @module
 */
import { parseArgs } from "node:util";
import { NativeShim, RelayHost } from "../../mod.ts";
import { buildGuestInitramfs, runningKernelImage } from "./guest.ts";
import { runLinuxVmm } from "./vmm.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    kernel: { type: "string" },
    initrd: { type: "string" },
    strict: { type: "boolean", default: false },
    host: { type: "string" },
    timeout: { type: "string", default: "300" },
    json: { type: "boolean", default: false },
    quiet: { type: "boolean", default: false },
    "verify-hits": { type: "boolean", default: false },
  },
});

using shim = await NativeShim.load();
const kernelPath = values.kernel ?? await runningKernelImage();
if (!kernelPath) {
  console.log("linux-vmm: no guest kernel (pass --kernel, or run inside the test VM: deno task demo:linux)");
  Deno.exit(2);
}
const initrd = values.initrd
  ? await Deno.readFile(values.initrd)
  : await buildGuestInitramfs(await Deno.makeTempDir({ prefix: "linux-vmm-" }));
const probe = shim.open("/dev/iommu");
if (probe >= 0) shim.close(probe);
const onKernel = values.host ? values.host === "kernel" : probe >= 0;
using host = onKernel ? RelayHost.kernel(shim) : RelayHost.inProcess();
console.log(
  `linux-vmm: booting ${kernelPath} (${values.strict ? "strict" : "lazy"} IOMMU), host ${
    onKernel ? "kernel iommufd + selftest mocks" : "in-process"
  }`,
);
const report = runLinuxVmm({
  shim,
  host,
  kernel: await Deno.readFile(kernelPath),
  initrd,
  append: values.strict ? "iommu.strict=1" : "iommu.strict=0",
  timeoutMs: Number(values.timeout) * 1000,
  tableFor: onKernel ? (entry) => ({ format: "selftest", iotlb: entry.firstStagePage }) : undefined,
  verifyHits: values["verify-hits"],
  onConsole: values.quiet ? undefined : (line) => console.log(`  guest| ${line}`),
});
const { console: lines, workload, ...rest } = report;
if (values.json) console.log(JSON.stringify({ ...rest, console: lines.length, doorbells: workload.doorbells.length }));
else {
  console.log(`linux-vmm: ${lines.length} console lines`);
  console.log(JSON.stringify(rest, null, 1));
}
const ok = report.end.kind === "guest-exit" && report.end.status === 0;
console.log(`linux-vmm: end ${JSON.stringify(report.end)}, ${ok ? "ok" : "FAILED"}`);
Deno.exit(ok ? 0 : 1);
