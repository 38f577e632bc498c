// The mini-VMM on the in-process host, its guest code against guest.S, and what a hostile guest gets.
// The KVM vCPU runs here where this machine's /dev/kvm opens; the kernel host is tested in
// kernel-suite/mini_vmm_test.ts, where the test VM's KVM runs the same guest against iommufd.
import assert from "node:assert/strict";
import { NativeShim } from "../../ffi/native.ts";
import { RelayHost } from "../../lib/plugin/plugin.ts";
import { GUEST_CODE_HEX } from "../../examples/mini-vmm/layout.ts";
import { buildWorkload, spinningWorkload } from "../../examples/mini-vmm/script.ts";
import { runMiniVmm } from "../../examples/mini-vmm/vmm.ts";

const shim = await NativeShim.load();
const root = new URL("../..", import.meta.url).pathname;

async function have(cmd: string): Promise<boolean> {
  try {
    return (await new Deno.Command(cmd, { args: ["--version"], stdout: "null", stderr: "null" }).output()).success;
  } catch {
    return false;
  }
}
const binutils = await have("as") && await have("objcopy");

Deno.test({
  name: `mini-vmm: the embedded guest code is guest.S assembled${binutils ? "" : " (ignored: no binutils as/objcopy)"}`,
  ignore: !binutils,
  fn: async () => {
    const dir = await Deno.makeTempDir();
    try {
      const as = await new Deno.Command("as", {
        args: ["--32", "-o", `${dir}/g.o`, `${root}examples/mini-vmm/guest.S`],
      }).output();
      assert.ok(as.success, new TextDecoder().decode(as.stderr));
      const oc = await new Deno.Command("objcopy", {
        args: ["-O", "binary", "-j", ".text", `${dir}/g.o`, `${dir}/g.bin`],
      })
        .output();
      assert.ok(oc.success);
      const bytes = await Deno.readFile(`${dir}/g.bin`);
      assert.equal(Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join(""), GUEST_CODE_HEX);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("mini-vmm: the guest's workload runs in-process; every page checked is invalidated", async () => {
  using host = RelayHost.inProcess();
  let atEnd: [number, number] | undefined;
  const r = await runMiniVmm({
    shim,
    host,
    doorbells: 300,
    seed: 7,
    kvm: "off",
    progress: (i) => {
      if (i === 304) atEnd = [host.queue().bindings(2, 5).length, host.queue().bindings(1, "rid").length];
    },
  });
  assert.equal(r.vcpu, "in-process");
  assert.equal(r.end, "halted");
  assert.equal(r.iqeAt, undefined);
  assert.equal(r.unit.doorbells, 305); // boot binds, 300 strict, burst, rebind, fault response, teardown
  assert.equal(r.unit.waits, 305);
  assert.deepEqual(
    [r.faultRoundTrip.source, r.faultRoundTrip.delivered, r.faultRoundTrip.answered, r.faultRoundTrip.refused],
    ["stand-in", 1, 1, 0],
  );
  assert.deepEqual(
    r.faultRoundTrip.hostResponses,
    [{ cookie: 1, code: 0 }],
    "the guest's answer reached the host as success",
  );
  assert.deepEqual([r.unit.binds, r.unit.unbinds], [3, 1]);
  assert.deepEqual(r.unit.errors, []);
  assert.deepEqual(r.unit.badEntries, []);
  assert.equal(r.burst.ioctls, 1, "the 128-descriptor burst is one host ioctl");
  assert.equal(r.burst.descriptors, 129);
  assert.equal(r.checked, 302);
  assert.equal(r.underInvalidated, 0);
  assert.equal(r.host.failures, 0);
  assert.deepEqual(atEnd, [0, 1], "after the teardown: PASID 5 unbound, the NIC's RID_PASID entry still bound");
  assert.equal(host.queue().bindings(1, "rid").length, 0, "disposing the plugins unbound the rest");
});

Deno.test("mini-vmm: a malformed descriptor stops the queue with IQE there; the guest reports it and halts", async () => {
  using host = RelayHost.inProcess();
  const w = buildWorkload({ doorbells: 10, seed: 1 });
  const at = w.doorbellOffsets[5]; // doorbell 5's IOTLB descriptor: bit 9, the type's high part, makes type 18
  w.bytes[at + 1] |= 0x02;
  const r = await runMiniVmm({ shim, host, doorbells: 10, seed: 1, kvm: "off", workload: w });
  assert.equal(r.end, "halted");
  assert.equal(r.unit.errors.length, 1);
  assert.match(r.unit.errors[0], /unknown-type: type 18/);
  // Doorbell 5 starts at queue slot 1 + 2 * 4 (boot: 3 descriptors, then 2 per doorbell).
  assert.equal(r.iqeAt, (3 + 2 * 4) * 32, "IQH at the malformed descriptor, as the guest read it");
  assert.equal(r.unit.doorbells, 6, "nothing after the IQE ran");
});

Deno.test("mini-vmm: a PASID entry with a reserved PGTT is refused and the PASID left unbound", async () => {
  using host = RelayHost.inProcess();
  const w = buildWorkload({ doorbells: 3, seed: 1 });
  // The rebind's PASID entry is the second-to-last STORE of 64 bytes: find PASID 5's entries by their DID word.
  const v = new DataView(w.bytes.buffer);
  const entries: number[] = [];
  for (let i = 0; i + 12 < w.bytes.length; i += 4) {
    if (v.getUint32(i, true) === 2 && v.getUint32(i + 8, true) === 64 && v.getUint32(i + 4, true) === 0xb000 + 5 * 64) {
      entries.push(i + 12);
    }
  }
  assert.equal(entries.length, 3, "bind, rebind, teardown");
  v.setUint32(entries[1], 1 | (6 << 6), true); // present, PGTT 6 (reserved)
  const r = await runMiniVmm({ shim, host, doorbells: 3, seed: 1, kvm: "off", workload: w });
  assert.equal(r.end, "halted");
  assert.equal(r.unit.badEntries.length, 1);
  assert.match(r.unit.badEntries[0], /reserved-pgtt/);
  assert.deepEqual([r.unit.binds, r.unit.unbinds], [2, 1], "the bad rebind unbinds; the teardown has nothing left");
  assert.equal(host.queue().bindings(2, 5).length, 0);
});

Deno.test("mini-vmm: the script must fit the guest's RAM", () => {
  assert.throws(() => buildWorkload({ doorbells: 20_000, seed: 1 }), RangeError);
});

globalThis.addEventListener("unload", () => shim[Symbol.dispose]());

const kvmFd = shim.open("/dev/kvm");
if (kvmFd >= 0) shim.close(kvmFd);
const noKvm = kvmFd < 0 ? ` (ignored: /dev/kvm does not open here, errno ${-kvmFd})` : "";

Deno.test({
  name:
    `mini-vmm: on this machine's KVM the guest makes exactly the accesses and host calls of the in-process vCPU${noKvm}`,
  ignore: kvmFd < 0,
  fn: async () => {
    const run = async (kvm: "require" | "off") => {
      using host = RelayHost.inProcess();
      return await runMiniVmm({ shim, host, doorbells: 200, seed: 5, kvm });
    };
    const onKvm = await run("require"), inProcess = await run("off");
    assert.equal(onKvm.vcpu, "kvm");
    assert.equal(onKvm.end, "halted");
    assert.equal(onKvm.exits, inProcess.exits + 1, "one exit per register access, plus the final HLT");
    assert.equal(onKvm.underInvalidated, 0);
    assert.ok(onKvm.checked > 200);
    const counts = (r: typeof onKvm) => ({
      ...r.unit,
      pageRequests: { ...r.unit.pageRequests, roundTripUs: 0 },
    });
    assert.deepEqual(counts(onKvm), counts(inProcess));
    assert.deepEqual(onKvm.host, inProcess.host);
    assert.deepEqual(onKvm.burst, { descriptors: 129, ioctls: 1 });
  },
});

Deno.test({
  name:
    `mini-vmm: with the vCPU inline (exits served on this thread) the guest does exactly what it does on a Worker${noKvm}`,
  ignore: kvmFd < 0,
  fn: async () => {
    const run = async (vcpuThread: "worker" | "inline") => {
      using host = RelayHost.inProcess();
      return await runMiniVmm({ shim, host, doorbells: 200, seed: 5, kvm: "require", vcpuThread });
    };
    const inline = await run("inline"), worker = await run("worker");
    assert.deepEqual([inline.vcpu, inline.vcpuThread, worker.vcpuThread], ["kvm", "inline", "worker"]);
    assert.equal(inline.end, "halted");
    assert.equal(inline.exits, worker.exits);
    assert.equal(inline.underInvalidated, 0);
    const counts = (r: typeof inline) => ({ ...r.unit, pageRequests: { ...r.unit.pageRequests, roundTripUs: 0 } });
    assert.deepEqual(counts(inline), counts(worker));
    assert.deepEqual(inline.host, worker.host);
  },
});

Deno.test({
  name: `mini-vmm: an inline vCPU spinning without exits is stopped at its deadline by the timer signal${noKvm}`,
  ignore: kvmFd < 0,
  fn: async () => {
    const workload = spinningWorkload(buildWorkload({ doorbells: 5, seed: 1 }));
    using host = RelayHost.inProcess();
    const report = await runMiniVmm({
      shim,
      host,
      doorbells: 5,
      seed: 1,
      kvm: "require",
      vcpuThread: "inline",
      timeoutMs: 300,
      workload,
    });
    assert.equal(report.end, "cancelled");
    assert.equal(report.unit.doorbells, 0, "the guest never reached a doorbell");
    // The deadline timer is disarmed afterwards: a blocking call of this thread runs to its own timeout.
    assert.equal(shim.poll(-1, 1, 50), 0);
  },
});
