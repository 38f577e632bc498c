// The plugin layer on the real kernel: a RelayHost over /dev/iommu, two plugin instances for two mock devices in
// two guest domains, loaded from a module specifier; isolation checked with the kernel's own IOTLB view.
import assert from "node:assert/strict";
import { loadPlugin, RelayHost } from "../lib/plugin/plugin.ts";
import { mockIotlbHolds } from "../lib/kernel/mod.ts";
import { kernelTest, shim } from "./harness.ts";

kernelTest("plugin (kernel): two devices, two domains, one queue — each device's invalidations reach only its HWPT", [
  "selftest-pasid",
], async () => {
  const definition = await loadPlugin(new URL("../tests/plugin/fixtures/third_party_plugin.ts", import.meta.url), {
    permissions: "none",
  });
  using host = RelayHost.kernel(shim);
  using a = definition.create(host, { domain: 1, device: { kind: "mock", pasid: true } });
  using b = definition.create(host, { domain: 2, device: { kind: "mock", pasid: true } });
  a.submit({ op: "bind", domain: 1, pasid: 4, table: { format: "selftest", iotlb: 0x11 } });
  b.submit({ op: "bind", domain: 2, pasid: 4, table: { format: "selftest", iotlb: 0x22 } });
  const [ha, hb] = [1, 2].map((d) => host.queue().bindings(d, 4)[0].targetId);
  a.submit({ op: "invalidate", domain: 1, scope: { kind: "pasid", pasid: 4 } });
  a.submit({ op: "sync" });
  assert.deepEqual(a.drain().waits.map((w) => w.ok), [true]);
  assert.ok(mockIotlbHolds(host.iommufd!, ha, 0, 0) && mockIotlbHolds(host.iommufd!, ha, 3, 0), "A's HWPT flushed");
  assert.ok(mockIotlbHolds(host.iommufd!, hb, 0, 0x22), "B's HWPT untouched");
});
