// The typed kernel errors: what a caller can branch on, and the one line a person reads.
import assert from "node:assert/strict";
import { KernelError, LimitError, UnsupportedError } from "../../lib/kernel/errors.ts";
import { Errno } from "../../lib/uapi/errno.ts";

const { EINVAL, EOPNOTSUPP } = Errno.values;

Deno.test("KernelError: a negative errno (as ioctl wrappers return it) is stored positive, with its name", () => {
  const e = new KernelError(-EINVAL, "invalidate", "IOMMU_HWPT_INVALIDATE", 3);
  assert.equal(e.errno, EINVAL);
  assert.equal(e.errnoName, "EINVAL");
  assert.equal(e.entryIndex, 3);
  assert.equal(e.name, "KernelError");
  assert.ok(e instanceof Error);
  assert.equal(e.message, `invalidate: IOMMU_HWPT_INVALIDATE failed with EINVAL (${EINVAL}) at entry 3`);
});

Deno.test("KernelError: no entry index, no 'at entry'; entry 0 is still named; an unknown errno keeps its number", () => {
  assert.equal(new KernelError(EOPNOTSUPP, "alloc", "IOMMU_HWPT_ALLOC").message.includes("at entry"), false);
  assert.match(new KernelError(EINVAL, "invalidate", "IOMMU_HWPT_INVALIDATE", 0).message, /at entry 0$/);
  const unknown = new KernelError(4095, "probe", "open");
  assert.equal(unknown.errno, 4095);
  assert.match(unknown.message, /\(4095\)/);
});

Deno.test("UnsupportedError and LimitError carry the feature or cap they are about", () => {
  const u = new UnsupportedError("viommu", "IOMMU_VIOMMU_ALLOC answered ENOTTY (Linux 6.13+)");
  assert.deepEqual([u.name, u.feature], ["UnsupportedError", "viommu"]);
  assert.match(u.message, /^unsupported: viommu: /);
  const l = new LimitError("pending-waits", 1024, "drain more often");
  assert.deepEqual([l.name, l.limit, l.max], ["LimitError", "pending-waits", 1024]);
  assert.equal(l.message, "limit pending-waits (1024) reached: drain more often");
});
