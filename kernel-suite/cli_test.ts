// The host CLI on a real VFIO device (QEMU's edu behind the emulated VT-d), run as a user would: a deno subprocess
// granted FFI for the shim and read/write for exactly /dev/iommu and the cdev.
import assert from "node:assert/strict";
import { noKernel, shim } from "./harness.ts";

const CDEV = "/dev/vfio/devices/vfio0";
const cli = new URL("../cli/main.ts", import.meta.url).pathname;
const noCdev = noKernel ?? (shim.open(CDEV) < 0 ? `${CDEV} does not exist in this VM` : undefined);

async function run(args: string[], read: string[] = []): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--no-check",
      "--no-lock",
      "--quiet",
      "--no-prompt",
      `--allow-ffi=${shim.path}`,
      "--allow-env=IOMMU_RELAY_SHIM",
      `--allow-read=${["/dev/iommu", CDEV, ...read].join(",")}`,
      `--allow-write=/dev/iommu,${CDEV}`,
      cli,
      ...args,
    ],
    env: { IOMMU_RELAY_SHIM: shim.path },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const d = new TextDecoder();
  return { code: out.code, stdout: d.decode(out.stdout), stderr: d.decode(out.stderr) };
}

Deno.test({
  name: "vfio: the CLI decodes the VFIO device's VT-d hw-info and probes nesting with least-privilege flags",
  ignore: noCdev !== undefined,
  async fn() {
    const info = await run(["hw-info", CDEV, "--json"]);
    assert.equal(info.code, 0, info.stderr);
    const caps = JSON.parse(info.stdout);
    assert.equal(caps.iommu.kind, "vtd");
    assert.equal(caps.mode, "shadow", "QEMU's VT-d has no ecap.NEST: shadow mode");
    assert.ok(caps.iommu.mgaw >= 39 && caps.iommu.queuedInvalidation);
    const probe = await run(["probe", CDEV, "--json"]);
    assert.equal(probe.code, 0, probe.stderr);
    assert.match(JSON.parse(probe.stdout).nesting, /^unsupported \(EOPNOTSUPP/);
    assert.equal(JSON.parse(probe.stdout).mode, "shadow");
  },
});

Deno.test({
  name: "vfio: `info` with /sys and /dev/vfio readable names the edu function, vfio-pci, its group and the VT-d unit",
  ignore: noCdev !== undefined,
  async fn() {
    const r = await run(["info", "--json"], ["/sys", "/dev/vfio"]);
    assert.equal(r.code, 0, r.stderr);
    const report = JSON.parse(r.stdout);
    assert.equal(report["/dev/iommu"], "present");
    assert.equal(report.host.iommufd, true);
    const edu = report.host.cdevs.find((c: { cdev: string }) => c.cdev === CDEV);
    assert.ok(edu, JSON.stringify(report.host));
    assert.deepEqual([edu.vendor, edu.device, edu.driver], ["0x1234", "0x11e8", "vfio-pci"], "QEMU's edu, on vfio-pci");
    assert.match(edu.pci, /^0000:00:[0-9a-f]{2}\.0$/);
    assert.ok(Number.isInteger(edu.iommuGroup));
    assert.match(edu.iommu, /^dmar\d+$/);
    assert.ok(report.host.iommus.includes(edu.iommu));
    // Without the sysfs grant the same command says so instead of reading it.
    const bare = await run(["info", "--json"]);
    assert.match(JSON.parse(bare.stdout).host, /^not granted/);
  },
});
