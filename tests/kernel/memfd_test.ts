// Memfds and their passing (lib/kernel/memfd.ts) and the shim's rules for them (ffi/shim.c): what is created is
// sealed to its size, only memfds travel, anything else a peer sends is closed and refused, and an IOAS_MAP_FILE
// names only a memfd of the table. No /dev/iommu needed: the kernel side is kernel-suite/map_file_test.ts.
import assert from "node:assert/strict";
import { ensureBuilt } from "../../ffi/build.ts";
import { FD_KIND, IOCTL, NativeShim, ShimRefusedError } from "../../ffi/native.ts";
import { Memfd, MemfdChannel, MemfdListener } from "../../lib/kernel/memfd.ts";
import { IOMMU_IOAS_MAP_FILE, IommuIoasMapFile } from "../../lib/uapi/mod.ts";

const shim = await NativeShim.load();
const sender = await ensureBuilt({
  source: new URL("../fixtures/fd_sender.c", import.meta.url),
  flags: ["-O2"],
  prefix: "test-fd-sender",
  file: "fd_sender",
});
let sockets = 0;
/** A fresh socket name (the shim puts it in its own directory); its full path for a peer outside the shim. */
const socketName = () => `t${Deno.pid}-${sockets++}.memfd.sock`;
const fdpassDir = shim.fdpassDir() as string;
const fullPath = (name: string) => `${fdpassDir}/${name}`;

function refusal(fn: () => unknown, errnoName: string): void {
  assert.throws(fn, (e) => e instanceof ShimRefusedError && e.errnoName === errnoName);
}

Deno.test("memfd: created zeroed at its size, mapped windows share its bytes, and the size is sealed", () => {
  using ram = Memfd.create(shim, "ram", 3 * 4096);
  using a = ram.map();
  using b = ram.map(4096, 4096);
  assert.equal(a.bytes.every((x) => x === 0), true);
  a.bytes[4096 + 17] = 0xab;
  assert.equal(b.bytes[17], 0xab, "two mappings of one memfd are the same memory");
  assert.equal(shim.memfdSize(ram.fd), 3 * 4096);
  assert.throws(() => Memfd.create(shim, "odd", 1000), RangeError);
  assert.throws(() => ram.map(0, 4 * 4096), RangeError);
});

Deno.test("memfd: the shim maps only inside the file and only a memfd of its table", () => {
  using ram = Memfd.create(shim, "ram", 4096);
  const window = shim.alignedBuffer(8192);
  refusal(() => shim.mapFixed(window, ram.fd, 0), "EPERM"); // past the end
  refusal(() => shim.mapFixed(window.subarray(0, 4096), ram.fd, 1), "EPERM"); // offset past the end
  refusal(() => shim.mapFixed(window.subarray(0, 4096), 0, 0), "EBADF"); // stdin: not in the table
  refusal(() => shim.memfdSize(0), "EBADF");
});

Deno.test("memfd: IOMMU_IOAS_MAP_FILE names only a memfd of the shim's table (refused before any ioctl)", () => {
  using ram = Memfd.create(shim, "ram", 4096);
  const args = IommuIoasMapFile.buffer().set("fd", 0).setU64("length", 4096);
  // No iommufd here: an fd of the table that is not an iommufd is refused as EPERM, one outside it as EBADF. On an
  // iommufd, the fd inside the struct must be a memfd — checked in tests/sandbox/hostile.ts and kernel-suite.
  refusal(() => shim[IOCTL](ram.fd, IOMMU_IOAS_MAP_FILE.request, args.bytes), "EPERM");
  refusal(() => shim[IOCTL](123456, IOMMU_IOAS_MAP_FILE.request, args.bytes), "EBADF");
  assert.equal(shim.policyAllows(FD_KIND.IOMMUFD, IOMMU_IOAS_MAP_FILE.request), true);
  assert.equal(shim.policyAllows(FD_KIND.MEMFD, IOMMU_IOAS_MAP_FILE.request), false);
});

Deno.test("memfd passing: a memfd and its payload cross the socket; the receiver's copy maps the same pages", async () => {
  const path = socketName();
  using listener = MemfdListener.listen(shim, path);
  using client = MemfdChannel.connect(shim, path);
  using server = await listener.accept();
  using ram = Memfd.create(shim, "guest", 2 * 4096);
  using mine = ram.map();
  mine.bytes.set([1, 2, 3], 4096);
  client.send(ram, new TextEncoder().encode("slot 0"));
  const got = await server.receive();
  using theirs = got.memfd;
  using view = theirs.map();
  assert.equal(new TextDecoder().decode(got.payload), "slot 0");
  assert.equal(theirs.size, 2 * 4096);
  assert.deepEqual([...view.bytes.subarray(4096, 4099)], [1, 2, 3]);
  view.bytes[0] = 9;
  assert.equal(mine.bytes[0], 9, "the received fd is the same file, not a copy");
  assert.equal(theirs.fd !== ram.fd, true);
});

