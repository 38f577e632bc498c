// Nested HWPTs and IOMMU_HWPT_INVALIDATE against the kernel's mock IOMMU: every entry, batch, flag and error
// path is checked through the mock IOTLB (IOMMU_TEST_OP_MD_CHECK_IOTLB), not through our own model.
import { IOCTL_WITH_POINTER } from "../ffi/native.ts";
import assert from "node:assert/strict";
import { type Hwpt, type Iommufd, KernelError, mockIotlbHolds } from "../lib/kernel/mod.ts";
import {
  defineStruct,
  HwInfoType,
  IOMMU_HWPT_INVALIDATE,
  IommuHwptInvalidate,
  IommuHwptInvalidateSelftest,
  IommuTestHwInfo,
  MockConstants,
} from "../lib/uapi/mod.ts";
import { atLeast, kernelTest, nestedChain, openIommufd } from "./harness.ts";

const M = MockConstants.values;
const DEFAULT = M.IOMMU_TEST_IOTLB_DEFAULT;
const SLOTS = M.MOCK_NESTED_DOMAIN_IOTLB_NUM;
const ENTRY = IommuHwptInvalidateSelftest.size;

/** Selftest entries: each is [flags, iotlb_id]. */
function entries(list: [number, number][]): Uint8Array {
  const bytes = new Uint8Array(Math.max(1, list.length) * ENTRY);
  list.forEach(([flags, id], i) => {
    new DataView(bytes.buffer).setUint32(i * ENTRY, flags, true);
    new DataView(bytes.buffer).setUint32(i * ENTRY + 4, id, true);
  });
  return bytes;
}

/** The mock IOTLB read back from the kernel: each slot is 0, DEFAULT, or -1 (neither). */
function iotlb(iommufd: Iommufd, hwpt: Hwpt): number[] {
  return Array.from(
    { length: SLOTS },
    (_, slot) =>
      mockIotlbHolds(iommufd, hwpt.id, slot, 0) ? 0 : mockIotlbHolds(iommufd, hwpt.id, slot, DEFAULT) ? DEFAULT : -1,
  );
}

const TYPE = M.IOMMU_HWPT_INVALIDATE_DATA_SELFTEST;
const ALL = M.IOMMU_TEST_INVALIDATE_FLAG_ALL;

kernelTest("hwpt: GET_HW_INFO on a mock device returns the selftest type and register", ["selftest"], () => {
  using iommufd = openIommufd();
  using chain = nestedChain(iommufd);
  const info = iommufd.getHwInfo(chain.dev.devId);
  assert.equal(info.type, M.IOMMU_HW_INFO_TYPE_SELFTEST);
  assert.notEqual(info.type, HwInfoType.values.IOMMU_HW_INFO_TYPE_INTEL_VTD);
  const data = IommuTestHwInfo.decode(info.data.subarray(0, IommuTestHwInfo.size));
  assert.equal(data.test_reg, M.IOMMU_HW_INFO_SELFTEST_REGVAL);
});

kernelTest("hwpt: a nested HWPT starts with every IOTLB slot at the value given at allocation", ["selftest"], () => {
  using iommufd = openIommufd();
  using chain = nestedChain(iommufd);
  assert.deepEqual(iotlb(iommufd, chain.nested), [DEFAULT, DEFAULT, DEFAULT, DEFAULT]);
});

kernelTest("hwpt: invalidate one entry clears exactly that slot", ["hwpt-invalidate"], () => {
  using iommufd = openIommufd();
  using chain = nestedChain(iommufd);
  assert.equal(chain.nested.invalidate(TYPE, entries([[0, 2]]), ENTRY, 1), 1);
  assert.deepEqual(iotlb(iommufd, chain.nested), [DEFAULT, DEFAULT, 0, DEFAULT]);
});

