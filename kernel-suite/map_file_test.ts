// IOMMU_IOAS_MAP_FILE on the kernel: guest RAM in a memfd mapped by file, checked through the selftest's access path
// (reads and writes at the IOVA) and its mock IOVA check; and the broker path — the VMM's memfd handed over the
// broker's memfd socket (SCM_RIGHTS in the shim), mapped by the broker, unmapped when the client goes.
import assert from "node:assert/strict";
import { Broker, BrokerClient, BrokerError } from "../lib/broker/mod.ts";
import { Memfd, MemfdChannel, MemfdListener, MockAccess, MockDevice, mockMapTranslatesTo } from "../lib/kernel/mod.ts";
import { ShimRefusedError } from "../ffi/native.ts";
import { RelayHost } from "../lib/plugin/plugin.ts";
import { MockConstants } from "../lib/uapi/mod.ts";
import { kernelTest, openIommufd, shim } from "./harness.ts";

const BASE = MockConstants.values.MOCK_APERTURE_START;

function pattern(length: number, seed: number): Uint8Array {
  const b = new Uint8Array(length);
  for (let i = 0; i < length; i++) b[i] = (i * 31 + seed) & 0xff;
  return b;
}

kernelTest("map-file: a memfd mapped by file is the IOVA's memory, through the access path and the mock's check", [
  "ioas-map-file",
  "selftest",
], () => {
  using iommufd = openIommufd();
  using ioas = iommufd.allocIoas();
  using dev = MockDevice.create(iommufd, ioas.id);
  using ram = Memfd.create(shim, "guest-ram", 4 * 4096);
  using view = ram.map();
  view.bytes.set(pattern(ram.size, 7));
  assert.equal(ioas.mapFile(ram, { iova: BASE }), BASE);
  // The mock domain translates each IOVA to the memfd's pages (MD_CHECK_MAP compares with our view of them).
  assert.equal(mockMapTranslatesTo(iommufd, dev.hwptId, BASE, view.bytes), true);
  assert.equal(mockMapTranslatesTo(iommufd, dev.hwptId, BASE, shim.alignedBuffer(ram.size)), false, "not other pages");
  using access = MockAccess.create(iommufd, ioas.id);
  const read = new Uint8Array(4096);
  assert.equal(access.rw(BASE + 4096, read, false), 0);
  assert.deepEqual(read, view.bytes.subarray(4096, 8192));
  assert.equal(access.rw(BASE + 3 * 4096 + 8, new Uint8Array([0xee, 0xef]), true), 0);
  assert.deepEqual(
    [...view.bytes.subarray(3 * 4096 + 8, 3 * 4096 + 10)],
    [0xee, 0xef],
    "a DMA write lands in the memfd",
  );
  // A part of the file, read-only.
  assert.equal(
    ioas.mapFile(ram, { iova: BASE + 0x10_0000, start: 4096, length: 4096, writable: false }),
    BASE + 0x10_0000,
  );
  assert.equal(access.rw(BASE + 0x10_0000, read, false), 0);
  assert.deepEqual(read, view.bytes.subarray(4096, 8192));
  assert.equal(access.rw(BASE + 0x10_0000, new Uint8Array(1), true), -1, "writing a read-only file mapping: EPERM");
  ioas.unmap(0, Number.MAX_SAFE_INTEGER);
});

kernelTest(
  "map-file: the broker maps the VMM's memfd handed over its memfd socket, and unmaps it when the client goes",
  [
    "ioas-map-file",
    "selftest",
  ],
  async () => {
    const dir = await Deno.makeTempDir({ prefix: "iommu-relay-mapfile-" });
    using host = RelayHost.kernel(shim);
    const broker = new Broker(host, { memfdSocket: `vm-${Deno.pid}.memfd.sock` });
    const listener = Deno.listen({ transport: "unix", path: `${dir}/vm.sock` });
    const served = broker.serve(listener);
    try {
      // The VMM side: its own RAM memfd, a frame connection and a memfd connection.
      using ram = Memfd.create(shim, "vmm-ram", 2 * 4096);
      using view = ram.map();
      view.bytes.set(pattern(ram.size, 3));
      const client = await BrokerClient.connect(`${dir}/vm.sock`);
      using channel = MemfdChannel.connect(shim, `vm-${Deno.pid}.memfd.sock`);
      assert.deepEqual(await client.mapMemory(channel, ram, BASE), { iova: BASE, length: 2 * 4096 });
      // The broker's IOAS now maps the VMM's pages: DMA through it reads what the VMM wrote, and the reverse.
      using access = MockAccess.create(host.iommufd!, host.ioas!.id);
      const read = new Uint8Array(2 * 4096);
      assert.equal(access.rw(BASE, read, false), 0);
      assert.deepEqual(read, view.bytes);
      assert.equal(access.rw(BASE + 5, new Uint8Array([0x42]), true), 0);
      assert.equal(view.bytes[5], 0x42);
      // A token nobody sent a memfd with.
      await assert.rejects(
        client.call(8, 0, new Uint8Array(24)),
        (e) => e instanceof BrokerError && e.errno === 2,
      );
      await client[Symbol.asyncDispose]();
      // The broker releases the connection's mappings: the IOVA is empty again.
      for (let i = 0; i < 100 && broker.liveConnections > 0; i++) await new Promise((r) => setTimeout(r, 20));
      assert.equal(broker.liveConnections, 0);
      assert.notEqual(access.rw(BASE, read, false), 0, "unmapped with the connection");
    } finally {
      listener.close();
      await served;
      broker.closeMemfdSocket();
      await Deno.remove(dir, { recursive: true });
    }
  },
);

