// What the running kernel offers is detected at run time, and what is missing is a typed "unsupported".
import assert from "node:assert/strict";
import { UnsupportedError } from "../lib/kernel/mod.ts";
import { atLeast, features, kernelTest, release } from "./harness.ts";

kernelTest("features: detection matches what each kernel release is known to have", [], () => {
  const f = features!;
  console.log(`Linux ${release}: missing ${f.missing.length ? f.missing.join(", ") : "nothing"}`);
  for (const [name, errno] of Object.entries(f.evidence)) console.log(`  ${name}: probe answered ${errno}`);
  assert.ok(f.has("selftest"), "CONFIG_IOMMUFD_TEST is required for the suite");
  assert.equal(f.has("hwpt-invalidate"), atLeast(6, 8));
  assert.equal(f.has("fault-queue"), atLeast(6, 11));
  assert.equal(f.has("selftest-trigger-iopf"), atLeast(6, 11));
  assert.equal(f.has("selftest-dev-cache"), atLeast(6, 13));
  assert.equal(f.has("viommu"), atLeast(6, 13));
  assert.equal(f.has("vdevice"), atLeast(6, 13));
  assert.equal(f.has("veventq"), atLeast(6, 15));
  assert.equal(f.has("selftest-trigger-vevent"), atLeast(6, 15));
  assert.equal(f.has("selftest-pasid"), atLeast(6, 15));
  assert.equal(f.has("dirty-tracking"), atLeast(6, 7));
  assert.equal(f.has("dirty-bitmap"), atLeast(6, 7));
  assert.equal(f.has("selftest-dirty"), atLeast(6, 7));
  assert.equal(f.has("ioas-map-file"), atLeast(6, 13));
  assert.equal(f.has("hw-queue"), atLeast(6, 17));
  assert.equal(f.has("hw-info-input-type"), atLeast(6, 17));
});

kernelTest("features: a missing feature is a typed UnsupportedError naming it", [], () => {
  const f = features!;
  for (const name of f.missing) {
    assert.throws(() => f.require(name), (e) => e instanceof UnsupportedError && e.feature === name);
  }
  f.require("selftest");
});
