/**
 * `drivers/iommu/iommufd/iommufd_test.h` (Linux 7.3): the kernel selftest's mock IOMMU, reachable with
 * `CONFIG_IOMMUFD_TEST`. It runs the real iommufd code (nested HWPTs, invalidation arrays, vIOMMU, PASID attach,
 * fault queues, vEVENTQ) without hardware, which is what the kernel test suite drives.
 *
 * `struct iommu_test_cmd` is a header, a union with one arm per op, and a `last` marker. Each arm is defined
 * here as its own layout (`iommu_test_cmd.<arm>`) whose fields the golden check compares with the C
 * designators `<arm>.<field>`.
 *
 * @module
 */
import { defineStruct, type FieldSpec, type Struct } from "./struct.ts";
import { type ConstantGroup, defineConstants, defineIoctl, io, type Ioctl } from "./ioctl.ts";
import { IOMMUFD_TYPE, IommufdCmd } from "./iommufd.ts";

const H = "iommufd_test.h";

/** The declaration of `iommu_test_op` behind {@linkcode TestOp}: its one definition. */
export const TestOpDeclaration = {
  name: "iommu_test_op",
  header: H,
  since: "6.2",
  values: {
    IOMMU_TEST_OP_ADD_RESERVED: 1,
    IOMMU_TEST_OP_MOCK_DOMAIN: 2,
    IOMMU_TEST_OP_MD_CHECK_MAP: 3,
    IOMMU_TEST_OP_MD_CHECK_REFS: 4,
    IOMMU_TEST_OP_CREATE_ACCESS: 5,
    IOMMU_TEST_OP_DESTROY_ACCESS_PAGES: 6,
    IOMMU_TEST_OP_ACCESS_PAGES: 7,
    IOMMU_TEST_OP_ACCESS_RW: 8,
    IOMMU_TEST_OP_SET_TEMP_MEMORY_LIMIT: 9,
    IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE: 10, // 6.6
    IOMMU_TEST_OP_ACCESS_REPLACE_IOAS: 11, // 6.6
    IOMMU_TEST_OP_MOCK_DOMAIN_FLAGS: 12, // 6.7
    IOMMU_TEST_OP_DIRTY: 13, // 6.7
    IOMMU_TEST_OP_MD_CHECK_IOTLB: 14, // 6.8
    IOMMU_TEST_OP_TRIGGER_IOPF: 15, // 6.11
    IOMMU_TEST_OP_DEV_CHECK_CACHE: 16, // 6.13
    IOMMU_TEST_OP_TRIGGER_VEVENT: 17, // 6.15
    IOMMU_TEST_OP_PASID_ATTACH: 18, // 6.15
    IOMMU_TEST_OP_PASID_REPLACE: 19, // 6.15
    IOMMU_TEST_OP_PASID_DETACH: 20, // 6.15
    IOMMU_TEST_OP_PASID_CHECK_HWPT: 21, // 6.15
  } as const,
} as const;

/** The selftest ops (`IOMMU_TEST_OP_*`), numbered from 1 in declaration order. */
export const TestOp: ConstantGroup<typeof TestOpDeclaration.values> = defineConstants(TestOpDeclaration);

