// Sandbox: the library under a path-scoped --allow-ffi; hostile scripts under that grant alone (tests/sandbox/
// hostile.ts); every export entry point of deno.json walked for a way to an arbitrary ioctl or open.
import assert from "node:assert/strict";
import { ensureShim } from "../ffi/build.ts";
import { NativeShim, ShimRefusedError } from "../ffi/native.ts";

Deno.test("sandbox: the library loads and relays with --allow-ffi limited to the shim's path, and nothing more", async () => {
  const shim = await ensureShim();
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--quiet",
      "--no-prompt",
      `--allow-ffi=${shim}`,
      "--allow-env=IOMMU_RELAY_SHIM",
      new URL("./sandbox/scoped_client.ts", import.meta.url).pathname,
    ],
    env: { IOMMU_RELAY_SHIM: shim },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const d = new TextDecoder();
  assert.ok(out.success, d.decode(out.stderr));
  assert.deepEqual(JSON.parse(d.decode(out.stdout)), {
    shim: "loaded",
    relay: true,
    kernel: "ShimRefusedError", // not a device node a relay opens: refused in the shim, no Deno permission involved
    otherLibrary: "NotCapable",
    read: "NotCapable",
  });
});

const decoder = new TextDecoder();
const denoJson = JSON.parse(await Deno.readTextFile(new URL("../deno.json", import.meta.url)));

/** Every outcome hostile.ts may report, and nothing else: a refusal, Deno's NotCapable, or the kernel's answer. */
const EXPECTED: Record<string, string> = {
  "reflection": "found the ioctl entry points", // not the boundary: every call below goes through the shim's rules
  "open /etc/shadow": "ShimRefusedError EACCES",
  "open /proc/self/environ": "ShimRefusedError EACCES",
  "open /dev/../etc/shadow": "ShimRefusedError EACCES",
  "Deno.readTextFile /etc/shadow": "NotCapable",
  "Deno.env HOME": "NotCapable",
  "open /tmp/owned": "ShimRefusedError EACCES",
  "write stdout": "ShimRefusedError EBADF",
  "Deno.writeTextFile": "NotCapable",
  "host list of a folder of my choosing": "errno 22", // only three fixed listings exist
  "Deno.readDir /root": "NotCapable",
  "ioctl TCGETS on stdin": "ShimRefusedError EBADF",
  "read stdin": "ShimRefusedError EBADF",
  "close stdout": "ShimRefusedError EBADF",
  "adopt stdin": "ShimRefusedError EACCES",
  "kick the main thread": "ShimRefusedError EPERM",
  "kick pid 1": "ShimRefusedError EPERM",
  "map over my buffer from stdin": "ShimRefusedError EBADF",
  "unmap a buffer never mapped": "ShimRefusedError EPERM",
  "memfd: map 1 page past its end": "ShimRefusedError EPERM",
  "memfd: send it over stdout": "ShimRefusedError EBADF",
  "fdpass: listen at a path of my choosing": "ShimRefusedError EACCES",
  "fdpass: connect to another service's socket": "ShimRefusedError EACCES",
  "fdpass: listen with a .. in the path": "ShimRefusedError EACCES",
  "fdpass: receive on stdin": "ShimRefusedError EBADF",
  "dlopen libc": "NotCapable",
  // Its own dlopen of the shim gets the raw -(4096 + errno): 13 EACCES, 9 EBADF, 1 EPERM.
  "raw relay_open /etc/shadow": "errno 4109",
  "raw ioctl on stdin": "errno 4105",
  "raw write stdout": "errno 4105",
  "raw kick main thread with SIGTERM": "errno 4097",
  "raw kick setup for SIGTERM": "SUCCEEDED: 0", // installs the shim's SIGUSR1 handler only: SIGTERM is checked below
  "raw relay_read_file": "Error", // the generic file primitives are gone from the library
  "raw relay_list_dir": "Error",
  "raw relay_readlink": "Error",
  "raw relay_test_address_of": "Error",
  "kvm: TCGETS": "ShimRefusedError EPERM",
  "kvm: KVM_GET_MSR_INDEX_LIST": "ShimRefusedError EPERM",
  "kvm: write": "ShimRefusedError EPERM",
  "vm: memory region at my address": "ShimRefusedError EPERM",
  "vm: memory region past my buffer": "ShimRefusedError EPERM",
  "vm: KVM_SET_TSS_ADDR (never used by a relay)": "ShimRefusedError EPERM",
  "vm: map it": "ShimRefusedError EPERM",
  "vcpu: map 1 page more than kvm_run": "ShimRefusedError EPERM",
  "vcpu: get regs into a short buffer": "ShimRefusedError EPERM",
  "vm: dirty log of a slot the shim never saw": "ShimRefusedError EPERM",
  "vm: dirty log into a buffer shorter than the slot's": "ShimRefusedError EPERM",
  "iommufd: IOMMU_IOAS_ALLOC": "errno 25", // allowed: the kernel answers (ENOTTY from the fake host's /dev/null)
  "iommufd: TCGETS": "ShimRefusedError EPERM",
  "iommufd: a VFIO request (same type byte)": "ShimRefusedError EPERM",
  "iommufd: size field past the buffer": "ShimRefusedError EPERM",
  "iommufd: IOAS_MAP of my address": "ShimRefusedError EPERM",
  "iommufd: selftest op the relay never uses": "ShimRefusedError EPERM",
  "iommufd: read": "ShimRefusedError EPERM",
  "iommufd: write": "ShimRefusedError EPERM",
  "iommufd: IOAS_MAP_FILE of stdin": "ShimRefusedError EPERM",
  "iommufd: IOAS_MAP_FILE of my memfd": "errno 25", // allowed: a memfd of the table (the fake host answers ENOTTY)
  "iommufd: dirty bitmap longer than my buffer": "ShimRefusedError EPERM",
  "iommufd: selftest DIRTY reading past my bitmap": "ShimRefusedError EPERM",
  "cdev: bind to an fd that is not an iommufd": "ShimRefusedError EPERM",
  "cdev: an iommufd request (same type byte)": "ShimRefusedError EPERM",
  "cdev: a node of another device under a cdev name": "ShimRefusedError EACCES",
  "cdev: a symlink under a cdev name": "ShimRefusedError EACCES",
  "sysfs: a device link out of /sys/devices": "ShimRefusedError EACCES",
  "sysfs: a real attribute": 'SUCCEEDED: "0x1234\\n"', // the one attribute read it is meant to have
  "RelayHost.kernel on /etc/shadow": "ShimRefusedError EACCES",
};

