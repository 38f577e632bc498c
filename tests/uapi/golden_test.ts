// The golden check as a test: every struct, field, ioctl number and constant in lib/uapi that the 7.3 headers
// have is compared with a C program compiled against those headers.
import assert from "node:assert/strict";
import { compare, generateC, locateHeaders, runGolden } from "../../tools/uapi_golden.ts";
import { defineStruct, IommuHwptInvalidate, UAPI, type UapiRegistry } from "../../lib/uapi/mod.ts";

const headers = await locateHeaders();

Deno.test("golden: lib/uapi matches the Linux 7.3 headers item by item", async () => {
  const result = await runGolden(UAPI, headers);
  const c = result.counts;
  console.log(
    `golden: compared ${result.compared} items (${c.structs} structs, ${c.fields} fields, ${c.ioctls} ioctls, ` +
      `${c.constants} constants) against ${headers.version}`,
  );
  assert.deepEqual(result.mismatches, []);
  assert.equal(c.structs, UAPI.structs.filter((s) => s.inHeaders).length);
  assert.ok(result.compared > 400);
});

Deno.test("golden: a moved field, a wrong size and a wrong constant each fail the check", async () => {
  const fields = { ...IommuHwptInvalidate.fields, entry_num: { ...IommuHwptInvalidate.fields.entry_num, offset: 28 } };
  const { __reserved: _, ...withoutReserved } = fields;
  const moved = defineStruct({ ...IommuHwptInvalidate, fields: withoutReserved, name: "iommu_hwpt_invalidate" });
  const registry: UapiRegistry = {
    structs: [moved],
    ioctls: [{ ...UAPI.ioctls[0], request: UAPI.ioctls[0].request + 1 }],
    constants: [{ name: "g", header: "x", since: "7.3", values: { IOMMU_HWPT_DATA_SELFTEST: 0xbeef } }],
  };
  const result = await runGolden(registry, headers);
  assert.equal(result.mismatches.length, 3, result.mismatches.join("\n"));
  assert.match(result.mismatches[0], /iommu_hwpt_invalidate\.entry_num: headers say 24 4 0, TypeScript says 28 4 0/);
});

Deno.test("golden: an item the C program did not print is a mismatch, not a pass", () => {
  const registry: UapiRegistry = { structs: [IommuHwptInvalidate], ioctls: [], constants: [] };
  assert.match(generateC(registry), /MEMBER\("iommu_hwpt_invalidate.entry_num"/);
  const result = compare(registry, "size iommu_hwpt_invalidate 32\n");
  assert.equal(result.mismatches.length, IommuHwptInvalidate.layout.length);
});