/** The declaration of `iommufd_test_mock` behind {@linkcode MockConstants}: its one definition. */
export const MockConstantsDeclaration = {
  name: "iommufd_test_mock",
  header: H,
  since: "6.2",
  values: {
    MOCK_APERTURE_START: 1 << 24,
    MOCK_APERTURE_LAST: 0x7fff_ffff,
    MOCK_PAGE_SIZE: 2048,
    MOCK_HUGE_PAGE_SIZE: 512 * 2048,
    MOCK_FLAGS_ACCESS_WRITE: 1 << 0,
    MOCK_ACCESS_RW_WRITE: 1 << 0,
    MOCK_FLAGS_DEVICE_NO_DIRTY: 1 << 0,
    MOCK_FLAGS_DEVICE_PASID: 1 << 2,
    MOCK_NESTED_DOMAIN_IOTLB_ID_MAX: 3,
    MOCK_NESTED_DOMAIN_IOTLB_NUM: 4,
    MOCK_DEV_CACHE_ID_MAX: 3,
    MOCK_DEV_CACHE_NUM: 4,
    MOCK_PASID_WIDTH: 20,
    IOMMU_TEST_PASID_RESERVED: 1024,
    IOMMU_HW_INFO_TYPE_SELFTEST: 0xfeedbeef,
    IOMMU_HW_INFO_SELFTEST_REGVAL: 0xdeadbeef,
    IOMMU_HWPT_DATA_SELFTEST: 0xdead,
    IOMMU_TEST_IOTLB_DEFAULT: 0xbadbeef,
    IOMMU_TEST_DEV_CACHE_DEFAULT: 0xbaddad,
    IOMMU_HWPT_INVALIDATE_DATA_SELFTEST: 0xdeadbeef,
    IOMMU_HWPT_INVALIDATE_DATA_SELFTEST_INVALID: 0xdadbeef,
    IOMMU_TEST_INVALIDATE_FLAG_ALL: 1 << 0,
    IOMMU_VIOMMU_TYPE_SELFTEST: 0xdeadbeef,
    IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST: 0xdeadbeef,
    IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST_INVALID: 0xdadbeef,
    IOMMU_VEVENTQ_TYPE_SELFTEST: 0xbeefbeef,
    IOMMU_HW_QUEUE_TYPE_SELFTEST: 0xdeadbeef,
    IOMMU_TEST_HW_QUEUE_MAX: 2,
  } as const,
} as const;

/** Mock limits, device flags and magic values of the selftest. */
export const MockConstants: ConstantGroup<typeof MockConstantsDeclaration.values> = defineConstants(
  MockConstantsDeclaration,
);

const TEST_CMD_SIZE = 72;

/** The fields every `struct iommu_test_cmd` starts with. */
export type TestCmdHeader = {
  size: FieldSpec & { type: "u32" };
  op: FieldSpec & { type: "u32" };
  id: FieldSpec & { type: "u32" };
  __reserved: FieldSpec & { type: "u32"; reserved: true };
  last: FieldSpec & { type: "u32"; reserved: true };
};

function testCmd<const F extends Record<string, FieldSpec>>(
  arm: string,
  op: keyof typeof TestOp.values,
  since: string,
  idDoc: string,
  doc: string,
  armFields: F,
): Struct<TestCmdHeader & F> {
  const fields: Record<string, FieldSpec> = {
    size: { type: "u32", offset: 0, role: "size", doc: "sizeof(struct iommu_test_cmd)" },
    op: { type: "u32", offset: 4, values: { [op]: TestOp.values[op] }, doc: `${op}` },
    id: { type: "u32", offset: 8, doc: idDoc },
    __reserved: { type: "u32", offset: 12, reserved: true, doc: "must be 0" },
  };
  for (const [name, f] of Object.entries(armFields)) {
    fields[name] = { ...f, offset: 16 + f.offset, c: `${arm}.${f.c ?? name}` };
  }
  fields.last = { type: "u32", offset: 64, reserved: true, doc: "end marker (the kernel's min_size); 0" };
  return defineStruct({
    name: `iommu_test_cmd.${arm}`,
    cType: "struct iommu_test_cmd",
    since,
    header: H,
    size: TEST_CMD_SIZE,
    doc,
    fields: fields as TestCmdHeader & F,
  });
}

/** The union arm behind {@linkcode TestCmdMockDomain}: its fields, offsets relative to the arm. */
export const TestCmdMockDomainArm = {
  out_stdev_id: {
    type: "u32",
    offset: 0,
    doc: "output: selftest device object id (destroy it to remove the device)",
  },
  out_hwpt_id: { type: "u32", offset: 4, doc: "output: the HWPT the device got attached to" },
  out_idev_id: { type: "u32", offset: 8, doc: "output: the device's iommufd id (dev_id)" },
} as const;

/** `IOMMU_TEST_OP_MOCK_DOMAIN` (6.2): create a mock device attached to an IOAS (`id`). */
export const TestCmdMockDomain: Struct<TestCmdHeader & typeof TestCmdMockDomainArm> = testCmd(
  "mock_domain",
  "IOMMU_TEST_OP_MOCK_DOMAIN",
  "6.2",
  "IOAS to attach to",
  "Create a mock device and domain.",
  TestCmdMockDomainArm,
);