kernelTest("hwpt: a batch is handled in one ioctl and clears each named slot", ["hwpt-invalidate"], () => {
  using iommufd = openIommufd();
  using chain = nestedChain(iommufd);
  assert.equal(chain.nested.invalidate(TYPE, entries([[0, 0], [0, 3], [0, 0]]), ENTRY, 3), 3);
  assert.deepEqual(iotlb(iommufd, chain.nested), [0, DEFAULT, DEFAULT, 0]);
});

kernelTest("hwpt: the ALL flag clears every slot", ["hwpt-invalidate"], () => {
  using iommufd = openIommufd();
  using chain = nestedChain(iommufd);
  chain.nested.invalidate(TYPE, entries([[ALL, 0]]), ENTRY, 1);
  assert.deepEqual(iotlb(iommufd, chain.nested), [0, 0, 0, 0]);
});

kernelTest("hwpt: a bad entry in the middle fails with EINVAL, entry_num = entries handled before it", [
  "hwpt-invalidate",
], () => {
  using iommufd = openIommufd();
  using chain = nestedChain(iommufd);
  const batch = entries([[0, 0], [0, 1], [0, SLOTS], [0, 3]]); // slot 4 is out of range
  assert.equal(chain.nested.invalidateRaw(TYPE, batch, ENTRY, 4), -22);
  assert.equal(chain.nested.handled, 2);
  assert.throws(
    () => chain.nested.invalidate(TYPE, batch, ENTRY, 4),
    (e) =>
      e instanceof KernelError && e.errnoName === "EINVAL" && e.entryIndex === 2 && e.ioctl === "IOMMU_HWPT_INVALIDATE",
  );
  // The two before it were applied, the one after it was not.
  assert.deepEqual(iotlb(iommufd, chain.nested), [0, 0, DEFAULT, DEFAULT]);
});

kernelTest("hwpt: unsupported entry flags are EOPNOTSUPP with nothing handled", ["hwpt-invalidate"], () => {
  using iommufd = openIommufd();
  using chain = nestedChain(iommufd);
  assert.equal(chain.nested.invalidateRaw(TYPE, entries([[0x80, 1]]), ENTRY, 1), -95);
  assert.equal(chain.nested.handled, 0);
  assert.deepEqual(iotlb(iommufd, chain.nested), [DEFAULT, DEFAULT, DEFAULT, DEFAULT]);
});

kernelTest("hwpt: an unknown data type is EINVAL; a wrong entry length is EINVAL", ["hwpt-invalidate"], () => {
  using iommufd = openIommufd();
  using chain = nestedChain(iommufd);
  assert.equal(
    chain.nested.invalidateRaw(M.IOMMU_HWPT_INVALIDATE_DATA_SELFTEST_INVALID, entries([[0, 1]]), ENTRY, 1),
    -22,
  );
  assert.equal(chain.nested.handled, 0);
  assert.equal(chain.nested.invalidateRaw(TYPE, new Uint8Array(16), ENTRY + 1, 1), -22);
  assert.equal(chain.nested.invalidateRaw(TYPE, new Uint8Array(16), 0, 1), -22);
});

kernelTest("hwpt: zero entries probe whether a data type is supported", ["hwpt-invalidate"], () => {
  using iommufd = openIommufd();
  using chain = nestedChain(iommufd);
  assert.equal(chain.nested.invalidateRaw(TYPE, entries([]), ENTRY, 0), 0);
  assert.equal(chain.nested.handled, 0);
  assert.equal(chain.nested.invalidateRaw(M.IOMMU_HWPT_INVALIDATE_DATA_SELFTEST_INVALID, entries([]), ENTRY, 0), -22);
});

kernelTest(
  "hwpt: invalidating a paging HWPT fails, with the errno this kernel release uses",
  ["hwpt-invalidate"],
  () => {
    using iommufd = openIommufd();
    using chain = nestedChain(iommufd);
    // Linux 6.12 answers ENOENT (the object is not a nested HWPT), 7.x EINVAL.
    const expected = atLeast(6, 13) ? -22 : -2;
    assert.equal(chain.parent.invalidateRaw(TYPE, entries([[0, 1]]), ENTRY, 1), expected);
  },
);

