// `deno task demo` on the real kernel, as a user runs it: the mini-VMM's command line with the task's own flags,
// `--iommu /dev/iommu` and the selftest mock devices, its KVM guest inside the test VM.
import assert from "node:assert/strict";
import { kernelTest, shim } from "./harness.ts";

const main = new URL("../examples/mini-vmm/main.ts", import.meta.url).pathname;
const deno = JSON.parse(await Deno.readTextFile(new URL("../deno.json", import.meta.url))) as {
  tasks: { demo: { command: string } };
};

kernelTest("demo: `deno task demo --iommu /dev/iommu` runs the KVM guest on the kernel through the selftest format", [
  "selftest-pasid",
], async () => {
  // The task's flags, taken from deno.json so this test follows them.
  const flags = deno.tasks.demo.command.split(" ").filter((a) => a.startsWith("--allow-"));
  assert.deepEqual(flags, ["--allow-read", "--allow-env", "--allow-ffi"]);
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--no-check",
      "--no-lock",
      "--quiet",
      "--no-prompt",
      ...flags,
      main,
      "--iommu",
      "/dev/iommu",
      "--json",
      "--doorbells",
      "40",
    ],
    env: { IOMMU_RELAY_SHIM: shim.path },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stderr = new TextDecoder().decode(out.stderr);
  assert.equal(out.code, 0, stderr);
  const report = JSON.parse(new TextDecoder().decode(out.stdout).trim().split("\n").at(-1)!);
  const kvm = shim.open("/dev/kvm");
  if (kvm >= 0) shim.close(kvm);
  assert.equal(report.vcpu, kvm >= 0 ? "kvm" : "in-process");
  assert.equal(report.end, "halted");
  assert.equal(report.unit.doorbells, 45);
  assert.equal(report.faultRoundTrip.source, "kernel", "one fault round trip through the kernel's fault queue");
  assert.equal(report.faultRoundTrip.answered, 1);
  assert.equal(report.host.failures, 0);
  assert.equal(report.burst.ioctls, 1);
  assert.equal(report.checked, 0, "on the kernel, coverage is checked by the mock (kernel-suite/mini_vmm_test.ts)");
});
