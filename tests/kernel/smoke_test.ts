import assert from "node:assert/strict";
Deno.test("smoke: /dev/iommu exists in the guest", () => {
  assert.ok(Deno.statSync("/dev/iommu"));
  console.log(Deno.osRelease());
});