const kvmProbe = await (async () => {
  using shim = await NativeShim.load();
  const fd = shim.open("/dev/kvm");
  if (fd >= 0) shim.close(fd);
  return fd;
})();

/** Whether this process may build a fake host in a mount namespace (root and unshare(1)). */
const fakeHostError = await (async () => {
  try {
    const r = await new Deno.Command("unshare", { args: ["-m", "true"], stderr: "piped" }).output();
    return r.success ? undefined : `unshare -m failed: ${decoder.decode(r.stderr).trim()}`;
  } catch (e) {
    return `no unshare(1): ${(e as Error).message}`;
  }
})();
if (fakeHostError) {
  console.log(`fake-host sandbox tests skipped: ${fakeHostError} (they need root for mknod and mount)`);
}

/** Run hostile.ts under only the shim's grant (in the fake host when asked), then SIGTERM it. */
async function runHostile(inFakeHost: boolean): Promise<{ out: Record<string, string>; signal: Deno.Signal | null }> {
  const shim = await ensureShim();
  const deno = [
    Deno.execPath(),
    "run",
    "--quiet",
    "--no-prompt",
    `--allow-ffi=${shim}`,
    "--allow-env=IOMMU_RELAY_SHIM",
    new URL("./sandbox/hostile.ts", import.meta.url).pathname,
  ];
  const fixture = new URL("./sandbox/fake_host.sh", import.meta.url).pathname;
  const [cmd, ...args] = inFakeHost ? ["unshare", "-m", "sh", fixture, ...deno] : deno;
  const child = new Deno.Command(cmd, {
    args,
    env: { IOMMU_RELAY_SHIM: shim },
    clearEnv: true,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  const deadline = setTimeout(() => child.kill("SIGKILL"), 60_000);
  while (!text.includes("waiting\n")) {
    const { value, done } = await lines.read();
    if (done) break;
    text += value;
  }
  // The script blocks forever; the kick setup it called must not have made it ignore SIGTERM.
  if (text.includes("waiting\n")) child.kill("SIGTERM");
  lines.releaseLock();
  const status = await child.status;
  clearTimeout(deadline);
  const stderr = decoder.decode(await new Response(child.stderr).arrayBuffer());
  assert.ok(text.includes("waiting\n"), `hostile.ts did not finish its attempts: ${stderr}${text}`);
  return { out: JSON.parse(text.split("\n")[0]), signal: status.signal };
}

function assertRefused(out: Record<string, string>, mustInclude: string[]): void {
  for (const [attack, outcome] of Object.entries(out)) {
    assert.ok(attack in EXPECTED, `an attempt this test does not know: ${attack} → ${outcome}`);
    assert.equal(outcome, EXPECTED[attack], attack);
  }
  for (const attack of mustInclude) assert.ok(attack in out, `${attack} was not attempted`);
}

Deno.test({
  name:
    "sandbox: a hostile script holding only the shim's grant is refused, with a typed error, everything but a relay's work",
  async fn() {
    const { out, signal } = await runHostile(false);
    const kvm = Object.keys(EXPECTED).filter((k) => /^(kvm|vm|vcpu):/.test(k));
    assertRefused(out, [
      "open /etc/shadow",
      "ioctl TCGETS on stdin",
      "raw ioctl on stdin",
      ...(kvmProbe >= 0 ? kvm : []),
    ]);
    assert.equal(signal, "SIGTERM");
  },
});

Deno.test({
  name:
    "sandbox: in a fake host (iommufd, VFIO cdevs, sysfs), foreign requests, forged pointers and look-alike nodes are refused",
  ignore: fakeHostError !== undefined,
  async fn() {
    const { out, signal } = await runHostile(true);
    assertRefused(out, Object.keys(EXPECTED).filter((k) => kvmProbe >= 0 || !/^(kvm|vm|vcpu):/.test(k)));
    assert.equal(signal, "SIGTERM");
  },
});

/** Each member of NativeShim.prototype, called as an attacker would; a member missing here fails the walk below. */
const HARMLESS = "harmless" as const;
const SHIM_MEMBERS: Record<string, ((s: NativeShim) => unknown) | typeof HARMLESS> = {
  "constructor": HARMLESS,
  "closed": HARMLESS,
  "open": (s) => s.open("/etc/shadow"),
  "adoptFd": (s) => s.adoptFd(0),
  "close": (s) => s.close(0),
  "Symbol(iommu-relay ioctl)": (s) => call(s, "iommu-relay ioctl", 0, 0x5401, new Uint8Array(64)),
  "Symbol(iommu-relay ioctl with pointer)": (s) =>
    call(s, "iommu-relay ioctl with pointer", 0, 0x5401, new Uint8Array(64), 8, new Uint8Array(8)),
  "Symbol(iommu-relay ioctl loop)": (s) => call(s, "iommu-relay ioctl loop", 0, 0x5401, null, 0xffff_ffff, null, 1),
  "Symbol(iommu-relay ioctl pair loop)": (s) =>
    call(
      s,
      "iommu-relay ioctl pair loop",
      0,
      0x5401,
      new Uint8Array(8),
      0,
      new Uint8Array(8),
      0x5401,
      new Uint8Array(8),
      1,
    ),
  "policyAllows": HARMLESS, // a table look-up
  "read": (s) => s.read(0, new Uint8Array(8)),
  "write": (s) => s.write(1, new Uint8Array(8)),
  "poll": (s) => s.poll(0, 1, 0),
  "pollAsync": HARMLESS, // the same C function as poll, tested in tests/ffi
  "alignOffset": HARMLESS, // an address's offset within 2 MiB at most
  "alignedBuffer": HARMLESS,
  "sharedAlignedBuffer": HARMLESS,
  "mapFixed": (s) => s.mapFixed(s.alignedBuffer(4096), 0),
  "unmapFixed": (s) => s.unmapFixed(s.alignedBuffer(4096)),
  "kickSetup": HARMLESS, // the shim's own SIGUSR1 handler
  "registerKickTarget": HARMLESS, // registers the calling thread only
  "kick": (s) => s.kick(1),
  "deadlineTimer": HARMLESS, // the calling thread, the shim's signal
  "hostList": HARMLESS, // three fixed listings
  "hasIommufd": HARMLESS,
  "cdevAttr": HARMLESS, // fixed attributes of vfio<N>, inside /sys/devices
  "memfdCreate": HARMLESS, // anonymous memory of the caller's, sealed to its size
  "memfdSize": (s) => s.memfdSize(0),
  "fdpassDir": HARMLESS, // the shim's own fixed directory, made private
  "fdpassListen": (s) => s.fdpassListen("/tmp/owned"),
  "fdpassConnect": (s) => s.fdpassConnect("/run/systemd/private"),
  "fdpassAccept": (s) => s.fdpassAccept(0),
  "fdpassSend": (s) => s.fdpassSend(1, 0, new Uint8Array(1)),
  "fdpassRecv": (s) => s.fdpassRecv(0),
  "testEchoRequest": HARMLESS,
  "nop": HARMLESS,
  "Symbol(Symbol.dispose)": HARMLESS,
};

function call(s: NativeShim, description: string, ...args: unknown[]): unknown {
  const key = Object.getOwnPropertySymbols(NativeShim.prototype).find((k) => k.description === description)!;
  return (s as unknown as Record<symbol, (...a: unknown[]) => unknown>)[key](...args);
}

Deno.test("sandbox: every export entry point of deno.json, walked by reflection, reaches no arbitrary ioctl or open", async () => {
  const entries = Object.entries(denoJson.exports as Record<string, string>);
  assert.ok(entries.length > 0);
  const reached = new Map<string, unknown>(); // path → value
  const seen = new Set<unknown>();
  const walk = (path: string, value: unknown, depth: number) => {
    if (value === null || (typeof value !== "object" && typeof value !== "function") || seen.has(value)) return;
    if (value === Object.prototype || value === Function.prototype || depth > 4) return;
    seen.add(value);
    for (const key of Reflect.ownKeys(value)) {
      const d = Object.getOwnPropertyDescriptor(value, key)!;
      const name = `${path}.${String(key)}`;
      for (const v of [d.value, d.get, d.set]) {
        if (v === undefined) continue;
        reached.set(name, v);
        walk(name, v, depth + 1);
      }
    }
    walk(`${path}.[[Prototype]]`, Object.getPrototypeOf(value), depth + 1);
  };
  const offenders: string[] = [];
  for (const [entry, file] of entries) {
    const module = await import(new URL(`../${file}`, import.meta.url).href);
    for (const [name, value] of Object.entries(module)) {
      // By name: no export is an ioctl key or an ioctl/open function of its own.
      if (typeof value === "symbol" && /ioctl/i.test(value.description ?? "")) offenders.push(`${entry}: ${name}`);
      if (/^(IOCTL|ioctl|rawIoctl|openPath)/.test(name)) offenders.push(`${entry}: ${name}`);
      walk(`${entry}:${name}`, value, 0);
    }
  }
  assert.deepEqual(offenders, []);
  // By reflection: the only holder of native calls is NativeShim. Each of its members must be known here, and each
  // that touches a path, an fd, a signal or a mapping must refuse an attacker's arguments.
  const shimMembers = new Set(
    Reflect.ownKeys(NativeShim.prototype).map((k) => typeof k === "symbol" ? `Symbol(${k.description})` : k),
  );
  assert.deepEqual([...shimMembers].toSorted(), Object.keys(SHIM_MEMBERS).toSorted());
  using shim = await NativeShim.load();
  for (const [member, attack] of Object.entries(SHIM_MEMBERS)) {
    if (attack === "harmless") continue;
    assert.throws(() => attack(shim), ShimRefusedError, member);
  }
  // And the walk really reached them through the exports (the root export hands out NativeShim).
  const viaExports = [...reached.entries()].filter(([, v]) => v === NativeShim.prototype.open).map(([k]) => k);
  assert.ok(viaExports.length > 0, "the walk did not reach NativeShim through any export");
  assert.ok(!("IOCTL" in (await import(new URL(`../${denoJson.exports["./ffi"]}`, import.meta.url).href))));
});
