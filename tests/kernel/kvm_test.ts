// lib/kernel/kvm.ts on the host's /dev/kvm (this machine's can run a real-mode guest, not Linux): one object per
// kernel object, typed errors, disposal in reverse order, a guest that really runs.
import assert from "node:assert/strict";
import { ensureShim } from "../../ffi/build.ts";
import { IOCTL_WITH_POINTER, NativeShim, ShimRefusedError } from "../../ffi/native.ts";
import { Kvm, KvmError, KvmVcpu } from "../../lib/kernel/kvm.ts";
import {
  KVM_GET_DIRTY_LOG,
  KVM_SET_USER_MEMORY_REGION,
  KvmDirtyLog,
  KvmExitReason,
  KvmMemFlags,
  KvmRunIoLayout,
  KvmUserspaceMemoryRegion,
} from "../../lib/uapi/mod.ts";

const shimPath = await ensureShim();
const shim = NativeShim.loadSync(shimPath);
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

Deno.test({
  name: "kvm: a dirty-log read racing a re-registration of its slot (bigger) never writes past its buffer",
  ignore,
  async fn() {
    // An attacker's own declaration of the shim: the read as a nonblocking call (on another thread), while this thread
    // deletes the one-page slot and registers it again at 16,384 pages. The shim checks the log's length against the
    // slot it recorded; between that check and the ioctl the slot must not change, or KVM writes a 2 KiB log into the
    // 8 bytes passed. Before the shim held one lock across both, this wrote past the buffer within a few dozen rounds.
    const own = Deno.dlopen(shimPath, {
      relay_ioctl_with_pointer: {
        parameters: ["i32", "u32", "buffer", "u32", "u32", "buffer", "u32"],
        result: "i32",
        nonblocking: true,
      },
    });
    try {
      using kvm = Kvm.open(shim);
      using vm = kvm.createVm();
      const big = shim.sharedAlignedBuffer(64 << 20), small = big.subarray(0, 4096);
      const setSlot = (memory: Uint8Array, size: number) => {
        const region = KvmUserspaceMemoryRegion.buffer().set("slot", 0)
          .set("flags", KvmMemFlags.values.KVM_MEM_LOG_DIRTY_PAGES).setU64("memory_size", size);
        shim[IOCTL_WITH_POINTER](
          vm.fd,
          KVM_SET_USER_MEMORY_REGION.request,
          region.bytes,
          region.offsetOf("userspace_addr"),
          memory,
        );
      };
      const store = new Uint8Array(4096).fill(0xee), bitmap = store.subarray(0, 8);
      let read = 0;
      for (let round = 0; round < 2000; round++) {
        setSlot(small, 0);
        setSlot(small, 4096);
        const args = KvmDirtyLog.buffer().set("slot", 0);
        const pending = own.symbols.relay_ioctl_with_pointer(
          vm.fd,
          KVM_GET_DIRTY_LOG.request,
          args.bytes,
          args.bytes.length,
          args.offsetOf("dirty_bitmap"),
          bitmap,
          bitmap.length,
        );
        setSlot(small, 0);
        setSlot(big, big.length);
        if (await pending === 0) read++;
        assert.ok(store.subarray(8).every((b) => b === 0xee), `round ${round}: KVM wrote past the 8-byte log`);
      }
      assert.ok(read > 0, "some reads ran (the slot was the one-page one)");
    } finally {
      own.close();
    }
  },
});
