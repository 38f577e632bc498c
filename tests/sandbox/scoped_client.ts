// Run by tests/sandbox_test.ts with `--allow-ffi=<the shim>` and nothing else but the shim's env variable: the
// library loads, relays on the in-process host, reaches the kernel only through the shim, and cannot open any other
// native library.
import { NativeShim, RelayHost, relayPlugin } from "../../mod.ts";

const out: Record<string, unknown> = {};
using shim = await NativeShim.load();
out.shim = "loaded";
{
  using host = RelayHost.inProcess();
  using dev = relayPlugin.create(host, { domain: 1, device: { kind: "model" } });
  dev.submit({ op: "bind", domain: 1, pasid: 2, table: { format: "vtd-s1", tableAddress: 0x1000, addressWidth: 48 } });
  dev.submit({ op: "invalidate", domain: 1, scope: { kind: "pasid", pasid: 2 } });
  dev.submit({ op: "sync" });
  out.relay = dev.drain().waits[0].ok;
}
try {
  RelayHost.kernel(shim, { path: "/nonexistent/iommu" })[Symbol.dispose](); // not a path the shim opens
  out.kernel = "opened";
} catch (e) {
  out.kernel = (e as Error).name;
}
try {
  Deno.dlopen("libc.so.6", { getpid: { parameters: [], result: "i32" } }).close();
  out.otherLibrary = "opened";
} catch (e) {
  out.otherLibrary = (e as Error).name;
}
try {
  await Deno.readTextFile("/etc/hostname");
  out.read = "allowed";
} catch (e) {
  out.read = (e as Error).name;
}
console.log(JSON.stringify(out));
