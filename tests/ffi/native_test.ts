import assert from "node:assert/strict";
import {
  IOCTL,
  IOCTL_LOOP,
  IOCTL_WITH_POINTER,
  NativeShim,
  NO_POINTER,
  POLL,
  ShimClosedError,
} from "../../ffi/native.ts";

const ENOENT = 2, EBADF = 9, EINVAL = 22, ENOTTY = 25, E2BIG = 7;
const TCGETS = 0x5401;
const KVM_GET_API_VERSION = 0xae00;
const KVM_CHECK_EXTENSION = 0xae03;
const KVM_GET_MSR_INDEX_LIST = 0xc004ae02; // _IOWR: above 2^31
const shim = await NativeShim.load();
// Opened through the shim, as the library does: Deno's own fs APIs (even Deno.statSync) need --allow-all for a device
// node, so they cannot tell whether /dev/kvm is there.
const kvmProbe = shim.open("/dev/kvm");
const hasKvm = kvmProbe >= 0;
if (hasKvm) shim.close(kvmProbe);
const noKvm = `skipped: /dev/kvm does not open on this machine (errno ${-kvmProbe})`;

Deno.test("shim: open of a missing path is -ENOENT", () => {
  assert.equal(shim.open("/nonexistent/iommu-relay"), -ENOENT);
});

Deno.test("shim: ioctl on /dev/null is -ENOTTY, and on a closed fd -EBADF", () => {
  const fd = shim.open("/dev/null");
  assert.ok(fd >= 0);
  assert.equal(shim[IOCTL](fd, TCGETS, new Uint8Array(64)), -ENOTTY);
  assert.equal(shim.close(fd), 0);
  assert.equal(shim[IOCTL](fd, TCGETS, new Uint8Array(64)), -EBADF);
  assert.equal(shim.close(fd), -EBADF);
});

Deno.test({
  name: "shim: KVM_GET_API_VERSION on /dev/kvm is 12",
  ignore: !hasKvm,
  fn() {
    const fd = shim.open("/dev/kvm");
    assert.ok(fd >= 0, `open /dev/kvm: ${fd}`);
    try {
      assert.equal(shim[IOCTL](fd, KVM_GET_API_VERSION, null), 12);
      assert.equal(shim[IOCTL_LOOP](fd, KVM_CHECK_EXTENSION, null, NO_POINTER, null, 100), 0);
    } finally {
      shim.close(fd);
    }
  },
});
if (!hasKvm) console.log(`KVM tests ${noKvm}`);

Deno.test({
  name: "shim: a request above 2^31 reaches the kernel intact (KVM_GET_MSR_INDEX_LIST writes nmsrs back)",
  ignore: !hasKvm,
  fn() {
    const fd = shim.open("/dev/kvm");
    try {
      const arg = new Uint8Array(4); // nmsrs = 0: the kernel answers E2BIG and stores the real count
      assert.equal(shim[IOCTL](fd, KVM_GET_MSR_INDEX_LIST, arg), -E2BIG);
      assert.ok(new DataView(arg.buffer).getUint32(0, true) > 0);
    } finally {
      shim.close(fd);
    }
  },
});

Deno.test("shim: the pointer-patching ioctl stores the second buffer's address at the offset", () => {
  const fd = shim.open("/dev/null");
  try {
    const arg = new Uint8Array(32).fill(0xee);
    const second = new Uint8Array(16);
    assert.equal(shim[IOCTL_WITH_POINTER](fd, TCGETS, arg, 8, second), -ENOTTY);
    const expected = new Uint8Array(8);
    shim.testAddressOf(second, expected);
    assert.notDeepEqual(expected, new Uint8Array(8));
    assert.deepEqual(arg.subarray(8, 16), expected);
    assert.deepEqual(arg.subarray(0, 8), new Uint8Array(8).fill(0xee)); // nothing else touched
    assert.deepEqual(arg.subarray(16), new Uint8Array(16).fill(0xee));
    // A pointer that would not fit is refused before any store or syscall.
    assert.equal(shim[IOCTL_WITH_POINTER](fd, TCGETS, arg, 25, second), -EINVAL);
    assert.equal(shim[IOCTL_LOOP](fd, TCGETS, arg, 30, second, 1), -EINVAL);
  } finally {
    shim.close(fd);
  }
});

Deno.test("shim: read, write and poll on fds", () => {
  const fd = shim.open("/dev/zero");
  try {
    const buf = new Uint8Array(40).fill(7);
    assert.equal(shim.read(fd, buf), 40);
    assert.deepEqual(buf, new Uint8Array(40));
    assert.equal(shim.write(fd, buf), 40);
    assert.equal(shim.poll(fd, POLL.IN, 0) & POLL.IN, POLL.IN);
  } finally {
    shim.close(fd);
  }
  assert.equal(shim.read(-1, new Uint8Array(1)), -EBADF);
});

Deno.test("shim: nonblocking poll runs off the event loop and returns revents", async () => {
  const fd = shim.open("/dev/null");
  try {
    assert.equal((await shim.pollAsync(fd, POLL.OUT, 100)) & POLL.OUT, POLL.OUT);
  } finally {
    shim.close(fd);
  }
});

Deno.test("shim: the in-process C loop reports a failing ioctl", () => {
  const fd = shim.open("/dev/null");
  try {
    assert.equal(shim[IOCTL_LOOP](fd, TCGETS, new Uint8Array(64), NO_POINTER, null, 10), -ENOTTY);
    assert.equal(shim[IOCTL_LOOP](fd, TCGETS, null, NO_POINTER, null, 0), 0);
  } finally {
    shim.close(fd);
  }
});

