// Raw ioctl cost through the shim against the in-process C loop making the same ioctl, and struct encoding
// into a reused buffer. Both sides of the "ioctl" group do BATCH ioctls per iteration, so deno bench's
// summary line ("N.NNx slower than C loop") is the Deno/C ratio per ioctl.
//
// The ioctl is KVM_CHECK_EXTENSION on /dev/kvm where that exists (a real handler), else TCGETS on /dev/null
// (the kernel's ENOTTY path: fdget + dispatch, no driver work). Run: deno task bench
import { IOCTL, IOCTL_LOOP, IOCTL_WITH_POINTER, NativeShim, NO_POINTER } from "../ffi/native.ts";
import { ensureBuilt } from "../ffi/build.ts";
import { IommuHwptInvalidate } from "../lib/uapi/mod.ts";

const BATCH = 10_000;
const shim = await NativeShim.load();
const kvm = shim.open("/dev/kvm");
const useKvm = kvm >= 0;
const fd = useKvm ? kvm : shim.open("/dev/null");
const request = useKvm ? 0xae03 : 0x5401;
const arg = new Uint8Array(64);
const expected = useKvm ? undefined : -25;
console.log(`ioctl under test: ${useKvm ? "KVM_CHECK_EXTENSION on /dev/kvm" : "TCGETS on /dev/null (no /dev/kvm)"}`);

// The standalone C program (bench/ioctl_loop.c), reported beside the in-process loop: the same ioctl from a process
// with no Deno runtime in it.
const standalone = await ensureBuilt({
  source: new URL("./ioctl_loop.c", import.meta.url),
  flags: ["-O2", "-Wall", "-Wextra", "-Werror"],
  prefix: "bench",
  file: "ioctl_loop",
});
const c = JSON.parse(
  new TextDecoder().decode((await new Deno.Command(standalone, { args: [String(BATCH), "20"] }).output()).stdout),
);
console.log(
  `standalone C program (${c.ioctl}): ${c.bestNs} ns per ioctl best, ${c.medianNs} median of ${c.rounds} rounds`,
);

Deno.bench({
  name: `C loop inside the shim (${BATCH} ioctls)`,
  group: "ioctl",
  baseline: true,
  fn() {
    const r = shim[IOCTL_LOOP](fd, request, arg, NO_POINTER, null, BATCH);
    if (expected === undefined ? r !== 0 : r !== expected) throw new Error(`ioctl loop: ${r}`);
  },
});

Deno.bench({
  name: `Deno sync FFI through the shim, buffer arg (${BATCH} ioctls)`,
  group: "ioctl",
  fn() {
    for (let i = 0; i < BATCH; i++) shim[IOCTL](fd, request, arg);
  },
});

Deno.bench({
  name: `Deno sync FFI, pointer-patching ioctl (${BATCH} ioctls)`,
  group: "ioctl",
  fn() {
    for (let i = 0; i < BATCH; i++) shim[IOCTL_WITH_POINTER](fd, request, arg, 8, arg);
  },
});

Deno.bench({
  name: `FFI crossing only, no syscall (${BATCH} calls)`,
  group: "ioctl",
  fn() {
    for (let i = 0; i < BATCH; i++) shim.nop(fd, request, arg);
  },
});

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
