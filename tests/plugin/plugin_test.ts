import assert from "node:assert/strict";
import { RequestError } from "../../lib/request/request.ts";
import { loadPlugin, PluginLoadError, PluginPermissionError, RelayHost, relayPlugin } from "../../lib/plugin/plugin.ts";
import { shimPath } from "../../ffi/build.ts";

Deno.test("plugin: two instances loaded from a module specifier — completions, isolation, disposal", async () => {
  const definition = await loadPlugin(new URL("./fixtures/third_party_plugin.ts", import.meta.url), {
    permissions: "none",
  });
  assert.equal(definition.name, "counting-relay");
  assert.equal(
    definition.isolation,
    "worker-no-permissions",
    "third-party code runs in a Worker of its own, with no permissions",
  );
  using host = RelayHost.inProcess();
  const a = definition.create(host, { domain: 1, device: { kind: "model" } });
  const b = definition.create(host, { domain: 2, device: { kind: "model" } });
  const table = (addr: number) => ({ format: "vtd-s1" as const, tableAddress: addr, addressWidth: 48 as const });
  a.submit({ op: "bind", domain: 1, pasid: 1, table: table(0x1000) });
  b.submit({ op: "bind", domain: 2, pasid: 1, table: table(0x2000) });
  const events: string[] = [];
  b.on((e) => events.push(e.type));

  a.submit({ op: "invalidate", domain: 1, scope: { kind: "pasid-range", pasid: 1, firstPage: 0x10, pages: 4 } });
  const wait = a.submit({ op: "sync" });
  const report = a.drain();
  assert.deepEqual(report.waits, [{ seq: wait, ok: true }]);
  const model = host.model!;
  const [ta, tb] = [1, 2].map((_, i) => host.queue().bindings(i + 1, 1)[0].targetId);
  assert.ok(model.covered(ta, 0x10) && model.covered(ta, 0x13));
  assert.equal(model.covered(tb, 0x10), false, "device A's invalidation never reached device B's table");

  // A request naming another device's domain is refused at the plugin boundary, typed.
  assert.throws(() => a.submit({ op: "invalidate", domain: 2, scope: { kind: "all" } }), RequestError);
  assert.throws(
    () => b.submit({ op: "invalidate", domain: 2, scope: { kind: "pasid", pasid: 1 << 20 } }),
    RequestError,
  );
  assert.deepEqual(events, ["refused"]);
  assert.equal(a.telemetry.device.requestsIn, 2, "the invalidation and the wait");

  a[Symbol.dispose]();
  assert.equal(a.state, "disposed");
  assert.throws(() => a.submit({ op: "sync" }), /disposed/);
  assert.deepEqual(host.queue().bindings(1, 1), [], "disposal unbound device A's PASID");
  assert.equal(host.queue().bindings(2, 1).length, 1, "device B is untouched");
  b[Symbol.dispose]();
  assert.deepEqual(events, ["refused", "disposed"]);
});

Deno.test("plugin: devices of one domain binding the same table share one host target and one ioctl", () => {
  using host = RelayHost.inProcess();
  using a = relayPlugin.create(host, { domain: 5, device: { kind: "model" } });
  using b = relayPlugin.create(host, { domain: 5, device: { kind: "model" } });
  const t = { format: "vtd-s1" as const, tableAddress: 0x3000, addressWidth: 48 as const };
  a.submit({ op: "bind", domain: 5, pasid: 9, table: t });
  b.submit({ op: "bind", domain: 5, pasid: 9, table: t });
  assert.equal(host.queue().bindings(5, 9).length, 1);
  b.submit({ op: "invalidate", domain: 5, scope: { kind: "all" } });
  assert.equal(b.drain().ioctls, 1);
  a[Symbol.dispose]();
  assert.equal(host.queue().bindings(5, 9).length, 1, "still bound for device B");
});

