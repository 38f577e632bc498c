// tests/ mirrors lib/: every module lib/<path>.ts (mod.ts files aside) has tests/<path>_test.ts, or is listed
// below with the reason it has none. A test file that mirrors nothing is listed too, with what it tests. The VM
// suite is kernel-suite/, not here.
import assert from "node:assert/strict";

const root = new URL("..", import.meta.url);

/** Modules without a test file of their own, and why (each reason names where the module is exercised). */
const EXEMPT: Readonly<Record<string, string>> = {
  "broker/client.ts": "driven in a separate process by tests/broker/broker_test.ts (tests/broker/remote_client.ts)",
  "compile/entries.ts":
    "the entry writer every compiler test writes into (tests/compile/) and tests/relay/send_test.ts",
  "compile/shadow.ts":
    "compiled through the format table (tests/compile/formats_test.ts), applied by tests/device/shadow_test.ts",
  "frontends/page_requests.ts": "the tracker behind tests/frontends/vtd/prq_test.ts and smmuv3/priq_test.ts",
  "frontends/vtd/binder.ts": "tested through the RID_PASID path in tests/frontends/vtd/rid_pasid_test.ts",
  "frontends/vtd/routing.ts": "tested through tests/frontends/vtd/rid_pasid_test.ts and the VT-d queue fuzz",
  "frontends/window.ts":
    "tested through the SMMUv3 queue's register window in tests/frontends/smmuv3/cmdq_errors_test.ts",
  "host/backend.ts": "types only (the Backend interface)",
  "host/device_host.ts": "types only (the DeviceHost and DevicePort interfaces)",
  "host/kernel.ts": "needs /dev/iommu: kernel-suite/differential_test.ts and faults_test.ts",
  "host/kernel_device_host.ts":
    "driven through GuestIommu over a recording fake Iommufd in tests/device/assigned_test.ts",
  "host/model_device_host.ts": "driven through GuestIommu in tests/device/errata_test.ts and the plugin tests",
  "host/ports.ts": "VFIO and mock-device ports need a kernel: kernel-suite/device_test.ts and frontend_test.ts",
  "kernel/features.ts": "probes a real iommufd: kernel-suite/features_test.ts",
  "kernel/iommufd.ts": "one object per kernel object: kernel-suite/ (ioas, hwpt, viommu, pasid tests)",
  "kernel/selftest.ts": "the kernel's selftest mock device: kernel-suite/",
  "kernel/vfio.ts": "VFIO cdevs need a kernel: kernel-suite/vfio_test.ts",
  "relay/telemetry.ts": "counters read through RelayQueue in tests/relay/queue_test.ts (histogram, unrouted counts)",
  "shadow/areas.ts": "tests/shadow/domain_test.ts checks the area map equals the host after every sync",
  "shadow/backend.ts": "the backend shadowed bindings relay through: tests/device/shadow_test.ts",
  "shadow/model_ioas.ts": "the in-process IOAS tests/shadow/domain_test.ts runs on and compares against",
  "shadow/page_tables.ts": "the guest tables tests/shadow/walk_test.ts builds and walks",
  "testing/fuzz_deadline_worker.ts": "the Worker of fuzz_deadline.ts: tests/testing/fuzz_deadline_test.ts",
  "testing/recordings.ts": "reads the fixtures of tests/testing/cmdq_replay_test.ts and virtio_replay_test.ts",
  "testing/workloads.ts": "generators for the front-end, shadow and policy tests (tests/testing/policies_test.ts, …)",
  "uapi/errors.ts": "the UapiError every tests/uapi/ decoder test expects",
  "uapi/kvm.ts": "declarations only, compared with linux/kvm.h by tests/uapi/golden_test.ts",
  "uapi/proposal2017.ts":
    "declarations only (never merged: no header); fuzzed with every registry struct in tests/testing/fuzz_test.ts",
};

/** Modules of the host CLI (cli/) without tests/cli/<path>_test.ts, and why. */
const CLI_EXEMPT: Readonly<Record<string, string>> = {
  "grants.ts": "needs a process with restricted permissions: tests/sandbox/cli_grants_test.ts runs the CLI so",
  "commands/info.ts":
    "run as a subprocess by tests/sandbox/cli_grants_test.ts (every grant case) and tests/cli/commands/hw_info_test.ts",
  "commands/serve.ts":
    "the broker as a subprocess: tests/broker/ (broker, handed_fds, soak) and broker_clients_test.ts",
};

