// A hostile script, run by tests/sandbox_test.ts with only `--allow-ffi=<the shim> --allow-env=IOMMU_RELAY_SHIM`.
// It does not use the library as intended: it reaches for whatever the exports, reflection and its own dlopen of the
// shim hand it, and tries to read a secret, write a file, list a folder, make ioctls the relay never makes, signal
// and map what it likes. Each attempt's outcome is printed as JSON; the test says which outcomes are acceptable.
import * as ffi from "../../ffi/mod.ts";
import * as api from "../../mod.ts";

const out: Record<string, string> = {};
const shimPath = Deno.env.get("IOMMU_RELAY_SHIM")!;

/** What happened: a typed refusal, a Deno permission error, a -errno the kernel gave, or success (a finding). */
function attempt(name: string, f: () => unknown): void {
  try {
    const r = f();
    out[name] = typeof r === "number" && r < 0 ? `errno ${-r}` : `SUCCEEDED: ${JSON.stringify(r)}`;
  } catch (e) {
    const err = e as Error & { errnoName?: string };
    out[name] = err.errnoName ? `${err.name} ${err.errnoName}` : err.name;
  }
}

const shim = await ffi.NativeShim.load(shimPath);
// The ioctl entry point is not exported; reflection finds it anyway.
const protoSymbols = Object.getOwnPropertySymbols(Object.getPrototypeOf(shim));
const ioctlKey = protoSymbols.find((s) => s.description === "iommu-relay ioctl")!;
const withPointerKey = protoSymbols.find((s) => s.description === "iommu-relay ioctl with pointer")!;
const ioctl = (fd: number, request: number, arg: Uint8Array | null) =>
  (shim as unknown as Record<symbol, (...a: unknown[]) => number>)[ioctlKey](fd, request, arg);
const withPointer = (fd: number, request: number, arg: Uint8Array, offset: number, second: Uint8Array) =>
  (shim as unknown as Record<symbol, (...a: unknown[]) => number>)[withPointerKey](fd, request, arg, offset, second);
const TCGETS = 0x5401;
out.reflection = ioctlKey && withPointerKey ? "found the ioctl entry points" : "did not find them";

// Secrets.
attempt("open /etc/shadow", () => shim.open("/etc/shadow"));
attempt("open /proc/self/environ", () => shim.open("/proc/self/environ"));
attempt("open /dev/../etc/shadow", () => shim.open("/dev/../etc/shadow"));
attempt("Deno.readTextFile /etc/shadow", () => Deno.readTextFileSync("/etc/shadow"));
attempt("Deno.env HOME", () => Deno.env.get("HOME"));
// A file to write.
attempt("open /tmp/owned", () => shim.open("/tmp/owned"));
attempt("write stdout", () => shim.write(1, new TextEncoder().encode("owned\n")));
attempt("Deno.writeTextFile", () => Deno.writeTextFileSync("/tmp/owned", "x"));
// Listing.
attempt("host list of a folder of my choosing", () => shim.hostList(3));
attempt("Deno.readDir /root", () => [...Deno.readDirSync("/root")]);
// Fds the shim did not open.
attempt("ioctl TCGETS on stdin", () => ioctl(0, TCGETS, new Uint8Array(64)));
attempt("read stdin", () => shim.read(0, new Uint8Array(64)));
attempt("close stdout", () => shim.close(1));
attempt("adopt stdin", () => shim.adoptFd(0));
// Signals.
attempt("kick the main thread", () => shim.kick(Deno.pid));
attempt("kick pid 1", () => shim.kick(1));
// Mappings.
attempt("map over my buffer from stdin", () => shim.mapFixed(shim.alignedBuffer(4096), 0, 0));
attempt("unmap a buffer never mapped", () => shim.unmapFixed(shim.alignedBuffer(4096)));
// Memfds and fd passing: only memfds of the table, only *.memfd.sock sockets.
const memfd = shim.memfdCreate("mine", 4096);
attempt("memfd: map 1 page past its end", () => shim.mapFixed(shim.alignedBuffer(8192), memfd, 0));
attempt("memfd: send it over stdout", () => shim.fdpassSend(1, memfd, new Uint8Array(1)));
attempt("fdpass: listen at a path of my choosing", () => shim.fdpassListen("/tmp/owned"));
attempt("fdpass: connect to another service's socket", () => shim.fdpassConnect("/run/systemd/private"));
attempt("fdpass: listen with a .. in the path", () => shim.fdpassListen("/tmp/../tmp/x.memfd.sock"));
attempt("fdpass: receive on stdin", () => shim.fdpassRecv(0));
// Another native library.
attempt("dlopen libc", () => Deno.dlopen("libc.so.6", { getpid: { parameters: [], result: "i32" } }));

