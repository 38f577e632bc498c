// The format table against the uAPI it stands for: each format's entry length is its kernel struct's size, its
// data type the kernel's enum value, and its compile function writes entries of that length.
import assert from "node:assert/strict";
import { EntryWriter } from "../../lib/compile/entries.ts";
import { ENTRY_LENGTH, type Format, FORMAT_SPECS, FORMATS, kernelDataType } from "../../lib/compile/formats.ts";
import { PendingSet } from "../../lib/request/pending.ts";
import {
  HwptInvalidateDataType,
  IommuHwptInvalidateSelftest,
  IommuHwptVtdS1Invalidate,
  IommuViommuArmSmmuv3Invalidate,
  IommuViommuInvalidateSelftest,
  MockConstants,
} from "../../lib/uapi/mod.ts";

const kernelFormats: Record<Exclude<Format, "shadow">, { size: number; dataType: number }> = {
  "vtd-s1": {
    size: IommuHwptVtdS1Invalidate.size,
    dataType: HwptInvalidateDataType.values.IOMMU_HWPT_INVALIDATE_DATA_VTD_S1,
  },
  smmuv3: {
    size: IommuViommuArmSmmuv3Invalidate.size,
    dataType: HwptInvalidateDataType.values.IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3,
  },
  selftest: {
    size: IommuHwptInvalidateSelftest.size,
    dataType: MockConstants.values.IOMMU_HWPT_INVALIDATE_DATA_SELFTEST,
  },
  "selftest-viommu": {
    size: IommuViommuInvalidateSelftest.size,
    dataType: MockConstants.values.IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST,
  },
};

Deno.test("formats: every kernel format's entry length and data type are its uAPI struct's size and enum value", () => {
  assert.deepEqual([...FORMATS].sort(), [...Object.keys(kernelFormats), "shadow"].sort());
  for (const [format, want] of Object.entries(kernelFormats) as [Format, { size: number; dataType: number }][]) {
    assert.equal(ENTRY_LENGTH[format], want.size, `${format} entry length`);
    assert.equal(FORMAT_SPECS[format].entryLength, want.size);
    assert.equal(kernelDataType(format), want.dataType, `${format} data type`);
  }
});

Deno.test("formats: shadow entries are served in user space, so asking for their kernel data type is an error", () => {
  assert.equal(FORMAT_SPECS.shadow.dataType, undefined);
  assert.equal(FORMAT_SPECS.shadow.target, "shadow-domain");
  assert.throws(() => kernelDataType("shadow"), TypeError);
});

Deno.test("formats: each compile function writes whole entries of its format's length for a pending range", () => {
  for (const format of FORMATS) {
    const pending = new PendingSet({ maxRanges: 8, maxPages: 1 << 20 });
    pending.addRange(0x40, 3, false, 1);
    const out = new EntryWriter(ENTRY_LENGTH[format]);
    FORMAT_SPECS[format].compile(pending, { pasid: 2, vdevId: 1, smmu: { kind: "asid", asid: 5 } }, true, out);
    assert.ok(out.count >= 1, `${format} wrote ${out.count} entries`);
    assert.equal(out.tail(0).length, out.count * ENTRY_LENGTH[format], `${format} entries are whole`);
    assert.deepEqual(out.originsOf(0), [1], `${format}: the entry remembers the request it came from`);
  }
});

Deno.test("formats: an SMMUv3 unit without its ASID scope is refused, not compiled as something else", () => {
  const pending = new PendingSet({ maxRanges: 8, maxPages: 64 });
  pending.addAll(1);
  assert.throws(
    () => FORMAT_SPECS.smmuv3.compile(pending, { pasid: 1 }, false, new EntryWriter(ENTRY_LENGTH.smmuv3)),
    TypeError,
  );
});

Deno.test("formats: the table is frozen", () => {
  assert.ok(Object.isFrozen(FORMAT_SPECS) && Object.isFrozen(FORMATS) && Object.isFrozen(ENTRY_LENGTH));
});