kernelTest("map-file: a broker without a memfd socket answers MAP_MEMORY with EOPNOTSUPP", ["selftest"], async () => {
  const dir = await Deno.makeTempDir({ prefix: "iommu-relay-mapfile-" });
  using host = RelayHost.kernel(shim);
  const broker = new Broker(host);
  const listener = Deno.listen({ transport: "unix", path: `${dir}/vm.sock` });
  const served = broker.serve(listener);
  try {
    const client = await BrokerClient.connect(`${dir}/vm.sock`);
    await assert.rejects(client.call(8, 0, new Uint8Array(24)), (e) => e instanceof BrokerError && e.errno === 95);
    await client[Symbol.asyncDispose]();
  } finally {
    listener.close();
    await served;
    await Deno.remove(dir, { recursive: true });
  }
});

/**
 * A peer outside the shim (libc through FFI, as any process could be): makes a memfd of `size` bytes sealed to its size
 * with final seals (what the shim takes), plus F_SEAL_WRITE when `writeSealed`, and sends it over the fd-passing socket
 * at `path` — reopened read-only through /proc when `readOnly`.
 */
function sendForeignMemfd(path: string, size: number, opts: { writeSealed?: boolean; readOnly?: boolean }): void {
  const libc = Deno.dlopen("libc.so.6", {
    memfd_create: { parameters: ["buffer", "u32"], result: "i32" },
    ftruncate: { parameters: ["i32", "i64"], result: "i32" },
    fcntl: { parameters: ["i32", "i32", "i32"], result: "i32" },
    open: { parameters: ["buffer", "i32", "i32"], result: "i32" },
    socket: { parameters: ["i32", "i32", "i32"], result: "i32" },
    connect: { parameters: ["i32", "buffer", "u32"], result: "i32" },
    sendmsg: { parameters: ["i32", "buffer", "i32"], result: "isize" },
    close: { parameters: ["i32"], result: "i32" },
  });
  const c = libc.symbols, text = (s: string) => new TextEncoder().encode(`${s}\0`);
  const address = (b: Uint8Array) => BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(b)));
  try {
    const memfd = c.memfd_create(text("foreign"), 2 /* MFD_ALLOW_SEALING */);
    // F_ADD_SEALS 1033: F_SEAL_SEAL 1 | F_SEAL_SHRINK 2 | F_SEAL_GROW 4, F_SEAL_WRITE 8
    assert.ok(memfd >= 0 && c.ftruncate(memfd, BigInt(size)) === 0);
    assert.equal(c.fcntl(memfd, 1033, 2 | 4 | (opts.writeSealed ? 8 : 0) | 1), 0, "sealed");
    const fd = opts.readOnly ? c.open(text(`/proc/self/fd/${memfd}`), 0, /* O_RDONLY */ 0) : memfd;
    const sock = c.socket(1, /* AF_UNIX */ 5, /* SOCK_SEQPACKET */ 0);
    const sun = new Uint8Array(110);
    sun[0] = 1;
    sun.set(new TextEncoder().encode(path), 2);
    assert.equal(c.connect(sock, sun, sun.length), 0, "connected");
    const byte = new Uint8Array([1]), iov = new Uint8Array(16), control = new Uint8Array(24), msg = new Uint8Array(56);
    new DataView(iov.buffer).setBigUint64(0, address(byte), true);
    new DataView(iov.buffer).setBigUint64(8, 1n, true);
    const cv = new DataView(control.buffer); // cmsghdr {len 20, SOL_SOCKET, SCM_RIGHTS, the fd}
    cv.setBigUint64(0, 20n, true);
    cv.setInt32(8, 1, true);
    cv.setInt32(12, 1, true);
    cv.setInt32(16, fd, true);
    const mv = new DataView(msg.buffer); // msghdr {name 0, iov 16, iovlen 24, control 32, controllen 40}
    mv.setBigUint64(16, address(iov), true);
    mv.setBigUint64(24, 1n, true);
    mv.setBigUint64(32, address(control), true);
    mv.setBigUint64(40, 24n, true);
    assert.equal(c.sendmsg(sock, msg, 0), 1n, "sent");
    for (const f of new Set([fd, memfd, sock])) c.close(f);
  } finally {
    libc.close();
  }
}

