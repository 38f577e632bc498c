/**
 * `deno task demo`: the mini-VMM. A real-mode KVM guest (one vCPU on a Worker) programs an emulated VT-d
 * invalidation queue — PASID binds through PASID-table entries, a strict-mode NIC's (invalidate, wait) doorbells,
 * an SVA munmap burst, a rebind and a teardown — and iommu-relay relays it to the host: the embedded default is
 * the in-process host; `--iommu /dev/iommu` runs it on the kernel (selftest mock devices by default, or two VFIO
 * cdevs with `--device`). Without /dev/kvm it says so in one line and runs the same guest loop in-process.
 *
 * Options: `--doorbells N` (2000), `--seed N`, `--json`, `--kvm auto|off|require`, `--iommu PATH`,
 * `--device mock|/dev/vfio/devices/vfioN` (twice for two cdevs), `--plugin SPECIFIER`, `--timeout SECONDS`,
 * `--vcpu-thread worker|inline` (inline: exits served on the VMM thread, the one-thread shape).
 * Exit status 1 when a doorbell failed, a page was under-invalidated or the guest did not halt normally.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { NativeShim } from "../../mod.ts";
import { type DeviceSource, loadPlugin, RelayHost } from "../../lib/plugin/plugin.ts";
import { type MiniVmmReport, runMiniVmm } from "./vmm.ts";
import type { TableFor } from "./vtd_unit.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    doorbells: { type: "string", default: "2000" },
    seed: { type: "string", default: "1" },
    json: { type: "boolean", default: false },
    kvm: { type: "string", default: "auto" },
    iommu: { type: "string" },
    device: { type: "string", multiple: true },
    plugin: { type: "string" },
    timeout: { type: "string", default: "120" },
    "vcpu-thread": { type: "string", default: "worker" },
    help: { type: "boolean", default: false },
  },
});
if (values.help) {
  console.log(
    "usage: deno task demo [--doorbells N] [--seed N] [--json] [--kvm auto|off|require] [--iommu /dev/iommu]\n" +
      "                      [--device mock|/dev/vfio/devices/vfioN ...] [--plugin SPECIFIER] [--timeout SECONDS]\n" +
      "                      [--vcpu-thread worker|inline]",
  );
  Deno.exit(0);
}
const doorbells = Number(values.doorbells), seed = Number(values.seed), timeout = Number(values.timeout);
const kvm = values.kvm as "auto" | "off" | "require";
const vcpuThread = values["vcpu-thread"] as "worker" | "inline";
if (
  !Number.isSafeInteger(doorbells) || doorbells < 1 || doorbells > 10_000 || !Number.isSafeInteger(seed) ||
  !(timeout > 0) || !["auto", "off", "require"].includes(kvm) || !["worker", "inline"].includes(vcpuThread)
) {
  console.error(
    "error: --doorbells takes 1..10000, --seed an integer, --timeout seconds, --kvm auto|off|require, " +
      "--vcpu-thread worker|inline",
  );
  Deno.exit(2);
}
const say = (line: string) => values.json || console.log(line);

using shim = await NativeShim.load();
let devices: [DeviceSource, DeviceSource] | undefined;
let tableFor: TableFor | undefined;
const given = values.device ?? [];
if (values.iommu) {
  if (given.length === 0 || given[0] === "mock") {
    // The selftest mock's stage-1 "table" is a value it loads into its IOTLB: the guest's FLPTPTR page number.
    tableFor = (entry) => ({ format: "selftest", iotlb: entry.firstStagePage });
  } else if (given.length === 2) {
    devices = [{ kind: "vfio", path: given[0] }, { kind: "vfio", path: given[1] }];
  } else {
    console.error("error: --device takes `mock` or two VFIO cdev paths (the guest has two devices)");
    Deno.exit(2);
  }
} else if (given.length > 0) {
  console.error("error: --device needs --iommu (the default host is in-process)");
  Deno.exit(2);
}
using host = values.iommu ? RelayHost.kernel(shim, { path: values.iommu }) : RelayHost.inProcess();
const plugin = values.plugin ? await loadPlugin(values.plugin, { permissions: "none" }) : undefined;
say(`host: ${values.iommu ? `kernel iommufd ${values.iommu}` : "in-process"}; plugin ${plugin?.name ?? "iommu-relay"}`);

const step = Math.max(1, Math.floor(doorbells / 4));
let announced = false;
const line = (r: MiniVmmReport, n: number) =>
  `  ${String(n).padStart(6)} doorbells: ${r.unit.descriptors} descriptors, ${r.host.ioctls} host ioctls, ` +
  `${r.host.entriesOut} entries, ${r.host.failures} failures`;
const report = await runMiniVmm({
  shim,
  host,
  doorbells,
  seed,
  kvm,
  devices,
  tableFor,
  plugin,
  vcpuThread,
  timeoutMs: timeout * 1000,
  progress: (index, get) => {
    if (!announced) {
      announced = true;
      const r = get();
      say(
        r.vcpu !== "kvm"
          ? `no KVM here (${r.kvmNote}): running the guest in-process`
          : vcpuThread === "inline"
          ? "vCPU: KVM (inline: exits served on the VMM thread)"
          : "vCPU: KVM (one Worker)",
      );
    }
    if ((index + 1) % step === 0) say(line(get(), index + 1));
  },
});

if (values.json) console.log(JSON.stringify(report));
else {
  const u = report.unit;
  console.log("\n| measure | value |\n|---|---|");
  console.log(
    `| vCPU | ${report.vcpu === "kvm" ? "KVM" : "in-process"} (${report.exits} exits), guest ${
      JSON.stringify(report.end)
    } |`,
  );
  console.log(`| doorbells / VT-d descriptors (256-bit) | ${u.doorbells} / ${u.descriptors} |`);
  console.log(`| PASID binds / unbinds from the guest's PASID table | ${u.binds} / ${u.unbinds} |`);
  console.log(`| guest invalidations -> host ioctls | ${report.host.invalidationsIn} -> ${report.host.ioctls} |`);
  console.log(`| host entries | ${report.host.entriesOut} (coalescing ${report.coalescing}x) |`);
  console.log(`| SVA munmap burst | ${report.burst.descriptors} descriptors -> ${report.burst.ioctls} ioctl |`);
  console.log(
    `| time in the VT-d unit per doorbell | p50 ${report.doorbellUs.p50} µs, p99 ${report.doorbellUs.p99} µs |`,
  );
  const f = report.faultRoundTrip;
  console.log(
    `| I/O page fault round trip (${
      f.source === "kernel" ? "kernel: TRIGGER_IOPF → fault queue" : "stand-in fault"
    }) | ` +
      `${f.delivered} delivered to the PRQ → ${f.answered} answered → host response code ${
        f.hostResponses[0]?.code ?? "none"
      }${f.roundTripUs !== undefined ? ` in ${f.roundTripUs} µs` : ""} |`,
  );
  console.log(
    `| failures / IQE / bad PASID entries | ${report.host.failures} / ${u.errors.length} / ${u.badEntries.length} |`,
  );
  console.log(
    `| under-invalidated pages | ${
      report.checked ? `${report.underInvalidated} of ${report.checked} checked` : "checked by the kernel tests"
    } |`,
  );
  console.log(`| wall time | ${report.seconds} s |`);
}
const ok = report.end === "halted" && report.iqeAt === undefined && report.host.failures === 0 &&
  report.underInvalidated === 0 && report.unit.errors.length === 0;
if (!ok) Deno.exit(1);