Deno.test("memfd passing: the shim sends nothing but memfds, binds only names of its own directory, never a live one", () => {
  const path = socketName();
  using listener = MemfdListener.listen(shim, path);
  using client = MemfdChannel.connect(shim, path);
  refusal(() => shim.fdpassSend(client.fd, 0, new Uint8Array(0)), "EBADF"); // stdin is not in the table
  refusal(() => shim.fdpassSend(client.fd, client.fd, new Uint8Array(0)), "EPERM"); // a socket is not a memfd
  // A caller names a socket; it never picks a directory.
  for (const name of ["plain.sock", "/tmp/x.memfd.sock", "../x.memfd.sock", "a/b.memfd.sock", ".x.memfd.sock"]) {
    refusal(() => shim.fdpassListen(name), "EACCES");
  }
  refusal(() => shim.fdpassListen(`a b.memfd.sock`), "EACCES");
  refusal(() => shim.fdpassListen(`${"x".repeat(60)}.memfd.sock`), "EACCES");
  refusal(() => shim.fdpassConnect("/etc/passwd"), "EACCES");
  const st = Deno.lstatSync(fdpassDir);
  assert.ok(st.isDirectory && (st.mode! & 0o777) === 0o700, `${fdpassDir} is a private directory`);
  assert.ok(Deno.lstatSync(fullPath(path)).isSocket, "the socket file is in it");
  assert.equal(shim.fdpassListen(path), -98, "a name another listener holds is EADDRINUSE");
  using ram = Memfd.create(shim, "r", 4096);
  assert.throws(() => client.send(ram, new Uint8Array(257)), /EINVAL/);
  refusal(() => shim.fdpassAccept(client.fd), "EPERM");
  refusal(() => shim.fdpassRecv(listener.fd), "EPERM");
});

for (const what of ["file", "pipe", "two", "none", "unsealed", "unfinal", "opath"] as const) {
  Deno.test(`memfd passing: a peer sending ${what} instead of one memfd is refused, and what it sent is closed`, async () => {
    const path = socketName();
    using listener = MemfdListener.listen(shim, path);
    const run = await new Deno.Command(sender, { args: [fullPath(path), what], stdout: "piped" }).output();
    assert.equal(run.code, 0, `the sender ran (code ${run.code})`);
    const sent = new TextDecoder().decode(run.stdout).split("\n").filter((l) => l !== "");
    assert.equal(sent.length, { file: 1, pipe: 1, two: 2, none: 0, unsealed: 1, unfinal: 1, opath: 1 }[what]);
    using server = await listener.accept();
    await shim.pollAsync(server.fd, 1, 5000);
    refusal(() => shim.fdpassRecv(server.fd), "EACCES");
    // What this process holds now, as the kernel names it: none of what the message carried may be there.
    const fds = await new Deno.Command("ls", { args: ["-l", `/proc/${Deno.pid}/fd`], stdout: "piped" }).output();
    const listing = new TextDecoder().decode(fds.stdout);
    assert.ok(listing.includes(`/proc/${Deno.pid}/fd`) || listing.includes("->"), "the listing is of fds");
    for (const target of sent) assert.ok(!listing.includes(target), `${target} is still open here:\n${listing}`);
  });
}

Deno.test("memfd passing: another process's memfd sealed to its size with final seals is taken and maps", async () => {
  const path = socketName();
  using listener = MemfdListener.listen(shim, path);
  const run = await new Deno.Command(sender, { args: [fullPath(path), "sealed"], stdout: "piped" }).output();
  assert.equal(run.code, 0, `the sender ran (code ${run.code})`);
  using server = await listener.accept();
  const got = await server.receive(5000);
  using memfd = got.memfd;
  using view = memfd.map();
  assert.deepEqual([memfd.size, view.bytes.length], [4096, 4096]);
});

Deno.test("memfd passing: a name whose listener is gone can be listened on again; the directory must stay private", () => {
  const name = socketName();
  MemfdListener.listen(shim, name)[Symbol.dispose]();
  assert.ok(Deno.lstatSync(fullPath(name)).isSocket, "the socket file stayed");
  using again = MemfdListener.listen(shim, name);
  using client = MemfdChannel.connect(shim, name);
  assert.ok(client.fd >= 0 && again.fd >= 0);
  // Opened to the group, the directory is refused until it is private again.
  Deno.chmodSync(fdpassDir, 0o750);
  try {
    refusal(() => shim.fdpassListen(socketName()), "EACCES");
  } finally {
    Deno.chmodSync(fdpassDir, 0o700);
  }
});

Deno.test("memfd passing: receive reports a closed peer and a timeout as typed errors", async () => {
  const path = socketName();
  using listener = MemfdListener.listen(shim, path);
  const client = MemfdChannel.connect(shim, path);
  using server = await listener.accept();
  await assert.rejects(server.receive(30), /nothing within 30 ms/);
  client[Symbol.dispose]();
  await assert.rejects(server.receive(2000), /the peer closed/);
});

globalThis.addEventListener("unload", () => {
  for (let i = 0; i < sockets; i++) {
    try {
      Deno.removeSync(fullPath(`t${Deno.pid}-${i}.memfd.sock`));
    } catch { /* never made (a refused name) */ }
  }
  shim[Symbol.dispose]();
});