kernelTest(
  "map-file: the shim maps a memfd by file only inside it, writable only through a read-write fd of an unsealed file",
  ["ioas-map-file"],
  async () => {
    // The kernel pins a file's pages without asking how its fd was opened or whether it is sealed against writes, and
    // pins them only once a domain is attached: on an IOAS without devices, a mapping past the file's end is taken.
    const dir = await Deno.makeTempDir({ prefix: "iommu-relay-mapfile-" });
    try {
      using iommufd = openIommufd();
      using ioas = iommufd.allocIoas();
      using ram = Memfd.create(shim, "ram", 2 * 4096);
      const refused = (fn: () => unknown, what: string) =>
        assert.throws(fn, (e) => e instanceof ShimRefusedError && e.errnoName === "EPERM", what);
      refused(() => ioas.mapFile(ram, { iova: BASE, length: 4 * 4096 }), "longer than the memfd");
      refused(() => ioas.mapFile(ram, { iova: BASE, start: 2 * 4096, length: 4096 }), "starting at its end");
      refused(() => ioas.mapFile(ram, { iova: BASE, start: 4096, length: 2 ** 52 }), "start + length past it");
      using listener = MemfdListener.listen(shim, `peer-${Deno.pid}.memfd.sock`);
      for (const peer of [{ readOnly: true }, { writeSealed: true }]) {
        sendForeignMemfd(`${shim.fdpassDir()}/peer-${Deno.pid}.memfd.sock`, 4096, peer);
        using channel = await listener.accept();
        using got = (await channel.receive(5000)).memfd;
        refused(() => ioas.mapFile(got, { iova: BASE }), `a writable mapping of ${JSON.stringify(peer)}`);
        assert.equal(ioas.mapFile(got, { iova: BASE, writable: false }), BASE, "read-only is fine");
        ioas.unmap(BASE, 4096);
      }
      assert.equal(ioas.mapFile(ram, { iova: BASE }), BASE, "the whole memfd, writable");
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);

kernelTest(
  "map-file: the broker's guest RAM has one owner at a time, on a whole-broker listener, with a cap on its mappings",
  ["ioas-map-file", "selftest"],
  async () => {
    // The guest-RAM IOAS is every device's stage 2: a second connection mapping there would put its pages under the
    // first one's devices (and reach the first one's pages with its own).
    const dir = await Deno.makeTempDir({ prefix: "iommu-relay-mapfile-" });
    using host = RelayHost.kernel(shim);
    const broker = new Broker(host, {
      memfdSocket: `vm-${Deno.pid}.memfd.sock`,
      limits: { maxMappingsPerConnection: 1, idleMs: 200 },
    });
    const whole = Deno.listen({ transport: "unix", path: `${dir}/vm.sock` });
    const tenant = Deno.listen({ transport: "unix", path: `${dir}/tenant.sock` });
    const served = [broker.serve(whole), broker.serve(tenant, { domains: [7], devices: [] })];
    const errno = (p: Promise<unknown>) => p.then(() => 0, (e) => (e instanceof BrokerError ? e.errno : -1));
    try {
      using ram = Memfd.create(shim, "vmm-ram", 4096);
      using other = Memfd.create(shim, "other-ram", 4096);
      using channel = MemfdChannel.connect(shim, `vm-${Deno.pid}.memfd.sock`);
      const owner = await BrokerClient.connect(`${dir}/vm.sock`);
      const second = await BrokerClient.connect(`${dir}/vm.sock`);
      const scoped = await BrokerClient.connect(`${dir}/tenant.sock`);
      assert.equal(await errno(scoped.mapMemory(channel, other, BASE + 0x10_0000)), 13, "a scoped listener: EACCES");
      assert.deepEqual(await owner.mapMemory(channel, ram, BASE), { iova: BASE, length: 4096 });
      assert.equal(await errno(second.mapMemory(channel, other, BASE + 0x10_0000)), 16, "another connection: EBUSY");
      assert.equal(await errno(owner.mapMemory(channel, other, BASE + 0x10_0000)), 24, "the cap: EMFILE");
      // Silent past the idle time: the two holding nothing are closed; the owner, holding no device but guest RAM,
      // is not (closing it would unmap every device's RAM).
      for (let i = 0; i < 100 && broker.liveConnections > 1; i++) await new Promise((r) => setTimeout(r, 20));
      await new Promise((r) => setTimeout(r, 400));
      assert.equal(broker.liveConnections, 1, "only the owner is left");
      using access = MockAccess.create(host.iommufd!, host.ioas!.id);
      assert.equal(access.rw(BASE, new Uint8Array(8), false), 0, "still mapped after the idle time");
      for (const c of [second, scoped]) await c[Symbol.asyncDispose]().catch(() => {});
      await owner[Symbol.asyncDispose]();
      for (let i = 0; i < 100 && broker.liveConnections > 0; i++) await new Promise((r) => setTimeout(r, 20));
      const next = await BrokerClient.connect(`${dir}/vm.sock`);
      assert.deepEqual(await next.mapMemory(channel, other, BASE), { iova: BASE, length: 4096 }, "free again");
      await next[Symbol.asyncDispose]();
    } finally {
      whole.close();
      tenant.close();
      await Promise.all(served);
      broker.closeMemfdSocket();
      await Deno.remove(dir, { recursive: true });
    }
  },
);
