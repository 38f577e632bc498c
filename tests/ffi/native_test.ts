// The shim's own rules (ffi/shim.c), from the library's side; tests/sandbox_test.ts tries them as an attacker would.
import assert from "node:assert/strict";
import {
  FD_KIND,
  IOCTL,
  IOCTL_LOOP,
  IOCTL_WITH_POINTER,
  NativeShim,
  NO_POINTER,
  POLL,
  ShimClosedError,
  ShimRefusedError,
} from "../../ffi/native.ts";
import {
  IOMMU_TEST_CMD,
  IOMMUFD_UAPI,
  KVM_CREATE_IRQCHIP,
  KVM_CREATE_PIT2,
  KVM_GET_DIRTY_LOG,
  KVM_GET_SUPPORTED_CPUID,
  KVM_IRQ_LINE,
  KVM_SIGNAL_MSI,
  KVM_UAPI,
  KvmUserspaceMemoryRegion,
  VFIO_UAPI,
} from "../../lib/uapi/mod.ts";

const EINVAL = 22, EINTR = 4;
const TCGETS = 0x5401;
const KVM_GET_API_VERSION = 0xae00;
const KVM_CREATE_VM = 0xae01;
const KVM_CHECK_EXTENSION = 0xae03;
const KVM_GET_VCPU_MMAP_SIZE = 0xae04;
const KVM_CREATE_VCPU = 0xae41;
const KVM_SET_USER_MEMORY_REGION = KVM_UAPI.ioctls.find((i) => i.name === "KVM_SET_USER_MEMORY_REGION")!.request;
const KVM_RUN = 0xae80;
const KVM_GET_MSR_INDEX_LIST = 0xc004ae02; // _IOWR: above 2^31
const shim = await NativeShim.load();
// Opened through the shim, as the library does: Deno's own fs APIs (even Deno.statSync) need --allow-all for a device
// node, so they cannot tell whether /dev/kvm is there.
const kvmProbe = shim.open("/dev/kvm");
const hasKvm = kvmProbe >= 0;
if (hasKvm) shim.close(kvmProbe);
const noKvm = `skipped: /dev/kvm does not open on this machine (errno ${-kvmProbe})`;
if (!hasKvm) console.log(`KVM tests ${noKvm}`);

/** Assert `f` throws the shim's refusal with `errnoName`. */
function refused(f: () => unknown, errnoName: "EPERM" | "EACCES" | "EBADF", operation?: RegExp): void {
  assert.throws(f, (e) => {
    assert.ok(e instanceof ShimRefusedError, `expected a ShimRefusedError, got ${e}`);
    assert.equal(e.errnoName, errnoName, e.message);
    if (operation) assert.match(e.operation, operation);
    return true;
  });
}

Deno.test("shim: open refuses every path but a relay's device nodes, each with EACCES", () => {
  for (
    const path of [
      "/etc/shadow",
      "/dev/null",
      "/dev/mem",
      "/dev/vfio/vfio",
      "/dev/vfio/7",
      "/dev/vfio/devices/vfio01", // not how the kernel names a cdev
      "/dev/vfio/devices/vfio-1",
      "/dev/../dev/kvm",
      "/dev//kvm",
      "dev/kvm",
      "/proc/self/mem",
    ]
  ) refused(() => shim.open(path), "EACCES", /^open /);
  // A path with a NUL is refused before the shim sees it (not truncated to /dev/kvm).
  assert.equal(shim.open("/dev/kvm\0/etc/shadow"), -EINVAL);
});

Deno.test("shim: a missing relay device node is the kernel's ENOENT, not a refusal", () => {
  const r = shim.open("/dev/vfio/devices/vfio987654");
  assert.equal(r, -2);
});

Deno.test("shim: fds the shim does not hold are refused with EBADF for every operation", () => {
  for (const fd of [0, 1, 2, -1, 65535, 1 << 20]) {
    refused(() => shim[IOCTL](fd, KVM_GET_API_VERSION, null), "EBADF", /^ioctl 0xae00 on fd/);
    refused(() => shim.read(fd, new Uint8Array(8)), "EBADF");
    refused(() => shim.write(fd, new Uint8Array(8)), "EBADF");
    refused(() => shim.close(fd), "EBADF");
    if (fd !== -1) refused(() => shim.poll(fd, POLL.IN, 0), "EBADF");
  }
  refused(() => shim[IOCTL_LOOP](0, TCGETS, new Uint8Array(64), NO_POINTER, null, 1), "EBADF");
});