kernelTest("hwpt: a deliberately wrong struct layout is refused by the kernel", ["hwpt-invalidate"], () => {
  using iommufd = openIommufd();
  using chain = nestedChain(iommufd);
  // entry_num moved onto the reserved word: the kernel sees __reserved != 0 and entry_num 0.
  const wrong = defineStruct({
    ...IommuHwptInvalidate,
    name: "iommu_hwpt_invalidate (wrong)",
    fields: {
      ...IommuHwptInvalidate.fields,
      entry_num: { type: "u32", offset: 28, doc: "misplaced" },
      __reserved: { type: "u32", offset: 24, reserved: true, doc: "misplaced" },
    },
  }).buffer();
  wrong.set("hwpt_id", chain.nested.id).set("data_type", TYPE).set("entry_len", ENTRY).set("entry_num", 1);
  const r = iommufd.shim[IOCTL_WITH_POINTER](
    iommufd.fd,
    IOMMU_HWPT_INVALIDATE.request,
    wrong.bytes,
    8,
    entries([[ALL, 0]]),
  );
  assert.equal(r, -95, "the kernel must refuse a non-zero __reserved with EOPNOTSUPP");
  assert.deepEqual(iotlb(iommufd, chain.nested), [DEFAULT, DEFAULT, DEFAULT, DEFAULT]);
});

kernelTest("hwpt: an IOTLB check against a wrong value fails (the checks can fail)", ["selftest"], () => {
  using iommufd = openIommufd();
  using chain = nestedChain(iommufd);
  assert.equal(mockIotlbHolds(iommufd, chain.nested.id, 0, DEFAULT + 1), false);
  assert.throws(
    () => mockIotlbHolds(iommufd, 0xfffff, 0, 0),
    (e) => e instanceof KernelError && e.errnoName === "ENOENT",
  );
});

kernelTest("hwpt: a nesting parent in use by a nested HWPT is EBUSY to destroy", ["selftest"], () => {
  using iommufd = openIommufd();
  using chain = nestedChain(iommufd);
  // The nesting parent is referenced by the nested HWPT: destroying it first is EBUSY, so disposal order matters.
  assert.throws(() => iommufd.destroy(chain.parent.id), (e) => e instanceof KernelError && e.errnoName === "EBUSY");
});

kernelTest("hwpt: attaching the mock device's RID to the nested HWPT and back", ["selftest"], () => {
  using iommufd = openIommufd();
  using chain = nestedChain(iommufd);
  assert.equal(chain.dev.replace(chain.nested.id), chain.nested.id);
  assert.throws(() => iommufd.destroy(chain.nested.id), (e) => e instanceof KernelError && e.errnoName === "EBUSY");
  chain.dev.replace(chain.ioas.id);
});

kernelTest("hwpt: GET_HW_INFO with an input type (6.17+) returns that type, or is refused before 6.17", [
  "selftest",
], () => {
  using iommufd = openIommufd();
  using chain = nestedChain(iommufd);
  if (atLeast(6, 17)) {
    assert.equal(iommufd.getHwInfo(chain.dev.devId, M.IOMMU_HW_INFO_TYPE_SELFTEST).type, M.IOMMU_HW_INFO_TYPE_SELFTEST);
    assert.throws(
      () => iommufd.getHwInfo(chain.dev.devId, HwInfoType.values.IOMMU_HW_INFO_TYPE_ARM_SMMUV3),
      (e) => e instanceof KernelError && e.ioctl === "IOMMU_GET_HW_INFO",
    );
  } else {
    assert.throws(
      () => iommufd.getHwInfo(chain.dev.devId, M.IOMMU_HW_INFO_TYPE_SELFTEST),
      (e) => e instanceof KernelError && e.errnoName === "EOPNOTSUPP",
    );
  }
});