Deno.test("shim: a closed library refuses calls instead of crashing; closing twice is harmless", async () => {
  const other = await NativeShim.load(shim.path);
  other[Symbol.dispose]();
  assert.ok(other.closed);
  assert.throws(() => other.open("/dev/null"), ShimClosedError);
  other[Symbol.dispose]();
  // The first handle is unaffected: dlopen handles are reference-counted.
  assert.ok(shim.open("/dev/null") >= 0);
});

Deno.test("shim: a path with an embedded NUL is refused, not truncated", () => {
  assert.equal(shim.open("/dev/null\0/etc/shadow"), -EINVAL);
});

Deno.test("shim: request numbers above 2^31 cross FFI unchanged", () => {
  const out = new Uint8Array(4);
  for (const request of [KVM_GET_MSR_INDEX_LIST, 0xffff_ffff, 0x8000_0000, 0x2000_3b8d]) {
    shim.testEchoRequest(request, out);
    assert.equal(new DataView(out.buffer).getUint32(0, true), request);
  }
});

Deno.test("shim: aligned windows start on the boundary the shim computes", () => {
  for (const align of [8, 4096, 65536]) {
    const buf = shim.alignedBuffer(100, align);
    assert.equal(buf.byteLength, 100);
    assert.equal(shim.alignOffset(buf, align), 0);
  }
  assert.equal(shim.alignOffset(new Uint8Array(8), 3), -EINVAL);
  assert.throws(() => shim.alignedBuffer(8, 0), RangeError);
});

Deno.test("shim: mapFixed puts a file's pages over a shared window, unmapFixed gives zeroed memory back", async () => {
  const file = await Deno.makeTempFile();
  try {
    await Deno.writeFile(file, new Uint8Array(8192).fill(7));
    const fd = shim.open(file);
    assert.ok(fd >= 0);
    const window = shim.sharedAlignedBuffer(8192);
    assert.ok(window.buffer instanceof SharedArrayBuffer);
    assert.equal(shim.mapFixed(window, fd, 0), 0);
    assert.deepEqual([window[0], window[8191]], [7, 7]);
    window[5] = 42; // MAP_SHARED: the write reaches the file
    assert.equal(shim.unmapFixed(window), 0);
    assert.deepEqual([window[0], window[5]], [0, 0]);
    shim.close(fd);
    assert.equal((await Deno.readFile(file))[5], 42);
    // Misaligned or partial-page windows are refused before mmap.
    assert.equal(shim.mapFixed(window.subarray(1, 4097), fd, 0), -EINVAL);
    assert.equal(shim.mapFixed(window.subarray(0, 100), fd, 0), -EINVAL);
    assert.equal(shim.unmapFixed(window.subarray(8, 4104)), -EINVAL);
  } finally {
    await Deno.remove(file);
  }
});

Deno.test("shim: a kick interrupts a blocking call in another thread with EINTR", async () => {
  assert.equal(shim.kickSetup(10), 0);
  const source = `
    import { NativeShim } from ${JSON.stringify(new URL("../../ffi/native.ts", import.meta.url).href)};
    self.onmessage = (e) => {
      const s = NativeShim.loadSync(e.data);
      self.postMessage({ tid: s.gettid() });
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
          assert.notEqual(e.data.tid, shim.gettid());
          // The signal may land before poll starts: kick until it returns.
          timer = setInterval(() => shim.kick(e.data.tid, 10), 20);
        } else {
          clearInterval(timer);
          resolve(e.data.result);
        }
      };
      worker.postMessage(shim.path);
    });
    assert.equal(result, -4); // EINTR
  } finally {
    worker.terminate();
    URL.revokeObjectURL(url);
  }
});

Deno.test("shim: readlink, readSmallFile and listDir read what Deno's own APIs would need -A for", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/vendor`, "0x1234\n");
    await Deno.symlink("../../devices/0000:00:03.0", `${dir}/device`);
    await Deno.mkdir(`${dir}/sub`);
    assert.equal(shim.readSmallFile(`${dir}/vendor`), "0x1234\n");
    assert.equal(shim.readlink(`${dir}/device`), "../../devices/0000:00:03.0");
    assert.deepEqual((shim.listDir(dir) as string[]).toSorted(), ["device", "sub", "vendor"]);
    assert.deepEqual(shim.listDir(`${dir}/sub`), []);
    // Errors come back as -errno, never as an exception or a truncated answer.
    assert.equal(shim.readSmallFile(`${dir}/vendor`, 3), -27); // EFBIG
    assert.equal(shim.readSmallFile(`${dir}/missing`), -2);
    assert.equal(shim.readlink(`${dir}/vendor`), -EINVAL); // not a link
    assert.equal(shim.listDir(`${dir}/vendor`), -20); // ENOTDIR
    assert.equal(shim.readSmallFile(`${dir}/vendor\0x`), -EINVAL);
    assert.equal(shim.readSmallFile(`${dir}/sub`), -21); // EISDIR
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("shim: a deadline timer interrupts the calling thread's blocking call with EINTR; disarmed, it does not", () => {
  const SIGUSR1 = 10, EINTR = 4;
  assert.equal(shim.kickSetup(SIGUSR1), 0);
  // poll() of no fd (-1 is ignored) just sleeps for its timeout and returns 0, unless a signal cuts it short (-EINTR).
  assert.equal(shim.deadlineTimer(SIGUSR1, 50), 0);
  assert.equal(shim.poll(-1, POLL.IN, 2000), -EINTR);
  // Armed then disarmed: the poll runs to its own timeout (0 = nothing ready).
  assert.equal(shim.deadlineTimer(SIGUSR1, 20), 0);
  assert.equal(shim.deadlineTimer(SIGUSR1, 0), 0);
  assert.equal(shim.poll(-1, POLL.IN, 100), 0);
});
