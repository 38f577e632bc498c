import assert from "node:assert/strict";
import { Errno, errnoName } from "../../lib/uapi/mod.ts";

Deno.test("errno: names for negated and positive values, E<n> for unknown ones", () => {
  assert.equal(errnoName(-2), "ENOENT");
  assert.equal(errnoName(Errno.values.EOPNOTSUPP), "EOPNOTSUPP");
  assert.equal(errnoName(-4095), "E4095");
});
