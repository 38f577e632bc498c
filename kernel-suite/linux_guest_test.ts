// A real Linux guest on the Deno VMM (examples/linux-vmm), inside the test VM: the test kernel boots again as a KVM
// guest, its intel-iommu driver programs the emulated VT-d (scalable mode, first-stage tables, queued invalidation)
// and its virtio-blk DMA is translated by walking the guest's tables; the invalidations go through iommu-relay's
// VT-d front end and plugins to the kernel's iommufd (selftest mock devices as the host side).
//
// What is checked, per run (strict: iommu.strict=1; lazy: the flush queue):
//   - the guest's /init read and wrote its disk through the device and every byte matched (a lost invalidation
//     leaves a stale translation in the device's IOTLB model, so DMA lands in an old page: wrong bytes);
//   - the driver negotiated VIRTIO_F_ACCESS_PLATFORM and the VMM bound the guest's PASID entry through the plugin;
//   - the independent check: every IOTLB / PASID-IOTLB invalidation the guest's queue bytes asked for was covered
//     by an IOMMU_HWPT_INVALIDATE entry captured as the shim passed it to the kernel (RelayHost's
//     observeHostInvalidations: the right nested HWPT, the binding's mock slot or all, within the kernel's handled
//     count) before that doorbell's waits completed — never by the relay's own counters;
//   - the guest's /init ended the run through the VMM's exit port with status 0;
//   - no DMA fault in the VMM, no DMAR fault line in the guest's log, no queue error, no host failure.
import assert from "node:assert/strict";
import { comparePolicies } from "../lib/testing/mod.ts";
import { definePlugin, type PluginDefinition, RelayHost, type RelayPlugin } from "../mod.ts";
import { buildGuestInitramfs, runningKernelImage } from "../examples/linux-vmm/guest.ts";
import { type LinuxVmmReport, runLinuxVmm } from "../examples/linux-vmm/vmm.ts";
import { kernelTest, noKernel, shim } from "./harness.ts";

const kvmFd = shim.open("/dev/kvm");
if (kvmFd >= 0) shim.close(kvmFd);
const pvm = (() => {
  try {
    Deno.statSync("/sys/module/kvm_pvm");
    return true;
  } catch {
    return false;
  }
})();
const kernelImage = noKernel ? undefined : await runningKernelImage();
// Where KVM cannot run a Linux guest, say why (never a silent pass).
const cannot = noKernel ??
  (kvmFd < 0
    ? "no /dev/kvm in this kernel"
    : pvm
    ? "this /dev/kvm is kvm_pvm, which cannot run a Linux kernel"
    : !kernelImage
    ? "the running test kernel's bzImage was not found next to $IOMMU_RELAY_SHIM (run through deno task test:kernel)"
    : undefined);
if (cannot && !noKernel) console.log(`kernel suite: Linux-guest tests ignored: ${cannot}`);

let initramfs: Uint8Array | undefined;
/** A plugin that loses every ranged invalidation (what the relay must never do): the checks must catch it. */
const lossyPlugin: PluginDefinition = definePlugin({
  name: "lossy-for-test",
  version: "0.0.0",
  create(device) {
    const inner = device; // the device handle the host made: wrapped, not replaced
    let fake = 1 << 30;
    const lossy: RelayPlugin = {
      name: "lossy-for-test",
      get state() {
        return inner.state;
      },
      config: inner.config,
      get telemetry() {
        return inner.telemetry;
      },
      submit(request) {
        if (request.op === "invalidate" && request.scope.kind !== "all" && request.scope.kind !== "pasid") {
          return fake++; // swallowed: never reaches the queue
        }
        return inner.submit(request);
      },
      drain: () => inner.drain(),
      on: (listener) => inner.on(listener),
      [Symbol.dispose]: () => inner[Symbol.dispose](),
    };
    return lossy;
  },
});

async function guestRun(strict: boolean, plugin?: PluginDefinition, timeoutMs = 240_000): Promise<LinuxVmmReport> {
  initramfs ??= await buildGuestInitramfs(await Deno.makeTempDir({ prefix: "linux-guest-" }));
  const kernel = await Deno.readFile(kernelImage!);
  using host = RelayHost.kernel(shim);
  const report = runLinuxVmm({
    shim,
    host,
    kernel,
    initrd: initramfs,
    append: strict ? "iommu.strict=1" : "iommu.strict=0",
    timeoutMs,
    plugin,
    tableFor: (entry) => ({ format: "selftest", iotlb: entry.firstStagePage }),
  });
  const mode = `${strict ? "strict" : "lazy"}${plugin ? `, ${plugin.name}` : ""}`;
  const r = report.result ?? {};
  console.log(
    `linux-guest (${mode}): end ${JSON.stringify(report.end)}, /init after ${report.initSeconds ?? "-"} s, ` +
      `whole run ${report.seconds} s, ${report.exits} exits; guest domain ${r.domain ?? "?"}; guest I/O: ` +
      `${r.requests ?? "?"} requests, ` +
      `${r.read ?? "?"} B read, ${r.written ?? "?"} B written, bad words ${r.bad_words ?? "?"}; device: ` +
      `${report.blk.requests} requests, ${report.blk.interrupts} MSIs; VT-d: ${report.vtd.doorbells} doorbells, ` +
      `${report.vtd.descriptors} descriptors, ${report.vtd.relayed} invalidations relayed in ${report.relay.ioctls} ` +
      `ioctls, ${report.vtd.walks} walks / ${report.vtd.lookups} lookups, doorbell (queue read to waits written, ` +
      `ioctls included) µs p50 ${report.vtd.doorbellUs.p50} p99 ${report.vtd.doorbellUs.p99} p99.9 ` +
      `${report.vtd.doorbellUs.p999} max ${report.vtd.doorbellUs.max}; binds ` +
      `${report.binder.binds}`,
  );
  if (report.end.kind !== "guest-exit") console.log(report.console.slice(-60).join("\n"));
  return report;
}

