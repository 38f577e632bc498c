// lib/kernel/kvm.ts on the host's /dev/kvm (this machine's can run a real-mode guest, not Linux): one object per
// kernel object, typed errors, disposal in reverse order, a guest that really runs.
import assert from "node:assert/strict";
import { ensureShim } from "../../ffi/build.ts";
import { NativeShim, ShimRefusedError } from "../../ffi/native.ts";
import { Kvm, KvmError, KvmVcpu } from "../../lib/kernel/kvm.ts";
import { KvmExitReason, KvmRunIoLayout } from "../../lib/uapi/mod.ts";

const shim = NativeShim.loadSync(await ensureShim());
const kvmFd = shim.open("/dev/kvm");
if (kvmFd >= 0) shim.close(kvmFd);
const ignore = kvmFd < 0;
if (ignore) console.log(`tests/kernel/kvm_test.ts: ignored: /dev/kvm does not open here (${kvmFd})`);

Deno.test({
  name: "kvm: a real-mode guest runs to its port write and HLT; one vCPU; disposal closes vCPU then VM",
  ignore,
  fn() {
    using kvm = Kvm.open(shim);
    assert.ok(kvm.vcpuMmapSize >= 4096);
    const vm = kvm.createVm();
    const ram = shim.sharedAlignedBuffer(1 << 16);
    // mov al, 0x5a; out 0x501... (port > 0xff: mov dx, 0x501; out dx, al); hlt
    ram.set([0xb0, 0x5a, 0xba, 0x01, 0x05, 0xee, 0xf4], 0x1000);
    vm.setMemory(0, 0, ram);
    const vcpu = vm.createVcpu();
    assert.throws(() => vm.createVcpu(), RangeError);
    vcpu.resetRealMode(0x1000);
    const view = new DataView(vcpu.run.buffer, vcpu.run.byteOffset, vcpu.run.byteLength);
    assert.equal(vcpu.runOnce(), 0);
    assert.equal(view.getUint32(8, true), KvmExitReason.values.KVM_EXIT_IO);
    const io = KvmRunIoLayout.fields;
    const port = view.getUint16(io.port.offset, true), offset = Number(view.getBigUint64(io.data_offset.offset, true));
    assert.deepEqual([port, vcpu.run[offset]], [0x501, 0x5a]);
    // A Worker's view of the same vCPU runs it on; disposing that view closes nothing.
    const borrowed = KvmVcpu.inWorker(shim, vcpu.fd, vcpu.run);
    assert.equal(borrowed.runOnce(), 0);
    assert.equal(view.getUint32(8, true), KvmExitReason.values.KVM_EXIT_HLT);
    borrowed[Symbol.dispose]();
    assert.equal(vcpu.runOnce(), 0, "the vCPU fd is still open");
    vm[Symbol.dispose]();
    assert.throws(() => vcpu.runOnce(), ShimRefusedError, "the VM closed its vCPU: the shim no longer holds the fd");
    vm[Symbol.dispose](); // twice: nothing
  },
});

Deno.test({
  name: "kvm: failures are KvmErrors with the operation, the ioctl and the errno",
  ignore,
  fn() {
    using kvm = Kvm.open(shim);
    using vm = kvm.createVm();
    // A slot whose memory is not page aligned: KVM_SET_USER_MEMORY_REGION says EINVAL.
    const ram = shim.sharedAlignedBuffer(3 * 4096);
    assert.throws(
      () => vm.setMemory(0, 0x1000, ram.subarray(1, 4097)),
      (e) => e instanceof KvmError && e.ioctl === "KVM_SET_USER_MEMORY_REGION" && e.errnoName === "EINVAL",
    );
    assert.ok(kvm.supportedCpuid().length > 0);
  },
});