/** The union arm behind {@linkcode TestCmdMockDomainFlags}: its fields, offsets relative to the arm. */
export const TestCmdMockDomainFlagsArm = {
  out_stdev_id: { type: "u32", offset: 0, doc: "output: selftest device object id" },
  out_hwpt_id: { type: "u32", offset: 4, doc: "output: attached HWPT" },
  out_idev_id: { type: "u32", offset: 8, doc: "output: the device's iommufd id" },
  dev_flags: {
    type: "u32",
    offset: 12,
    flags: { MOCK_FLAGS_DEVICE_NO_DIRTY: 1, MOCK_FLAGS_DEVICE_PASID: 4 },
    doc: "MOCK_FLAGS_DEVICE_*",
  },
} as const;

/** `IOMMU_TEST_OP_MOCK_DOMAIN_FLAGS` (6.7): as MOCK_DOMAIN, with device flags (e.g. PASID support). */
export const TestCmdMockDomainFlags: Struct<TestCmdHeader & typeof TestCmdMockDomainFlagsArm> = testCmd(
  "mock_domain_flags",
  "IOMMU_TEST_OP_MOCK_DOMAIN_FLAGS",
  "6.7",
  "IOAS to attach to",
  "Create a mock device with MOCK_FLAGS_DEVICE_* flags.",
  TestCmdMockDomainFlagsArm,
);

/** The union arm behind {@linkcode TestCmdMockDomainReplace}: its fields, offsets relative to the arm. */
export const TestCmdMockDomainReplaceArm = {
  pt_id: { type: "u32", offset: 0, doc: "input: IOAS or HWPT; output: the HWPT attached" },
} as const;

/** `IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE` (6.6): re-attach a mock device (`id` = stdev) to another IOAS/HWPT. */
export const TestCmdMockDomainReplace: Struct<TestCmdHeader & typeof TestCmdMockDomainReplaceArm> = testCmd(
  "mock_domain_replace",
  "IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE",
  "6.6",
  "selftest device id",
  "Replace a mock device's attachment (its RID).",
  TestCmdMockDomainReplaceArm,
);

/** The union arm behind {@linkcode TestCmdCheckMap}: its fields, offsets relative to the arm. */
export const TestCmdCheckMapArm = {
  iova: { type: "u64", offset: 0, doc: "first IOVA" },
  length: { type: "u64", offset: 8, doc: "bytes" },
  uptr: { type: "u64", offset: 16, doc: "user pointer the IOVAs must translate to" },
} as const;

/** `IOMMU_TEST_OP_MD_CHECK_MAP` (6.2): check that IOVAs translate to the user pages at `uptr`. */
export const TestCmdCheckMap: Struct<TestCmdHeader & typeof TestCmdCheckMapArm> = testCmd(
  "check_map",
  "IOMMU_TEST_OP_MD_CHECK_MAP",
  "6.2",
  "IOAS or HWPT",
  "Check a mock domain's mapping.",
  TestCmdCheckMapArm,
);

/** The union arm behind {@linkcode TestCmdCreateAccess}: its fields, offsets relative to the arm. */
export const TestCmdCreateAccessArm = {
  out_access_fd: { type: "u32", offset: 0, doc: "output: the access's fd (close it to destroy the access)" },
  flags: {
    type: "u32",
    offset: 4,
    flags: { MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES: 1 },
    doc: "MOCK_FLAGS_ACCESS_CREATE_*",
  },
} as const;

/** `IOMMU_TEST_OP_CREATE_ACCESS` (6.2): an in-kernel access (an emulated device's DMA path) to an IOAS, as an fd. */
export const TestCmdCreateAccess: Struct<TestCmdHeader & typeof TestCmdCreateAccessArm> = testCmd(
  "create_access",
  "IOMMU_TEST_OP_CREATE_ACCESS",
  "6.2",
  "IOAS",
  "Create an iommufd access on an IOAS; the kernel returns it as a file descriptor.",
  TestCmdCreateAccessArm,
);

