/**
 * iommu-relay demo (foundation stage): loads the native shim, probes which host interfaces this machine has,
 * and shows how an embedded default guest request — "invalidate PASID-less range 0x7f00_0000 + 2 MiB, leaf
 * only" — looks as each host entry format the uAPI layer defines, decoded back with validation.
 *
 * Run: `npx -y deno@2.9.6 task demo`. Needs `--allow-ffi` (the shim), `--allow-read` and `--allow-env` (the shim
 * cache); it opens devices only through the shim and changes nothing on the host.
 *
 * @module
 */
import { parseArgs } from "node:util";
import {
  errnoName,
  IOMMU_HWPT_INVALIDATE,
  IommuHwptInvalidate,
  IommuHwptInvalidateSelftest,
  IommuHwptVtdS1Invalidate,
  MockConstants,
  NativeShim,
} from "../mod.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: { first: { type: "string", default: "0x7f000000" }, bytes: { type: "string", default: "0x200000" } },
});
const first = Number(values.first);
const bytes = Number(values.bytes);
if (!Number.isSafeInteger(first) || !Number.isSafeInteger(bytes) || first % 4096 || bytes % 4096 || bytes <= 0) {
  console.error("error: --first and --bytes must be 4 KiB-aligned byte counts, bytes > 0");
  Deno.exit(2);
}

using shim = await NativeShim.load();
console.log(`shim: ${shim.path}`);
for (const path of ["/dev/iommu", "/dev/vfio/devices/vfio0", "/dev/vfio/vfio", "/dev/kvm"]) {
  const fd = shim.open(path);
  console.log(`  ${path.padEnd(24)} ${fd >= 0 ? "present" : `absent (${errnoName(fd)})`}`);
  if (fd >= 0) shim.close(fd);
}

const hex = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join(" ");
console.log(`\nguest request: invalidate [0x${first.toString(16)}, +0x${bytes.toString(16)}), leaf only`);

const vtd = IommuHwptVtdS1Invalidate.buffer().setPageAddress("addr", first / 4096).setU64("npages", bytes / 4096)
  .set("flags", 1);
console.log(`VT-d stage-1 entry (24 B):  ${hex(vtd.bytes)}`);
console.log("  decoded:", vtd.decode());

// The selftest mock has no ranges: its IOTLB is 4 slots, so a range becomes "all slots".
const mock = IommuHwptInvalidateSelftest.buffer().set("flags", MockConstants.values.IOMMU_TEST_INVALIDATE_FLAG_ALL);
console.log(`selftest entry (8 B):       ${hex(mock.bytes)}`);

const call = IommuHwptInvalidate.buffer().set("hwpt_id", 0).set("data_type", 0).set("entry_len", 24)
  .set("entry_num", 1);
console.log(`${IOMMU_HWPT_INVALIDATE.name} (0x${IOMMU_HWPT_INVALIDATE.request.toString(16)}) args: ${hex(call.bytes)}`);
console.log("\nThe kernel suite (deno task test:kernel) sends these to a real kernel's iommufd.");
