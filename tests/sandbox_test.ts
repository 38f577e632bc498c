// Sandbox: the library under a path-scoped --allow-ffi, and a public API with no generic ioctl.
import assert from "node:assert/strict";
import { ensureShim } from "../ffi/build.ts";
import * as api from "../mod.ts";
import * as uapi from "../lib/uapi/mod.ts";
import * as plugin from "../lib/plugin/mod.ts";
import * as testing from "../lib/testing/mod.ts";

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
    kernel: "KernelError", // ENOENT through the shim: no Deno permission was needed to try, none other granted
    otherLibrary: "NotCapable",
    read: "NotCapable",
  });
});

Deno.test("sandbox: no public export issues an arbitrary ioctl", () => {
  const modules = { api, uapi, plugin, testing };
  const offenders: string[] = [];
  for (const [m, exports] of Object.entries(modules)) {
    for (const [name, value] of Object.entries(exports)) {
      if (/^IOCTL/.test(name) && typeof value === "symbol") offenders.push(`${m}.${name}`);
      if (typeof value !== "function") continue;
      const proto = (value as { prototype?: object }).prototype;
      for (const key of proto ? Object.getOwnPropertyNames(proto) : []) {
        if (/ioctl/i.test(key)) offenders.push(`${m}.${name}.prototype.${key}`);
      }
      for (const key of Object.getOwnPropertyNames(value)) {
        if (/ioctl/i.test(key)) offenders.push(`${m}.${name}.${key}`);
      }
    }
  }
  assert.deepEqual(offenders, []);
  // The raw entry points exist, but only under symbols the public modules do not export.
  const symbols = Object.getOwnPropertySymbols(api.NativeShim.prototype).map((s) => s.description);
  assert.deepEqual(symbols.toSorted(), [
    "Symbol.dispose",
    "iommu-relay ioctl",
    "iommu-relay ioctl loop",
    "iommu-relay ioctl pair loop",
    "iommu-relay ioctl with pointer",
  ]);
  // Registered ioctls are frozen: an Iommufd recognises them by identity, so none can be re-aimed.
  assert.ok(Object.isFrozen(api.IOMMU_HWPT_INVALIDATE));
});
