// IOMMU_IOAS_MAP_FILE on the kernel: guest RAM in a memfd mapped by file, checked through the selftest's access path
// (reads and writes at the IOVA) and its mock IOVA check; and the broker path — the VMM's memfd handed over the
// broker's memfd socket (SCM_RIGHTS in the shim), mapped by the broker, unmapped when the client goes.
import assert from "node:assert/strict";
import { Broker, BrokerClient, BrokerError } from "../lib/broker/mod.ts";
import { Memfd, MemfdChannel, MockAccess, MockDevice, mockMapTranslatesTo } from "../lib/kernel/mod.ts";
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
    const broker = new Broker(host, { memfdSocket: `${dir}/vm.memfd.sock` });
    const listener = Deno.listen({ transport: "unix", path: `${dir}/vm.sock` });
    const served = broker.serve(listener);
    try {
      // The VMM side: its own RAM memfd, a frame connection and a memfd connection.
      using ram = Memfd.create(shim, "vmm-ram", 2 * 4096);
      using view = ram.map();
      view.bytes.set(pattern(ram.size, 3));
      const client = await BrokerClient.connect(`${dir}/vm.sock`);
      using channel = MemfdChannel.connect(shim, `${dir}/vm.memfd.sock`);
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