function checkRun(report: LinuxVmmReport, strict: boolean): void {
  assert.equal(report.result?.domain, strict ? "DMA" : "DMA-FQ", "the guest's IOMMU domain type (strict or lazy)");
  assert.equal(report.end.kind, "guest-exit", `the guest's /init ended the run (${JSON.stringify(report.end)})`);
  assert.equal((report.end as { status: number }).status, 0, "and reported success");
  assert.equal((report.end as { via: string }).via, "port", "through the exit port (ioperm + outb in /init)");
  assert.equal(report.result?.ok, "1");
  assert.equal(report.result?.bad_words, "0");
  assert.ok(Number(report.result?.read) > 0 && Number(report.result?.written) > 0, "I/O in both directions");
  assert.ok(report.accessPlatform, "VIRTIO_F_ACCESS_PLATFORM negotiated: the DMA went through the VT-d");
  assert.ok(report.binder.binds >= 1, "the guest's PASID entry was bound through the plugin");
  assert.deepEqual(report.binder.badEntries, []);
  assert.deepEqual(report.vtd.faults, [], "no DMA the VMM could not translate");
  assert.deepEqual(report.dmarFaultLines, [], "no DMAR fault in the guest's log");
  assert.deepEqual(report.vtd.queueErrors, []);
  assert.deepEqual(report.vtd.uncovered, [], "every invalidation the queue bytes asked for was sent");
  assert.ok(report.vtd.checkedDescriptors > 0 && report.vtd.relayed > 0);
  assert.equal(report.relay.failures, 0);
  // The run's queue replayed on the in-process host: QEMU's per-descriptor policy against iommu-relay's; every page
  // asked for must be seen invalidated under both, and the relay may not need more ioctls than QEMU's.
  const domains = [
    ...new Set(report.workload.doorbells.flatMap((d) => d.requests.map((r) => "domain" in r ? r.domain : -1))),
  ]
    .filter((d) => d >= 0);
  const results = comparePolicies(report.workload, {
    bindings: domains.map((domain) => ({ domain, pasid: "rid" as const, format: "vtd-s1" as const })),
  });
  const qemu = results.find((r) => r.policy === "per-descriptor")!,
    relay = results.find((r) => r.policy === "iommu-relay")!;
  console.log(
    `linux-guest replay: ${report.workload.doorbells.length} doorbells, QEMU policy ${qemu.ioctls} ioctls, ` +
      `iommu-relay ${relay.ioctls} ioctls / ${relay.entries} entries (under-invalidated: ${qemu.underInvalidated}, ` +
      `${relay.underInvalidated})`,
  );
  assert.equal(qemu.underInvalidated, 0);
  assert.equal(relay.underInvalidated, 0);
  assert.ok(relay.ioctls <= qemu.ioctls);
}

for (const strict of [true, false]) {
  const name = `linux-guest: Linux's intel-iommu driver drives the relay, ${strict ? "strict" : "lazy"} invalidation`;
  if (cannot) Deno.test({ name, ignore: true, fn() {} });
  else kernelTest(name, ["selftest-pasid"], async () => checkRun(await guestRun(strict), strict));
}

const lossyName = "linux-guest: a relay that loses ranged invalidations is caught (stale DMA or the queue-bytes check)";
if (cannot) Deno.test({ name: lossyName, ignore: true, fn() {} });
else {
  kernelTest(lossyName, ["selftest-pasid"], async () => {
    // The guest's I/O stalls once its DMA goes astray: 45 s is plenty for the first requests to show it.
    const report = await guestRun(true, lossyPlugin, 45_000);
    assert.ok(report.vtd.uncovered.length > 0, "the independent check saw invalidations that never reached the host");
    assert.ok(report.vtd.unsent > 0);
    console.log(
      `linux-guest (lossy): the guest's own data check ${
        report.result?.ok === "1" ? "passed (map-time invalidations of caching mode hid the loss)" : "failed"
      }; uncovered: ${report.vtd.uncovered.slice(0, 3).join("; ")}`,
    );
  });
}