/** The union arm behind {@linkcode TestCmdAccessRw}: its fields, offsets relative to the arm. */
export const TestCmdAccessRwArm = {
  iova: { type: "u64", offset: 0, doc: "first IOVA" },
  length: { type: "u64", offset: 8, doc: "bytes" },
  uptr: { type: "u64", offset: 16, doc: "user buffer read from (write) or written to (read)" },
  flags: {
    type: "u32",
    offset: 24,
    flags: { MOCK_ACCESS_RW_WRITE: 1, MOCK_ACCESS_RW_SLOW_PATH: 4 },
    doc: "MOCK_ACCESS_RW_*",
  },
} as const;

/** `IOMMU_TEST_OP_ACCESS_RW` (6.2): read or write IOVAs through an access, honouring the IOAS's permissions. */
export const TestCmdAccessRw: Struct<TestCmdHeader & typeof TestCmdAccessRwArm> = testCmd(
  "access_rw",
  "IOMMU_TEST_OP_ACCESS_RW",
  "6.2",
  "the access fd",
  "Copy between user memory and IOVAs as an emulated device would DMA; a write to a read-only mapping is EPERM.",
  TestCmdAccessRwArm,
);

/** The union arm behind {@linkcode TestCmdDirty}: its fields, offsets relative to the arm. */
export const TestCmdDirtyArm = {
  flags: { type: "u32", offset: 0, doc: "unused by the mock; 0" },
  iova: { type: "u64", offset: 8, doc: "IOVA of bit 0, a multiple of page_size" },
  length: { type: "u64", offset: 16, doc: "bytes of IOVA, a multiple of page_size" },
  page_size: { type: "u64", offset: 24, doc: "bytes per bit" },
  uptr: { type: "u64", offset: 32, doc: "user pointer to the bitmap of pages to mark dirty" },
  out_nr_dirty: { type: "u64", offset: 40, doc: "output: bits that were set (pages marked)" },
} as const;

/**
 * `IOMMU_TEST_OP_DIRTY` (6.7): mark the pages whose bits are set in the bitmap at `uptr` dirty in a mock paging
 * domain (`id`, the HWPT) whose dirty tracking is on, as a device writing them would.
 */
export const TestCmdDirty: Struct<TestCmdHeader & typeof TestCmdDirtyArm> = testCmd(
  "dirty",
  "IOMMU_TEST_OP_DIRTY",
  "6.7",
  "mock paging HWPT with dirty tracking on",
  "Set the dirty bits of chosen pages of a mock domain (a device's writes, without a device).",
  TestCmdDirtyArm,
);

/** The union arm behind {@linkcode TestCmdCheckIotlb}: its fields, offsets relative to the arm. */
export const TestCmdCheckIotlbArm = {
  iotlb_id: { type: "u32", offset: 0, c: "id", doc: "IOTLB slot, 0..MOCK_NESTED_DOMAIN_IOTLB_ID_MAX" },
  iotlb: { type: "u32", offset: 4, doc: "expected value" },
} as const;

/** `IOMMU_TEST_OP_MD_CHECK_IOTLB` (6.8): check one slot of a mock nested domain's IOTLB. */
export const TestCmdCheckIotlb: Struct<TestCmdHeader & typeof TestCmdCheckIotlbArm> = testCmd(
  "check_iotlb",
  "IOMMU_TEST_OP_MD_CHECK_IOTLB",
  "6.8",
  "nested HWPT",
  "Compare a mock IOTLB slot.",
  TestCmdCheckIotlbArm,
);

/** The union arm behind {@linkcode TestCmdTriggerIopf}: its fields, offsets relative to the arm. */
export const TestCmdTriggerIopfArm = {
  dev_id: { type: "u32", offset: 0, doc: "faulting device (iommufd id)" },
  pasid: { type: "u32", offset: 4, doc: "PASID" },
  grpid: { type: "u32", offset: 8, doc: "page request group" },
  perm: { type: "u32", offset: 12, doc: "IOMMU_PGFAULT_PERM_*" },
  addr: { type: "u64", offset: 16, doc: "faulting address" },
} as const;

