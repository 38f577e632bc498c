// The mini-VMM on the real kernel: its real-mode guest runs under KVM inside the test VM (QEMU's TCG emulates AMD
// SVM, and the 7.x test kernel has kvm_amd), programs the emulated VT-d queue, and iommu-relay relays the doorbells
// to iommufd through the selftest format; the mock's IOTLBs show the invalidations arrived.
import assert from "node:assert/strict";
import { mockIotlbHolds } from "../lib/kernel/mod.ts";
import { RelayHost } from "../lib/plugin/plugin.ts";
import { type MiniVmmReport, runMiniVmm } from "../examples/mini-vmm/vmm.ts";
import type { TableFor } from "../examples/mini-vmm/vtd_unit.ts";
import { buildWorkload, spinningWorkload } from "../examples/mini-vmm/script.ts";
import { atLeast, kernelTest, noKernel, release, shim } from "./harness.ts";

const tableFor: TableFor = (entry) => ({ format: "selftest", iotlb: entry.firstStagePage });
const kvmFd = shim.open("/dev/kvm");
if (kvmFd >= 0) shim.close(kvmFd);
// The 7.x test kernel is built with KVM (tools/kernel/config-7.x.fragment): there its absence is a failure.
const noKvm = kvmFd < 0 && !atLeast(7, 0) ? `Linux ${release} is built without KVM` : undefined;
if (!noKernel && noKvm) console.log(`kernel suite: KVM mini-VMM tests ignored: ${noKvm}`);

function kvmTest(name: string, fn: () => Promise<void>): void {
  if (noKvm) Deno.test({ name, ignore: true, fn });
  else kernelTest(name, ["selftest-pasid"], fn);
}

kvmTest("mini-vmm: the KVM guest's VT-d doorbells reach the kernel's mock IOTLBs", async () => {
  assert.ok(kvmFd >= 0, `/dev/kvm must open in the 7.x test kernel (${kvmFd})`);
  using host = RelayHost.kernel(shim);
  const iommufd = host.iommufd!;
  const seen: string[] = [];
  const doorbells = 150;
  const report = await runMiniVmm({
    shim,
    host,
    doorbells,
    seed: 3,
    kvm: "require",
    tableFor,
    progress: (i) => {
      const q = host.queue();
      if (i === doorbells) {
        // After the strict stream: the NIC's RID table (IOTLB value 0x100) had slot 0 flushed, slot 1 untouched.
        const rid = q.bindings(1, "rid")[0].targetId;
        if (mockIotlbHolds(iommufd, rid, 0, 0) && mockIotlbHolds(iommufd, rid, 1, 0x100)) seen.push("nic");
      }
      if (i === doorbells + 2) {
        // After the rebind to table 0x300 and the whole-PASID flush: every slot of the new table flushed.
        const sva = q.bindings(2, 5)[0].targetId;
        if ([0, 1, 2, 3].every((slot) => mockIotlbHolds(iommufd, sva, slot, 0))) seen.push("rebind");
      }
      if (i === doorbells + 4 && q.bindings(2, 5).length === 0) seen.push("teardown");
    },
  });
  assert.equal(report.vcpu, "kvm");
  assert.equal(report.end, "halted");
  assert.equal(report.iqeAt, undefined);
  assert.deepEqual(report.unit.errors, []);
  assert.deepEqual(report.unit.badEntries, []);
  assert.equal(report.unit.doorbells, doorbells + 5);
  // The fault round trip ran on the kernel: TRIGGER_IOPF → fault queue → guest PRQ → guest answer → page response.
  assert.equal(report.faultRoundTrip.source, "kernel", report.faultRoundTrip.note);
  assert.deepEqual([report.faultRoundTrip.delivered, report.faultRoundTrip.answered], [1, 1]);
  assert.deepEqual(report.faultRoundTrip.hostResponses.map((r) => r.code), [0]);
  assert.deepEqual([report.unit.binds, report.unit.unbinds], [3, 1]);
  assert.equal(report.host.failures, 0);
  assert.equal(report.burst.ioctls, 1, "the 129-descriptor burst is one IOMMU_HWPT_INVALIDATE");
  assert.deepEqual(seen, ["nic", "rebind", "teardown"]);
});

