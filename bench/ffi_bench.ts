// Raw ioctl cost through the shim against the in-process C loop making the same ioctl, and struct encoding
// into a reused buffer. Both sides of each "ioctl" group make BATCH ioctls per iteration, so deno bench's summary line
// ("N.NNx slower than C loop") is the Deno/C ratio per ioctl.
//
// The ioctls are two the shim's allow-list permits on the host (which has /dev/kvm and no /dev/iommu):
// KVM_CHECK_EXTENSION(0) on the /dev/kvm fd (a request without an argument: the shim passes none), and, for the
// pointer path IOMMU_HWPT_INVALIDATE takes, KVM_SET_USER_MEMORY_REGION on a VM fd with memory_size 0 and the shim
// storing a buffer's address as userspace_addr (the kernel copies the struct in and answers EINVAL). Without /dev/kvm
// the ioctl groups are skipped, said so. Run: deno task bench
import { IOCTL, IOCTL_LOOP, NativeShim, NO_POINTER } from "../ffi/native.ts";
import { ensureBuilt } from "../ffi/build.ts";
import { IommuHwptInvalidate } from "../lib/uapi/mod.ts";
import { CheapIoctlBackend, KVM_CHECK_EXTENSION_REQUEST } from "./probes/paths.ts";
import { KVM_SET_USER_MEMORY_REGION } from "../lib/uapi/kvm.ts";

const BATCH = 10_000;
const shim = await NativeShim.load();
const probe = shim.open("/dev/kvm");
if (probe < 0) {
  console.log(`ffi: /dev/kvm does not open here (errno ${-probe}): the ioctl groups are skipped`);
} else {
  shim.close(probe);
  const cheap = new CheapIoctlBackend(shim);
  const kvm = cheap.kvmFd, vm = cheap.vmFd, region = cheap.region;
  const second = new Uint8Array(64);

  // The standalone C program (bench/ioctl_loop.c), reported beside the in-process loop: the same ioctls from a
  // process with no Deno runtime in it.
  const standalone = await ensureBuilt({
    source: new URL("./ioctl_loop.c", import.meta.url),
    flags: ["-O2", "-Wall", "-Wextra", "-Werror"],
    prefix: "bench",
    file: "ioctl_loop",
  });
  const out = await new Deno.Command(standalone, { args: [String(BATCH), "20"] }).output();
  if (out.success) {
    const c = JSON.parse(new TextDecoder().decode(out.stdout));
    console.log(
      `standalone C program: KVM_CHECK_EXTENSION ${c.checkBestNs} ns per ioctl best, ${c.checkMedianNs} median; ` +
        `KVM_SET_USER_MEMORY_REGION (pointer) ${c.pointerBestNs} best, ${c.pointerMedianNs} median (${c.rounds} rounds)`,
    );
  }

  Deno.bench({
    name: `C loop inside the shim, KVM_CHECK_EXTENSION (${BATCH} ioctls)`,
    group: "ioctl",
    baseline: true,
    fn() {
      const r = shim[IOCTL_LOOP](kvm, KVM_CHECK_EXTENSION_REQUEST, null, NO_POINTER, null, BATCH);
      if (r < 0) throw new Error(`ioctl loop: ${r}`);
    },
  });
  Deno.bench({
    name: `Deno sync FFI through the shim, KVM_CHECK_EXTENSION (${BATCH} ioctls)`,
    group: "ioctl",
    fn() {
      for (let i = 0; i < BATCH; i++) shim[IOCTL](kvm, KVM_CHECK_EXTENSION_REQUEST, null);
    },
  });
  Deno.bench({
    name: `C loop inside the shim, pointer-patching KVM_SET_USER_MEMORY_REGION (${BATCH} ioctls)`,
    group: "ioctl with pointer",
    baseline: true,
    fn() {
      const r = shim[IOCTL_LOOP](vm, KVM_SET_USER_MEMORY_REGION.request, region, 24, second, BATCH);
      if (r !== -22) throw new Error(`ioctl loop: ${r}`);
    },
  });
  Deno.bench({
    name: `Deno sync FFI, pointer-patching KVM_SET_USER_MEMORY_REGION (${BATCH} ioctls)`,
    group: "ioctl with pointer",
    fn() {
      for (let i = 0; i < BATCH; i++) cheap.rawCall();
    },
  });
  Deno.bench({
    name: `FFI crossing only, no syscall (${BATCH} calls)`,
    group: "ioctl",
    fn() {
      for (let i = 0; i < BATCH; i++) shim.nop(kvm, KVM_CHECK_EXTENSION_REQUEST, null);
    },
  });
}

const reused = IommuHwptInvalidate.buffer();
let sink = 0;
Deno.bench({
  name: "encode iommu_hwpt_invalidate (32 B) into a reused buffer",
  group: "encode",
  baseline: true,
  fn() {
    reused.set("hwpt_id", 5).set("data_type", 0xdeadbeef).set("entry_len", 8).set("entry_num", 64);
    sink ^= reused.bytes[24];
  },
});

Deno.bench({
  name: "encode iommu_hwpt_invalidate into a new Uint8Array each time",
  group: "encode",
  fn() {
    const fresh = new Uint8Array(32);
    IommuHwptInvalidate.encode({ hwpt_id: 5, data_type: 0xdeadbeef, entry_len: 8, entry_num: 64 }, fresh);
    sink ^= fresh[24];
  },
});

// Heap growth of the reused-buffer encoder after warm-up (reported, not asserted).
const gc = (globalThis as { gc?: () => void }).gc;
if (gc) {
  for (let i = 0; i < 100_000; i++) reused.set("entry_num", i & 63);
  gc();
  const before = Deno.memoryUsage().heapUsed;
  for (let i = 0; i < 1_000_000; i++) reused.set("hwpt_id", i & 1023).set("entry_num", i & 63);
  const after = Deno.memoryUsage().heapUsed;
  gc();
  const settled = Deno.memoryUsage().heapUsed;
  console.log(
    `encode: heap growth over 1,000,000 reused-buffer encodes: ${after - before} bytes before GC, ` +
      `${settled - before} after (${sink & 0})`,
  );
} else {
  console.log("encode: heap growth not measured (run with --v8-flags=--expose-gc, as deno task bench does)");
}