/** `IOMMU_TEST_OP_TRIGGER_IOPF` (6.11): make a mock device raise an I/O page fault. */
export const TestCmdTriggerIopf: Struct<TestCmdHeader & typeof TestCmdTriggerIopfArm> = testCmd(
  "trigger_iopf",
  "IOMMU_TEST_OP_TRIGGER_IOPF",
  "6.11",
  "unused",
  "Raise an IOPF.",
  TestCmdTriggerIopfArm,
);

/** The union arm behind {@linkcode TestCmdCheckDevCache}: its fields, offsets relative to the arm. */
export const TestCmdCheckDevCacheArm = {
  cache_id: { type: "u32", offset: 0, c: "id", doc: "cache slot, 0..MOCK_DEV_CACHE_ID_MAX" },
  cache: { type: "u32", offset: 4, doc: "expected value" },
} as const;

/** `IOMMU_TEST_OP_DEV_CHECK_CACHE` (6.13): check one slot of a mock device's cache. */
export const TestCmdCheckDevCache: Struct<TestCmdHeader & typeof TestCmdCheckDevCacheArm> = testCmd(
  "check_dev_cache",
  "IOMMU_TEST_OP_DEV_CHECK_CACHE",
  "6.13",
  "device (iommufd dev_id)",
  "Compare a mock device cache slot.",
  TestCmdCheckDevCacheArm,
);

/** The union arm behind {@linkcode TestCmdTriggerVevent}: its fields, offsets relative to the arm. */
export const TestCmdTriggerVeventArm = {
  dev_id: { type: "u32", offset: 0, doc: "device (iommufd id)" },
} as const;

/** `IOMMU_TEST_OP_TRIGGER_VEVENT` (6.15): make a mock device report a vEVENT. */
export const TestCmdTriggerVevent: Struct<TestCmdHeader & typeof TestCmdTriggerVeventArm> = testCmd(
  "trigger_vevent",
  "IOMMU_TEST_OP_TRIGGER_VEVENT",
  "6.15",
  "unused",
  "Raise a vEVENT.",
  TestCmdTriggerVeventArm,
);

/** The union arm behind {@linkcode TestCmdPasidAttach}: its fields, offsets relative to the arm. */
export const TestCmdPasidAttachArm = {
  pasid: { type: "u32", offset: 0, doc: "PASID" },
  pt_id: { type: "u32", offset: 4, doc: "HWPT (or IOAS)" },
} as const;

/** `IOMMU_TEST_OP_PASID_ATTACH` (6.15): attach one PASID of a mock device (`id` = stdev) to a HWPT. */
export const TestCmdPasidAttach: Struct<TestCmdHeader & typeof TestCmdPasidAttachArm> = testCmd(
  "pasid_attach",
  "IOMMU_TEST_OP_PASID_ATTACH",
  "6.15",
  "selftest device",
  "Attach a PASID.",
  TestCmdPasidAttachArm,
);

/** The union arm behind {@linkcode TestCmdPasidReplace}: its fields, offsets relative to the arm. */
export const TestCmdPasidReplaceArm = {
  pasid: { type: "u32", offset: 0, doc: "PASID" },
  pt_id: { type: "u32", offset: 4, doc: "new HWPT (or IOAS)" },
} as const;

/** `IOMMU_TEST_OP_PASID_REPLACE` (6.15): replace one PASID's attachment. */
export const TestCmdPasidReplace: Struct<TestCmdHeader & typeof TestCmdPasidReplaceArm> = testCmd(
  "pasid_replace",
  "IOMMU_TEST_OP_PASID_REPLACE",
  "6.15",
  "selftest device",
  "Replace a PASID.",
  TestCmdPasidReplaceArm,
);

/** The union arm behind {@linkcode TestCmdPasidDetach}: its fields, offsets relative to the arm. */
export const TestCmdPasidDetachArm = {
  pasid: { type: "u32", offset: 0, doc: "PASID" },
} as const;

/** `IOMMU_TEST_OP_PASID_DETACH` (6.15): detach one PASID. */
export const TestCmdPasidDetach: Struct<TestCmdHeader & typeof TestCmdPasidDetachArm> = testCmd(
  "pasid_detach",
  "IOMMU_TEST_OP_PASID_DETACH",
  "6.15",
  "selftest device",
  "Detach a PASID.",
  TestCmdPasidDetachArm,
);