kvmTest(
  "mini-vmm: the in-process vCPU does exactly what the KVM guest does (same accesses, same host calls)",
  async () => {
    const run = async (kvm: "require" | "off"): Promise<MiniVmmReport> => {
      using host = RelayHost.kernel(shim);
      return await runMiniVmm({ shim, host, doorbells: 60, seed: 9, kvm, tableFor });
    };
    const onKvm = await run("require"), inProcess = await run("off");
    assert.equal(onKvm.vcpu, "kvm");
    assert.equal(inProcess.vcpu, "in-process");
    assert.equal(onKvm.exits, inProcess.exits + 1, "one KVM exit per register access, plus the final HLT");
    const counts = (u: MiniVmmReport["unit"]) => ({ ...u, pageRequests: { ...u.pageRequests, roundTripUs: 0 } });
    assert.deepEqual(counts(onKvm.unit), counts(inProcess.unit), "the same counts (times differ)");
    assert.deepEqual(onKvm.host, inProcess.host);
    assert.deepEqual(onKvm.burst, inProcess.burst);
  },
);

const openFds = () => [...Deno.readDirSync("/proc/self/fd")].length;
/** The fd count once it settles at `want`: a terminated Worker's runtime (epoll, eventfd) closes on its own thread. */
async function fdsSettle(want: number): Promise<number> {
  for (let i = 0; i < 100 && openFds() !== want; i++) await new Promise((r) => setTimeout(r, 50));
  return openFds();
}

kvmTest("mini-vmm: a guest spinning without exits is kicked out of KVM_RUN at its deadline", async () => {
  const workload = spinningWorkload(buildWorkload({ doorbells: 5, seed: 1 }));
  const before = openFds();
  {
    using host = RelayHost.kernel(shim);
    const report = await runMiniVmm({
      shim,
      host,
      doorbells: 5,
      seed: 1,
      kvm: "require",
      tableFor,
      timeoutMs: 500,
      workload,
    });
    assert.equal(report.vcpu, "kvm");
    assert.equal(report.end, "cancelled");
    assert.equal(report.unit.doorbells, 0, "the guest never reached a doorbell");
  }
  assert.equal(await fdsSettle(before), before, "the VM, vCPU and iommufd fds are closed");
});

kvmTest("mini-vmm: a guest past its deadline is stopped at its next exit and the VM torn down", async () => {
  const before = openFds();
  using host = RelayHost.kernel(shim);
  const report = await runMiniVmm({ shim, host, doorbells: 5000, seed: 1, kvm: "require", tableFor, timeoutMs: 300 });
  assert.equal(report.vcpu, "kvm");
  assert.equal(report.end, "cancelled");
  assert.ok(report.unit.doorbells < 5004, "stopped before the end");
  assert.equal(await fdsSettle(before + 1), before + 1, "only the host's iommufd is still open");
  using fresh = RelayHost.kernel(shim);
  const again = await runMiniVmm({
    shim,
    host: fresh,
    doorbells: 2,
    seed: 1,
    kvm: "require",
    tableFor,
  });
  assert.equal(again.end, "halted");
});

kvmTest(
  "mini-vmm: with the vCPU inline the KVM guest does on the kernel exactly what it does on a Worker",
  async () => {
    const run = async (vcpuThread: "worker" | "inline"): Promise<MiniVmmReport> => {
      using host = RelayHost.kernel(shim);
      return await runMiniVmm({ shim, host, doorbells: 60, seed: 9, kvm: "require", tableFor, vcpuThread });
    };
    const inline = await run("inline"), worker = await run("worker");
    assert.deepEqual([inline.vcpuThread, inline.end, inline.host.failures], ["inline", "halted", 0]);
    assert.equal(inline.exits, worker.exits);
    assert.deepEqual(inline.host, worker.host);
    assert.equal(inline.faultRoundTrip.source, "kernel");
    assert.deepEqual(inline.faultRoundTrip.hostResponses.map((r) => r.code), [0]);
  },
);