Deno.test("plugin specifiers without permissions: remote, a device, a folder are refused; a name is never code", async () => {
  // A remote module would need import access to its host for the plugin's Worker, in URLs the plugin chooses; a
  // device would be read forever; a folder is no module. Each is refused before any Worker starts.
  for (
    const specifier of ["https://example.org/plugin.ts", "file:///dev/zero", new URL("./fixtures/", import.meta.url)]
  ) {
    await assert.rejects(loadPlugin(specifier, { permissions: "none" }), PluginLoadError, String(specifier));
  }
  // The generated module names the plugin as a JSON string: quotes, a comment end and a template opener in the file
  // name stay a name.
  const dir = await Deno.makeTempDir();
  try {
    const library = new URL("../../lib/plugin/plugin.ts", import.meta.url).href;
    const path = `${dir}/q"uote';*/\${globalThis.x}.ts`;
    await Deno.mkdir(path.slice(0, path.lastIndexOf("/"))); // the "*/" makes a folder
    await Deno.writeTextFile(
      path,
      `import { definePlugin } from ${JSON.stringify(library)};\n` +
        `export default definePlugin({ name: "oddly-named", version: "1", create: (d) => d });\n`,
    );
    const definition = await loadPlugin(`file://${path}`, { permissions: "none" });
    assert.equal(definition.name, "oddly-named");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("plugin: loading something that is not a plugin is a typed error", async () => {
  await assert.rejects(
    loadPlugin(new URL("./fixtures/not_a_plugin.ts", import.meta.url), { permissions: "none" }),
    PluginLoadError,
  );
  await assert.rejects(
    loadPlugin(new URL("./fixtures/missing.ts", import.meta.url), { permissions: "none" }),
    PluginLoadError,
  );
  using host = RelayHost.inProcess();
  assert.throws(
    () => relayPlugin.create(host, { domain: 1, device: { kind: "vfio", path: "/dev/vfio/devices/vfio0" } }),
    TypeError,
  );
});

Deno.test("plugin limits: a bind past maxPasids is a LimitError; unbinding makes room; the RID does not count", async () => {
  const { LimitError } = await import("../../lib/kernel/errors.ts");
  using host = RelayHost.inProcess();
  using dev = relayPlugin.create(host, { domain: 1, device: { kind: "model" }, maxPasids: 2 });
  const table = { format: "vtd-s1" as const, tableAddress: 0x1000, addressWidth: 48 as const };
  const refused: string[] = [];
  dev.on((e) => e.type === "refused" && refused.push(e.error.name));
  dev.submit({ op: "bind", domain: 1, pasid: 1, table });
  dev.submit({ op: "bind", domain: 1, pasid: 2, table });
  dev.submit({ op: "bind", domain: 1, pasid: 2, table }); // a rebind of a bound PASID is not a new one
  dev.submit({ op: "bind", domain: 1, pasid: "rid", table });
  assert.throws(
    () => dev.submit({ op: "bind", domain: 1, pasid: 3, table }),
    (e) => e instanceof LimitError && e.limit === "pasids-per-device" && e.max === 2,
  );
  assert.deepEqual(refused, ["LimitError"]);
  dev.submit({ op: "unbind", domain: 1, pasid: 1 });
  dev.submit({ op: "bind", domain: 1, pasid: 3, table });
  assert.equal(host.queue().bindings(1, 3).length, 1);
  assert.equal(host.queue().bindings(1, 1).length, 0);
});

/** Run the permission probe in a child Deno with `flags` and no deno.json; its one JSON line. */
async function probe(flags: string[], withShim: string | undefined): Promise<Record<string, string>> {
  const fixture = new URL("./fixtures/third_party_plugin.ts", import.meta.url).href;
  const script = new URL("./fixtures/permission_probe.ts", import.meta.url).pathname;
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--no-config",
      "--no-lock",
      "--no-prompt",
      ...flags,
      script,
      fixture,
      ...(withShim ? [withShim] : []),
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout).trim();
  assert.equal(out.code, 0, `the child exited ${out.code}: ${new TextDecoder().decode(out.stderr)}`);
  return JSON.parse(text);
}

Deno.test("plugin permissions: by default a plugin never inherits a way to the shim — refused, typed, at load and at create", async () => {
  const shim = await shimPath();
  const read = `--allow-read=${new URL("../..", import.meta.url).pathname}`;
  // Nothing host-reaching granted: the default inherits, which gives the plugin nothing of the relay's host.
  assert.deepEqual(await probe([read], undefined), { load: "worker", create: "counting-relay" });
  // FFI scoped to the shim: a bare query says "prompt", so the loaded shim's path is asked for. Before the process
  // loads the shim the plugin loads; once it has, creating an instance is refused (its Worker could dlopen the shim).
  assert.deepEqual(await probe([read, `--allow-ffi=${shim}`], shim), {
    load: "worker",
    create: `PluginPermissionError ${JSON.stringify([`ffi:${shim}`])}`,
  });
  // FFI on everything, or run: refused at load.
  assert.deepEqual(await probe([read, "--allow-ffi"], undefined), { load: 'PluginPermissionError ["ffi"]' });
  assert.deepEqual(await probe([read, "--allow-run"], undefined), { load: 'PluginPermissionError ["run"]' });
});

Deno.test("plugin permissions: in this FFI-holding process the default is refused; 'inherit' states the trust", async () => {
  const fixture = new URL("./fixtures/third_party_plugin.ts", import.meta.url);
  await assert.rejects(loadPlugin(fixture), (e) => e instanceof PluginPermissionError && e.held.includes("ffi"));
  const trusted = await loadPlugin(fixture, { permissions: "inherit" });
  assert.equal(trusted.isolation, "worker");
});