// The shim itself, opened a second time with the attacker's own declarations: the rules are in C, not in native.ts.
const raw = Deno.dlopen(shimPath, {
  relay_open: { parameters: ["buffer", "u32"], result: "i32" },
  relay_ioctl: { parameters: ["i32", "u32", "buffer", "u32"], result: "i32" },
  relay_write: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  relay_kick: { parameters: ["i32", "i32"], result: "i32" }, // a second argument, as the old API took the signal
  relay_kick_setup: { parameters: ["i32"], result: "i32" },
}).symbols;
const path = new TextEncoder().encode("/etc/shadow\0");
attempt("raw relay_open /etc/shadow", () => raw.relay_open(path, path.byteLength));
attempt("raw ioctl on stdin", () => raw.relay_ioctl(0, TCGETS, new Uint8Array(64), 64));
attempt("raw write stdout", () => raw.relay_write(1, new Uint8Array(4), 4));
attempt("raw kick main thread with SIGTERM", () => raw.relay_kick(Deno.pid, 15));
// The old API installed a handler for the caller's signal; the argument is now ignored (SIGUSR1 only), so SIGTERM
// still ends this process — the test sends it once this script says "waiting".
attempt("raw kick setup for SIGTERM", () => raw.relay_kick_setup(15));
for (const gone of ["relay_read_file", "relay_list_dir", "relay_readlink", "relay_test_address_of"]) {
  attempt(`raw ${gone}`, () => Deno.dlopen(shimPath, { [gone]: { parameters: [], result: "i32" } }));
}