/** The union arm behind {@linkcode TestCmdPasidCheck}: its fields, offsets relative to the arm. */
export const TestCmdPasidCheckArm = {
  pasid: { type: "u32", offset: 0, doc: "PASID" },
  hwpt_id: { type: "u32", offset: 4, doc: "expected HWPT, 0 for detached" },
} as const;

/** `IOMMU_TEST_OP_PASID_CHECK_HWPT` (6.15): check which HWPT a PASID is attached to (0 = none). */
export const TestCmdPasidCheck: Struct<TestCmdHeader & typeof TestCmdPasidCheckArm> = testCmd(
  "pasid_check",
  "IOMMU_TEST_OP_PASID_CHECK_HWPT",
  "6.15",
  "selftest device",
  "Check a PASID's HWPT.",
  TestCmdPasidCheckArm,
);

/** The declaration of `struct iommu_test_hw_info` behind {@linkcode IommuTestHwInfo}: its one definition. */
export const IommuTestHwInfoLayout = {
  name: "iommu_test_hw_info",
  since: "6.6",
  header: H,
  size: 8,
  doc: "Mock hardware info (IOMMU_HW_INFO_TYPE_SELFTEST).",
  fields: {
    flags: { type: "u32", offset: 0, doc: "0" },
    test_reg: { type: "u32", offset: 4, doc: "IOMMU_HW_INFO_SELFTEST_REGVAL" },
  },
} as const;

/** `struct iommu_test_hw_info` (6.6): what GET_HW_INFO returns for a mock device. */
export const IommuTestHwInfo: Struct<typeof IommuTestHwInfoLayout.fields> = defineStruct(IommuTestHwInfoLayout);

/** The declaration of `struct iommu_hwpt_selftest` behind {@linkcode IommuHwptSelftest}: its one definition. */
export const IommuHwptSelftestLayout = {
  name: "iommu_hwpt_selftest",
  since: "6.7",
  header: H,
  size: 8,
  minSize: 4,
  doc: "IOMMU_HWPT_DATA_SELFTEST: the value every IOTLB slot of the new nested domain starts with.",
  fields: {
    iotlb: { type: "u32", offset: 0, doc: "initial value of every mock IOTLB slot" },
    pagetable_type: {
      type: "u32",
      offset: 4,
      values: { MOCK_IOMMUPT_DEFAULT: 0, MOCK_IOMMUPT_HUGE: 1 },
      doc: "MOCK_IOMMUPT_*",
    },
  },
} as const;

/** `struct iommu_hwpt_selftest` (6.7; pagetable_type 6.19): data for a mock nested HWPT. */
export const IommuHwptSelftest: Struct<typeof IommuHwptSelftestLayout.fields> = defineStruct(IommuHwptSelftestLayout);

/**
 * The `data` of `IOMMU_HWPT_ALLOC` for a mock nested HWPT: `iommu_hwpt_selftest` with every IOTLB slot
 * starting at `iotlb`, sent as its compact prefix so that 6.7–6.18 kernels (4-byte struct) accept it too.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { selftestHwptData } from "./selftest.ts";
 * const data = selftestHwptData(7);
 * assert.equal(data.type, 0xdead);
 * assert.deepEqual(data.bytes, new Uint8Array([7, 0, 0, 0]));
 * ```
 */
export function selftestHwptData(iotlb: number): { type: number; bytes: Uint8Array } {
  const bytes = IommuHwptSelftest.buffer().set("iotlb", iotlb).bytes;
  return { type: MockConstants.values.IOMMU_HWPT_DATA_SELFTEST, bytes: IommuHwptSelftest.compact(bytes) };
}

/** The declaration of `struct iommu_hwpt_invalidate_selftest` behind {@linkcode IommuHwptInvalidateSelftest}: its one definition. */
export const IommuHwptInvalidateSelftestLayout = {
  name: "iommu_hwpt_invalidate_selftest",
  since: "6.8",
  header: H,
  size: 8,
  doc: "IOMMU_HWPT_INVALIDATE_DATA_SELFTEST: zero one IOTLB slot, or all with IOMMU_TEST_INVALIDATE_FLAG_ALL.",
  fields: {
    flags: {
      type: "u32",
      offset: 0,
      flags: { IOMMU_TEST_INVALIDATE_FLAG_ALL: 1 },
      doc: "IOMMU_TEST_INVALIDATE_FLAG_ALL",
    },
    iotlb_id: { type: "u32", offset: 4, doc: "slot to zero, 0..MOCK_NESTED_DOMAIN_IOTLB_ID_MAX" },
  },
} as const;