Deno.test("shim: the allow-list is per fd kind — every ioctl the library makes is on its kind's list and no other", () => {
  const lists: [number, number[]][] = [
    [FD_KIND.IOMMUFD, [...IOMMUFD_UAPI.ioctls.map((i) => i.request), IOMMU_TEST_CMD.request]],
    [FD_KIND.VFIO_CDEV, VFIO_UAPI.ioctls.map((i) => i.request)],
    [FD_KIND.KVM, [
      KVM_GET_API_VERSION,
      KVM_CREATE_VM,
      KVM_CHECK_EXTENSION,
      KVM_GET_VCPU_MMAP_SIZE,
      KVM_GET_SUPPORTED_CPUID.request,
    ]],
    [FD_KIND.KVM_VM, [
      KVM_CHECK_EXTENSION,
      KVM_CREATE_VCPU,
      KVM_SET_USER_MEMORY_REGION,
      KVM_GET_DIRTY_LOG.request,
      KVM_CREATE_IRQCHIP.request,
      KVM_IRQ_LINE.request,
      KVM_CREATE_PIT2.request,
      KVM_SIGNAL_MSI.request,
    ]],
    [
      FD_KIND.KVM_VCPU,
      KVM_UAPI.ioctls.filter((i) => /^KVM_(RUN|[GS]ET_S?REGS|SET_CPUID2)$/.test(i.name)).map((i) => i.request),
    ],
    [FD_KIND.FAULT_QUEUE, []],
    [FD_KIND.VEVENTQ, []],
    [FD_KIND.TEST_ACCESS, []],
    [FD_KIND.MEMFD, []],
    [FD_KIND.FDPASS_LISTENER, []],
    [FD_KIND.FDPASS_SOCKET, []],
  ];
  const every = new Set(lists.flatMap(([, l]) => l).concat([TCGETS, KVM_GET_MSR_INDEX_LIST, 0x3b00 | 0x82]));
  for (const [kind, allowed] of lists) {
    for (const request of every) {
      assert.equal(
        shim.policyAllows(kind, request),
        allowed.includes(request),
        `kind ${kind}, request 0x${request.toString(16)}`,
      );
    }
  }
  // iommufd and VFIO share the type byte ';': the list is per kind, not per type.
  assert.equal(shim.policyAllows(FD_KIND.VFIO_CDEV, IOMMUFD_UAPI.ioctls[0].request), false);
});

Deno.test({
  name: "shim: an empty second buffer (Deno passes null) is allowed where the struct covers 0 bytes, only there",
  ignore: !hasKvm,
  fn() {
    const kvm = shim.open("/dev/kvm");
    const vm = shim[IOCTL](kvm, KVM_CREATE_VM, null);
    try {
      // KVM_SET_USER_MEMORY_REGION's userspace_addr is the pointer, memory_size (u64 at 16) its length: 0 here, so
      // the call reaches KVM (which answers for itself) instead of being refused, as the zero-entry
      // IOMMU_HWPT_INVALIDATE probe must.
      const region = new Uint8Array(32);
      const r = shim[IOCTL_WITH_POINTER](vm, KVM_SET_USER_MEMORY_REGION, region, 24, new Uint8Array(0));
      assert.ok(r <= 0, `the kernel's answer: ${r}`);
      // A length the empty buffer does not cover is still refused.
      new DataView(region.buffer).setUint32(16, 4096, true);
      refused(() => shim[IOCTL_WITH_POINTER](vm, KVM_SET_USER_MEMORY_REGION, region, 24, new Uint8Array(0)), "EPERM");
    } finally {
      shim.close(vm);
      shim.close(kvm);
    }
  },
});

Deno.test({
  name: "shim: a counted KVM argument (kvm_cpuid2) reaches the kernel whole; a count past 256 entries is refused",
  ignore: !hasKvm,
  fn() {
    const fd = shim.open("/dev/kvm");
    try {
      const entries = 256;
      const cpuid = new Uint8Array(8 + entries * 40);
      new DataView(cpuid.buffer).setUint32(0, entries, true);
      const r = shim[IOCTL](fd, KVM_GET_SUPPORTED_CPUID.request, cpuid);
      assert.equal(r, 0, `KVM_GET_SUPPORTED_CPUID: ${r}`);
      const nent = new DataView(cpuid.buffer).getUint32(0, true);
      assert.ok(nent > 0 && nent <= entries, `nent ${nent}`);
      // Leaf 0 is always reported; its entry lies past the 8-byte header, so the kernel wrote the shim's whole copy.
      assert.ok(
        Array.from({ length: nent }, (_, i) => new DataView(cpuid.buffer).getUint32(8 + i * 40, true)).includes(0),
      );
      new DataView(cpuid.buffer).setUint32(0, entries + 1, true);
      refused(() => shim[IOCTL](fd, KVM_GET_SUPPORTED_CPUID.request, cpuid), "EPERM");
      // A count the caller's buffer does not cover is refused, not read past the buffer.
      new DataView(cpuid.buffer).setUint32(0, 2, true);
      refused(() => shim[IOCTL](fd, KVM_GET_SUPPORTED_CPUID.request, cpuid.subarray(0, 8 + 40)), "EPERM");
    } finally {
      shim.close(fd);
    }
  },
});

