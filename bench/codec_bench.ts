// Encode/decode of the hot structures (issue 8): guest descriptors and commands decoded into reused scratch objects
// against a fresh object per decode, host entries compiled into a reused entry buffer, and the fault path's
// iommu_hwpt_pgfault record. (iommu_hwpt_invalidate's encoding is in ffi_bench.ts.) Run: deno task bench
import { decodeVtdDescriptor, VtdDescriptorScratch } from "../lib/frontends/vtd/descriptors.ts";
import { vtdPasidIotlb, vtdWait, writeVtdDescriptor } from "../lib/frontends/vtd/encode.ts";
import { decodeSmmuCommand, SmmuCommandScratch } from "../lib/frontends/smmuv3/commands.ts";
import { PendingSet } from "../lib/request/pending.ts";
import { EntryWriter } from "../lib/compile/entries.ts";
import { compileVtd } from "../lib/compile/vtd.ts";
import { compileSmmuv3 } from "../lib/compile/smmuv3.ts";
import { IommuHwptPgfault } from "../lib/uapi/mod.ts";

let sink = 0;
const vtd = new Uint8Array(64);
writeVtdDescriptor(vtd, 0, 32, vtdPasidIotlb(1, 5, { page: 0x7f000, am: 9, leaf: true }));
writeVtdDescriptor(vtd, 32, 32, vtdWait(0x8000, 0xcafe));
const vtdScratch = new VtdDescriptorScratch();
Deno.bench({
  name: "VT-d 256-bit descriptor (PASID-IOTLB, wait) into a reused scratch",
  group: "decode VT-d descriptor",
  baseline: true,
  fn() {
    sink ^= decodeVtdDescriptor(vtd, 0, 32, vtdScratch).type.length;
    sink ^= decodeVtdDescriptor(vtd, 32, 32, vtdScratch).type.length;
  },
});
Deno.bench({
  name: "VT-d 256-bit descriptor (PASID-IOTLB, wait) into a new object each",
  group: "decode VT-d descriptor",
  fn() {
    sink ^= decodeVtdDescriptor(vtd, 0, 32).type.length;
    sink ^= decodeVtdDescriptor(vtd, 32, 32).type.length;
  },
});

const smmu = new Uint8Array(32);
const sv = new DataView(smmu.buffer);
sv.setUint32(0, 0x12 | (4 << 12) | (1 << 20), true); // TLBI_NH_VA, NUM 5, SCALE 1
sv.setUint32(4, 9 << 16, true);
sv.setUint32(8, (0x100 << 12) | (1 << 10) | 1, true); // TG 4 KiB, LEAF
sv.setUint32(16, 0x46, true); // CMD_SYNC
const smmuScratch = new SmmuCommandScratch();
Deno.bench({
  name: "SMMUv3 command (TLBI_NH_VA, CMD_SYNC) into a reused scratch",
  group: "decode SMMUv3 command",
  baseline: true,
  fn() {
    sink ^= decodeSmmuCommand(smmu, 0, smmuScratch).op.length;
    sink ^= decodeSmmuCommand(smmu, 16, smmuScratch).op.length;
  },
});
Deno.bench({
  name: "SMMUv3 command (TLBI_NH_VA, CMD_SYNC) into a new object each",
  group: "decode SMMUv3 command",
  fn() {
    sink ^= decodeSmmuCommand(smmu, 0).op.length;
    sink ^= decodeSmmuCommand(smmu, 16).op.length;
  },
});

// Host entries: one coalesced range compiled into the reused writer of its format.
const pending = new PendingSet({ maxRanges: 64, maxPages: 1 << 18 });
const vtdWriter = new EntryWriter(24), smmuWriter = new EntryWriter(16);
const unit = { kind: "asid" as const, asid: 9 };
let i = 0;
Deno.bench({
  name: "VT-d S1 entry (iommu_hwpt_vtd_s1_invalidate, 24 B) for one range",
  group: "compile",
  baseline: true,
  fn() {
    pending.addRange((i++ & 1023) * 8, 4, true, i);
    vtdWriter.reset();
    compileVtd(pending, vtdWriter);
    pending.clear();
  },
});
Deno.bench({
  name: "SMMUv3 TLBI_NH_VA with RIL (16 B commands) for the same range",
  group: "compile",
  fn() {
    pending.addRange((i++ & 1023) * 8, 4, true, i);
    smmuWriter.reset();
    compileSmmuv3(pending, unit, true, smmuWriter);
    pending.clear();
  },
});

// The fault path: one iommu_hwpt_pgfault record, validated, into a new object (not on the invalidation path).
const record = new Uint8Array(IommuHwptPgfault.size);
const rv = new DataView(record.buffer);
rv.setUint32(4, 0x10, true); // dev_id
rv.setUint32(8, 5, true); // pasid
Deno.bench({
  name: "iommu_hwpt_pgfault (48 B) decoded and validated",
  fn() {
    sink ^= IommuHwptPgfault.decode(record).pasid;
  },
});

globalThis.addEventListener("unload", () => {
  if (sink === 0.5) console.log(sink); // keeps the decodes observable
});