/** `struct iommu_hwpt_invalidate_selftest` (6.8): one mock IOTLB invalidation entry. */
export const IommuHwptInvalidateSelftest: Struct<typeof IommuHwptInvalidateSelftestLayout.fields> = defineStruct(
  IommuHwptInvalidateSelftestLayout,
);

/** The declaration of `struct iommu_viommu_invalidate_selftest` behind {@linkcode IommuViommuInvalidateSelftest}: its one definition. */
export const IommuViommuInvalidateSelftestLayout = {
  name: "iommu_viommu_invalidate_selftest",
  since: "6.13",
  header: H,
  size: 12,
  doc: "IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST: zero a device cache slot of the vDEVICE with virtual id vdev_id.",
  fields: {
    flags: {
      type: "u32",
      offset: 0,
      flags: { IOMMU_TEST_INVALIDATE_FLAG_ALL: 1 },
      doc: "IOMMU_TEST_INVALIDATE_FLAG_ALL",
    },
    vdev_id: { type: "u32", offset: 4, doc: "the device's virtual id (vDEVICE virt_id)" },
    cache_id: { type: "u32", offset: 8, doc: "slot, 0..MOCK_DEV_CACHE_ID_MAX" },
  },
} as const;

/** `struct iommu_viommu_invalidate_selftest` (6.13): one mock vIOMMU (device cache) invalidation entry. */
export const IommuViommuInvalidateSelftest: Struct<typeof IommuViommuInvalidateSelftestLayout.fields> = defineStruct(
  IommuViommuInvalidateSelftestLayout,
);

/** The declaration of `struct iommu_viommu_event_selftest` behind {@linkcode IommuViommuEventSelftest}: its one definition. */
export const IommuViommuEventSelftestLayout = {
  name: "iommu_viommu_event_selftest",
  since: "6.15",
  header: H,
  size: 4,
  doc: "IOMMU_VEVENTQ_TYPE_SELFTEST record payload.",
  fields: { virt_id: { type: "u32", offset: 0, doc: "the device's virtual id" } },
} as const;

/** `struct iommu_viommu_event_selftest` (6.15): the payload of a mock vEVENT. */
export const IommuViommuEventSelftest: Struct<typeof IommuViommuEventSelftestLayout.fields> = defineStruct(
  IommuViommuEventSelftestLayout,
);

/** `IOMMU_TEST_CMD` = `_IO(IOMMUFD_TYPE, IOMMUFD_CMD_BASE + 32)`. */
export const IOMMU_TEST_CMD: Ioctl = defineIoctl({
  name: "IOMMU_TEST_CMD",
  request: io(IOMMUFD_TYPE, IommufdCmd.values.IOMMUFD_CMD_BASE + 32),
  struct: TestCmdMockDomain,
  since: "6.2",
});

/** Everything this module defines. */
export const SELFTEST_UAPI = {
  structs: [
    TestCmdMockDomain,
    TestCmdMockDomainFlags,
    TestCmdMockDomainReplace,
    TestCmdCheckMap,
    TestCmdCreateAccess,
    TestCmdAccessRw,
    TestCmdCheckIotlb,
    TestCmdDirty,
    TestCmdTriggerIopf,
    TestCmdCheckDevCache,
    TestCmdTriggerVevent,
    TestCmdPasidAttach,
    TestCmdPasidReplace,
    TestCmdPasidDetach,
    TestCmdPasidCheck,
    IommuTestHwInfo,
    IommuHwptSelftest,
    IommuHwptInvalidateSelftest,
    IommuViommuInvalidateSelftest,
    IommuViommuEventSelftest,
  ],
  constants: [TestOp, MockConstants],
  ioctls: [IOMMU_TEST_CMD],
} as const;