/** Test files that mirror no module, and what they test. */
const OTHER_TESTS: Readonly<Record<string, string>> = {
  "broker/broker_test.ts": "the broker (server, client, protocol) in separate processes",
  "broker/handed_fds_test.ts": "`cli/main.ts serve --iommufd-fd`: fds a parent shell hands in, checked by the shim",
  "broker/soak_test.ts": "the broker as a subprocess under a lowered RLIMIT_NOFILE: survival, fds and heap",
  "device/errata_test.ts": "host errata across the device layer on both hosts",
  "examples/mini_vmm_test.ts": "examples/mini-vmm",
  "ffi/adopt_test.ts": "ffi/: handed-in fds",
  "bench/workload_shapes_test.ts": "the benches' workloads against the recordings' stats.json",
  "relay/shared_sink_test.ts": "lib/relay/shared.ts as a front end's sink (a second file beside shared_test.ts)",
  "ffi/unload_test.ts": "ffi/: the shim stays mapped after its last NativeShim closes (-z nodelete)",
  "frontends/smmuv3/replay_synthetic_test.ts":
    "lib/testing/cmdq_replay.ts on synthetic recordings of every command form",
  "frontends/virtio/batch_test.ts": "lib/frontends/virtio/iommu.ts's kick batching (handleVirtioIommuKick)",
  "testing/smmuv3_virtio_fuzz_test.ts": "the SMMUv3 and virtio-iommu queue models under fuzzWithDeadline",
  "frontends/smmuv3/cmdq_errors_test.ts":
    "lib/frontends/smmuv3/cmdq.ts's error paths (a second file beside cmdq_test.ts)",
  "layers_test.ts": "the import order of docs/architecture.md",
  "mirror_test.ts": "this layout",
  "readme_test.ts": "the README's claims and example",
  "sandbox/cli_grants_test.ts": "the CLI's exact-path grants",
  "sandbox_test.ts": "the library under --allow-ffi=<shim> alone",
  "uapi/arch_ioctl_test.ts": "ioctl encodings of other architectures (lib/uapi/ioctl.ts)",
  "uapi/golden_test.ts": "every lib/uapi/ layout against the kernel's C headers",
};

function walk(dir: URL, prefix = ""): string[] {
  const out: string[] = [];
  for (const e of Deno.readDirSync(dir)) {
    if (e.isDirectory) out.push(...walk(new URL(`${e.name}/`, dir), `${prefix}${e.name}/`));
    else out.push(`${prefix}${e.name}`);
  }
  return out.sort();
}

const exists = (path: string) => {
  try {
    return Deno.statSync(new URL(path, root)).isFile;
  } catch {
    return false;
  }
};

const modules = walk(new URL("lib/", root)).filter((f) => f.endsWith(".ts") && !f.endsWith("/mod.ts"));
const testFiles = walk(new URL("tests/", root)).filter((f) => f.endsWith("_test.ts"));

Deno.test("mirror: every lib/ module has tests/<path>_test.ts or a stated reason, never both", () => {
  const missing = modules.filter((m) => !exists(`tests/${m.replace(/\.ts$/, "_test.ts")}`) && !(m in EXEMPT));
  assert.deepEqual(missing, [], "modules with neither a test file nor a reason");
  const stale = Object.keys(EXEMPT).filter((m) =>
    !modules.includes(m) || exists(`tests/${m.replace(/\.ts$/, "_test.ts")}`)
  );
  assert.deepEqual(stale, [], "exemptions of modules that are gone or now have a test file");
  console.log(
    `mirror: ${modules.length - Object.keys(EXEMPT).length} of ${modules.length} lib/ modules have a test file`,
  );
});

Deno.test("mirror: every cli/ module has tests/cli/<path>_test.ts or a stated reason, never both", () => {
  const cliModules = walk(new URL("cli/", root)).filter((f) => f.endsWith(".ts"));
  const test = (m: string) => `tests/cli/${m.replace(/\.ts$/, "_test.ts")}`;
  assert.ok(cliModules.includes("main.ts") && cliModules.includes("commands/serve.ts"), cliModules.join(", "));
  assert.deepEqual(cliModules.filter((m) => !exists(test(m)) && !(m in CLI_EXEMPT)), [], "cli/ modules without either");
  const stale = Object.keys(CLI_EXEMPT).filter((m) => !cliModules.includes(m) || exists(test(m)));
  assert.deepEqual(stale, [], "exemptions of cli/ modules that are gone or now have a test file");
});

Deno.test("mirror: every test file mirrors a module of lib/ or of the checkout (cli/, ffi/, tools/), or says what it tests", () => {
  const mirrors = (t: string) => {
    const source = t.replace(/_test\.ts$/, ".ts");
    return exists(`lib/${source}`) || exists(source);
  };
  const strays = testFiles.filter((t) => !mirrors(t) && !(t in OTHER_TESTS));
  assert.deepEqual(strays, [], "test files at a path that mirrors nothing");
  const stale = Object.keys(OTHER_TESTS).filter((t) => !testFiles.includes(t) || mirrors(t));
  assert.deepEqual(stale, [], "listed test files that are gone or now mirror a module");
});

Deno.test("mirror: the checks see the tree (a broken walk would pass them vacuously)", () => {
  assert.ok(modules.includes("relay/queue.ts") && modules.length > 80, `${modules.length} modules`);
  assert.ok(testFiles.includes("relay/queue_test.ts") && testFiles.includes("mirror_test.ts"));
});
