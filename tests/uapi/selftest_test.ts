import assert from "node:assert/strict";
import {
  IOMMU_TEST_CMD,
  MockConstants,
  SELFTEST_UAPI,
  TestCmdCheckIotlb,
  TestCmdMockDomain,
  TestOp,
} from "../../lib/uapi/mod.ts";
import { checkBadInputs, fuzzDecoders } from "./bad_input.ts";

Deno.test("selftest: every decoder rejects bad input with a typed error", () => {
  assert.ok(checkBadInputs(SELFTEST_UAPI.structs) >= 60);
  assert.ok(fuzzDecoders(SELFTEST_UAPI.structs, 10_000, 0x5e1f) > 0);
});

Deno.test("selftest: each test command arm pins its op", () => {
  const cmd = TestCmdCheckIotlb.buffer().set("op", TestOp.values.IOMMU_TEST_OP_MD_CHECK_IOTLB).set("id", 9)
    .set("iotlb_id", 2).set("iotlb", MockConstants.values.IOMMU_TEST_IOTLB_DEFAULT);
  assert.equal(cmd.decode().iotlb_id, 2);
  assert.equal(cmd.offsetOf("iotlb_id"), 16);
  cmd.set("op", TestOp.values.IOMMU_TEST_OP_MOCK_DOMAIN);
  assert.throws(() => cmd.decode(), /unknown-value/);
  assert.equal(TestCmdMockDomain.size, 72);
  assert.equal(IOMMU_TEST_CMD.request, 0x3ba0);
});
