// The host CLI on a real VFIO device (QEMU's edu behind the emulated VT-d), run as a user would: a deno subprocess
// granted FFI for the shim and read/write for exactly /dev/iommu and the cdev.
import assert from "node:assert/strict";
import { noKernel, shim } from "./harness.ts";

const CDEV = "/dev/vfio/devices/vfio0";
const cli = new URL("../../cli.ts", import.meta.url).pathname;
const noCdev = noKernel ?? (shim.open(CDEV) < 0 ? `${CDEV} does not exist in this VM` : undefined);

async function run(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--no-check",
      "--no-lock",
      "--quiet",
      "--no-prompt",
      `--allow-ffi=${shim.path}`,
      "--allow-env=IOMMU_RELAY_SHIM",
      `--allow-read=/dev/iommu,${CDEV}`,
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
    assert.ok(caps.iommu.mgaw >= 39 && caps.iommu.queuedInvalidation);
    const probe = await run(["probe", CDEV, "--json"]);
    assert.equal(probe.code, 0, probe.stderr);
    assert.match(JSON.parse(probe.stdout).nesting, /^unsupported \(EOPNOTSUPP/);
  },
});
