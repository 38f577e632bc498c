// cli/commands/hw_info.ts (hw-info and probe) as a user runs it: the exact-path grants come before the shim, and
// granted paths reach it (info's report on the same paths alongside).
import assert from "node:assert/strict";
import { CDEV, FFI, run } from "../run.ts";

Deno.test("cli: an ungranted device path is refused before the shim is even loaded", async () => {
  // No --allow-ffi at all: had the CLI reached the shim, Deno would have refused the dlopen instead.
  const r = await run([], ["hw-info", CDEV]);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /not granted: \/dev\/iommu/);
  // /dev/iommu granted, the cdev not: the grant is per exact path.
  const r2 = await run([...FFI, "--allow-read=/dev/iommu", "--allow-write=/dev/iommu"], ["hw-info", CDEV]);
  assert.equal(r2.code, 2);
  assert.match(r2.stderr, new RegExp(`not granted: ${CDEV}`));
  // A read-only grant is not enough.
  const r3 = await run([...FFI, `--allow-read=/dev/iommu,${CDEV}`], ["hw-info", CDEV]);
  assert.match(r3.stderr, /not granted/);
});

Deno.test("cli: granted paths go to the shim (here: no /dev/iommu, so a typed ENOENT)", async () => {
  const hasIommu = (() => {
    try {
      Deno.statSync("/dev/iommu");
      return true;
    } catch {
      return false;
    }
  })();
  const grant = [...FFI, `--allow-read=/dev/iommu,${CDEV}`, `--allow-write=/dev/iommu,${CDEV}`];
  const r = await run(grant, ["hw-info", CDEV]);
  if (!hasIommu) {
    assert.equal(r.code, 1);
    assert.match(r.stderr, /open \/dev\/iommu: open failed with ENOENT \(2\)/);
  }
  const info = await run(grant, ["info", "--cdev", CDEV, "--json"]);
  assert.equal(info.code, 0, info.stderr);
  const report = JSON.parse(info.stdout);
  assert.ok(CDEV in report && "/dev/iommu" in report);
});