// A relay's own fds, used for what a relay never does.
const kvm = shim.open("/dev/kvm");
if (kvm >= 0) {
  attempt("kvm: TCGETS", () => ioctl(kvm, TCGETS, new Uint8Array(64)));
  attempt("kvm: KVM_GET_MSR_INDEX_LIST", () => ioctl(kvm, 0xc004ae02, new Uint8Array(4)));
  attempt("kvm: write", () => shim.write(kvm, new Uint8Array(8)));
  const vm = ioctl(kvm, 0xae01, null);
  const region = new Uint8Array(32);
  const view = new DataView(region.buffer);
  view.setBigUint64(16, 0x1000n, true); // memory_size
  view.setBigUint64(24, 0x10000n, true); // userspace_addr: an address of the attacker's choosing
  attempt("vm: memory region at my address", () => ioctl(vm, 0x4020ae46, region));
  view.setBigUint64(24, 0n, true);
  view.setBigUint64(16, 0x4000_0000n, true); // 1 GiB of guest memory over a 4 KiB buffer
  attempt("vm: memory region past my buffer", () => withPointer(vm, 0x4020ae46, region, 24, new Uint8Array(4096)));
  attempt("vm: KVM_SET_TSS_ADDR (never used by a relay)", () => ioctl(vm, 0xae47, null));
  attempt("vm: map it", () => shim.mapFixed(shim.alignedBuffer(4096), vm, 0));
  const log = new Uint8Array(16);
  new DataView(log.buffer).setUint32(0, 7, true); // slot 7: never set through the shim
  attempt(
    "vm: dirty log of a slot the shim never saw",
    () => withPointer(vm, 0x4010ae42, log, 8, new Uint8Array(4096)),
  );
  const ram = shim.alignedBuffer(64 * 4096);
  const slot = new Uint8Array(32);
  new DataView(slot.buffer).setUint32(4, 1, true); // KVM_MEM_LOG_DIRTY_PAGES
  new DataView(slot.buffer).setBigUint64(16, BigInt(ram.byteLength), true);
  withPointer(vm, 0x4020ae46, slot, 24, ram); // slot 0: 64 pages, an 8-byte log
  new DataView(log.buffer).setUint32(0, 0, true);
  attempt(
    "vm: dirty log into a buffer shorter than the slot's",
    () => withPointer(vm, 0x4010ae42, log, 8, new Uint8Array(4)),
  );
  const vcpu = ioctl(vm, 0xae41, null);
  attempt("vcpu: map 1 page more than kvm_run", () => {
    const size = ioctl(kvm, 0xae04, null);
    return shim.mapFixed(shim.alignedBuffer(size + 4096), vcpu, 0);
  });
  attempt("vcpu: get regs into a short buffer", () => ioctl(vcpu, 0x8090ae81, new Uint8Array(16)));
  shim.close(vcpu);
  shim.close(vm);
  shim.close(kvm);
}
const iommufd = shim.open("/dev/iommu");
if (iommufd >= 0) {
  const IOAS_ALLOC = 0x3b81, IOAS_MAP = 0x3b85, TEST_CMD = 0x3ba0, BIND = 0x3b76;
  const sized = (size: number, bytes = size) => {
    const b = new Uint8Array(bytes);
    new DataView(b.buffer).setUint32(0, size, true);
    return b;
  };
  // Allowed, so the kernel answers (here a /dev/null posing as /dev/iommu: ENOTTY): the list is not "refuse all".
  attempt("iommufd: IOMMU_IOAS_ALLOC", () => ioctl(iommufd, IOAS_ALLOC, sized(12)));
  attempt("iommufd: TCGETS", () => ioctl(iommufd, TCGETS, new Uint8Array(64)));
  attempt("iommufd: a VFIO request (same type byte)", () => ioctl(iommufd, BIND, sized(24)));
  attempt("iommufd: size field past the buffer", () => ioctl(iommufd, IOAS_ALLOC, sized(4096, 12)));
  const map = sized(40);
  new DataView(map.buffer).setBigUint64(16, 0x10000n, true);
  attempt("iommufd: IOAS_MAP of my address", () => ioctl(iommufd, IOAS_MAP, map));
  const pin = sized(72);
  new DataView(pin.buffer).setUint32(4, 7, true); // IOMMU_TEST_OP_ACCESS_PAGES: pins user memory
  attempt("iommufd: selftest op the relay never uses", () => ioctl(iommufd, TEST_CMD, pin));
  const mapFile = sized(40);
  new DataView(mapFile.buffer).setUint32(12, 0, true); // fd: stdin
  new DataView(mapFile.buffer).setBigUint64(24, 4096n, true);
  attempt("iommufd: IOAS_MAP_FILE of stdin", () => ioctl(iommufd, 0x3b8f, mapFile));
  new DataView(mapFile.buffer).setUint32(12, memfd, true);
  attempt("iommufd: IOAS_MAP_FILE of my memfd", () => ioctl(iommufd, 0x3b8f, mapFile));
  const dirty = sized(48);
  new DataView(dirty.buffer).setBigUint64(24, 1n << 30n, true); // 1 GiB at 4 KiB: a 32 KiB bitmap
  new DataView(dirty.buffer).setBigUint64(32, 4096n, true);
  attempt(
    "iommufd: dirty bitmap longer than my buffer",
    () => withPointer(iommufd, 0x3b8c, dirty, 40, new Uint8Array(64)),
  );
  const mark = sized(72);
  const mv = new DataView(mark.buffer);
  mv.setUint32(4, 13, true); // IOMMU_TEST_OP_DIRTY
  mv.setBigUint64(32, 1n << 30n, true);
  mv.setBigUint64(40, 4096n, true);
  attempt(
    "iommufd: selftest DIRTY reading past my bitmap",
    () => withPointer(iommufd, TEST_CMD, mark, 48, new Uint8Array(8)),
  );
  attempt("iommufd: read", () => shim.read(iommufd, new Uint8Array(64)));
  attempt("iommufd: write", () => shim.write(iommufd, new Uint8Array(8)));
  const cdev = shim.open("/dev/vfio/devices/vfio0");
  const bind = sized(24);
  new DataView(bind.buffer).setInt32(8, 0, true); // "iommufd": stdin
  attempt("cdev: bind to an fd that is not an iommufd", () => ioctl(cdev, BIND, bind));
  attempt("cdev: an iommufd request (same type byte)", () => ioctl(cdev, IOAS_ALLOC, sized(12)));
  shim.close(cdev);
  attempt("cdev: a node of another device under a cdev name", () => shim.open("/dev/vfio/devices/vfio1"));
  attempt("cdev: a symlink under a cdev name", () => shim.open("/dev/vfio/devices/vfio2"));
  attempt("sysfs: a device link out of /sys/devices", () => shim.cdevAttr(4, ffi.CDEV_ATTR.VENDOR));
  attempt("sysfs: a real attribute", () => shim.cdevAttr(0, ffi.CDEV_ATTR.VENDOR));
  shim.close(iommufd);
}
// The library's own objects, reached from the root export: the kernel host wants a path, and gets the same answer.
attempt("RelayHost.kernel on /etc/shadow", () => api.RelayHost.kernel(shim, { path: "/etc/shadow" }));

console.log(JSON.stringify(out));
console.log("waiting");
// Block until the test sends SIGTERM: the kick setup above must not have made this process ignore it.
await new Promise(() => setInterval(() => {}, 1000));