Deno.test({
  name: "shim: on /dev/kvm only the listed requests reach the kernel; a foreign one is EPERM",
  ignore: !hasKvm,
  fn() {
    const fd = shim.open("/dev/kvm");
    try {
      assert.equal(shim[IOCTL](fd, KVM_GET_API_VERSION, null), 12);
      assert.equal(shim[IOCTL_LOOP](fd, KVM_CHECK_EXTENSION, null, NO_POINTER, null, 100), 0);
      refused(() => shim[IOCTL](fd, TCGETS, new Uint8Array(64)), "EPERM", /^ioctl 0x5401 on fd/);
      refused(() => shim[IOCTL](fd, KVM_GET_MSR_INDEX_LIST, new Uint8Array(4)), "EPERM", /0xc004ae02/);
      refused(() => shim[IOCTL](fd, KVM_RUN, null), "EPERM"); // a vCPU's request, not the system fd's
      // Not a fault queue: no read, no write; poll is allowed on any fd the shim holds.
      refused(() => shim.read(fd, new Uint8Array(8)), "EPERM");
      refused(() => shim.write(fd, new Uint8Array(8)), "EPERM");
      assert.ok(shim.poll(fd, POLL.IN, 0) >= 0);
    } finally {
      shim.close(fd);
    }
    // Closed: gone from the table.
    refused(() => shim[IOCTL](fd, KVM_GET_API_VERSION, null), "EBADF");
  },
});

Deno.test({
  name: "shim: a VM and vCPU fd join the table; pointers, sizes and the kvm_run mapping are the shim's",
  ignore: !hasKvm,
  fn() {
    const kvm = shim.open("/dev/kvm");
    const vm = shim[IOCTL](kvm, KVM_CREATE_VM, null);
    assert.ok(vm >= 0, `KVM_CREATE_VM: ${vm}`);
    const size = shim[IOCTL](kvm, KVM_GET_VCPU_MMAP_SIZE, null);
    const memory = shim.alignedBuffer(0x10000);
    try {
      refused(() => shim[IOCTL](vm, KVM_GET_API_VERSION, null), "EPERM"); // the system fd's request
      // A user pointer the caller wrote itself is refused: only the shim stores one, of a buffer it was given.
      const region = KvmUserspaceMemoryRegion.buffer().setU64("memory_size", 0x10000);
      region.view.setBigUint64(24, 0x7f00_0000_0000n, true);
      refused(() => shim[IOCTL](vm, KVM_SET_USER_MEMORY_REGION, region.bytes), "EPERM");
      region.view.setBigUint64(24, 0n, true);
      // memory_size larger than the buffer given: the kernel would map what lies past it.
      region.setU64("memory_size", 0x20000);
      refused(() => shim[IOCTL_WITH_POINTER](vm, KVM_SET_USER_MEMORY_REGION, region.bytes, 24, memory), "EPERM");
      // The pointer at another offset than the request's pointer field.
      region.setU64("memory_size", 0x10000);
      refused(() => shim[IOCTL_WITH_POINTER](vm, KVM_SET_USER_MEMORY_REGION, region.bytes, 8, memory), "EPERM");
      // An argument shorter than the struct the kernel reads and writes.
      refused(() => shim[IOCTL](vm, KVM_SET_USER_MEMORY_REGION, new Uint8Array(16)), "EPERM");
      assert.equal(shim[IOCTL_WITH_POINTER](vm, KVM_SET_USER_MEMORY_REGION, region.bytes, 24, memory), 0);
      // The address the shim stored never reaches JavaScript.
      assert.equal(region.view.getBigUint64(24, true), 0n);

      const vcpu = shim[IOCTL](vm, KVM_CREATE_VCPU, null);
      assert.ok(vcpu >= 0, `KVM_CREATE_VCPU: ${vcpu}`);
      const run = shim.sharedAlignedBuffer(size);
      refused(() => shim.mapFixed(shim.sharedAlignedBuffer(size + 4096), vcpu, 0), "EPERM"); // not the kernel's size
      refused(() => shim.mapFixed(run, vcpu, 1), "EPERM"); // not offset 0
      refused(() => shim.mapFixed(run, vm, 0), "EPERM"); // not a vCPU
      assert.equal(shim.mapFixed(shim.sharedAlignedBuffer(size + 4096).subarray(8, 8 + size), vcpu, 0), -EINVAL);
      assert.equal(shim.mapFixed(run, vcpu, 0), 0);
      refused(() => shim.unmapFixed(run.subarray(0, 4096)), "EPERM"); // only exactly the mapped window
      refused(() => shim.unmapFixed(memory.subarray(0, size)), "EPERM");
      assert.equal(shim.unmapFixed(run), 0);
      refused(() => shim.unmapFixed(run), "EPERM"); // once
      assert.equal(shim.close(vcpu), 0);
    } finally {
      shim.close(vm);
      shim.close(kvm);
    }
  },
});

Deno.test("shim: a closed library refuses calls instead of crashing; closing twice is harmless", async () => {
  const other = await NativeShim.load(shim.path);
  other[Symbol.dispose]();
  assert.ok(other.closed);
  assert.throws(() => other.open("/dev/kvm"), ShimClosedError);
  other[Symbol.dispose]();
  // The first handle is unaffected: dlopen handles are reference-counted.
  assert.equal(shim.testEchoRequest(7), 7);
});

Deno.test("shim: request numbers above 2^31 cross FFI unchanged", () => {
  for (const request of [KVM_GET_MSR_INDEX_LIST, 0xffff_ffff, 0x8000_0000, 0x2000_3b8d]) {
    assert.equal(shim.testEchoRequest(request), request);
  }
});

Deno.test("shim: aligned windows start on the boundary the shim computes, up to 2 MiB", () => {
  for (const align of [8, 4096, 65536, 2 << 20]) {
    const buf = shim.alignedBuffer(100, align);
    assert.equal(buf.byteLength, 100);
    assert.equal(shim.alignOffset(buf, align), 0);
  }
  assert.equal(shim.alignOffset(new Uint8Array(8), 3), -EINVAL);
  assert.equal(shim.alignOffset(new Uint8Array(8), 4 << 20), -EINVAL);
  assert.throws(() => shim.alignedBuffer(8, 0), RangeError);
});

Deno.test("shim: a kick interrupts a registered thread's blocking call with EINTR; an unregistered thread is refused", async () => {
  // Not registered: neither this thread nor a made-up id.
  refused(() => shim.kick(1), "EPERM", /^kick thread 1$/);
  refused(() => shim.kick(Deno.pid), "EPERM");
  const source = `
    import { NativeShim } from ${JSON.stringify(new URL("../../ffi/native.ts", import.meta.url).href)};
    self.onmessage = (e) => {
      const s = NativeShim.loadSync(e.data);
      self.postMessage({ tid: s.registerKickTarget() });
      self.postMessage({ result: s.poll(-1, 1, -1) }); // no fd, no timeout: only a signal ends it
      s[Symbol.dispose]();
    };`;
  const url = URL.createObjectURL(new Blob([source], { type: "application/javascript" }));
  const worker = new Worker(url, { type: "module" });
  try {
    const result = await new Promise<number>((resolve) => {
      let timer: ReturnType<typeof setInterval> | undefined;
      worker.onmessage = (e) => {
        if (e.data.tid) {
          assert.notEqual(e.data.tid, Deno.pid);
          // The signal may land before poll starts: kick until it returns.
          timer = setInterval(() => shim.kick(e.data.tid), 20);
        } else {
          clearInterval(timer);
          resolve(e.data.result);
        }
      };
      worker.postMessage(shim.path);
    });
    assert.equal(result, -EINTR);
  } finally {
    worker.terminate();
    URL.revokeObjectURL(url);
  }
});

Deno.test("shim: a deadline timer interrupts the calling thread's blocking call with EINTR; disarmed, it does not", () => {
  // poll() of no fd (-1 is ignored) just sleeps for its timeout and returns 0, unless a signal cuts it short (-EINTR).
  assert.equal(shim.deadlineTimer(50), 0);
  assert.equal(shim.poll(-1, POLL.IN, 2000), -EINTR);
  // Armed then disarmed: the poll runs to its own timeout (0 = nothing ready).
  assert.equal(shim.deadlineTimer(20), 0);
  assert.equal(shim.deadlineTimer(0), 0);
  assert.equal(shim.poll(-1, POLL.IN, 100), 0);
});

Deno.test("shim: nonblocking poll runs off the event loop; a refusal rejects the promise", async () => {
  assert.equal(await shim.pollAsync(-1, POLL.IN, 10), 0);
  await assert.rejects(shim.pollAsync(0, POLL.IN, 10), ShimRefusedError);
});

Deno.test("shim: host discovery reads only fixed places; bad selectors are EINVAL", () => {
  assert.equal(shim.hostList(3), -EINVAL);
  assert.equal(shim.cdevAttr(0, 6), -EINVAL);
  assert.equal(typeof shim.hasIommufd(), "boolean");
  const cdevs = shim.hostList(0);
  if (Array.isArray(cdevs)) { for (const c of cdevs) assert.match(c, /^vfio(0|[1-9][0-9]*)$/); }
});
