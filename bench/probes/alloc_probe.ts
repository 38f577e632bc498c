// Run by bench/hotpath_bench.ts under --trace-gc: one hot path, warmed up (50,000 iterations), then N more. The
// bench compares what the young-generation scavenges freed with N = 0 and N = 1,000,000.
import { RelayQueue } from "../../lib/core/queue.ts";
import { DrainOutcome } from "../../lib/core/outcome.ts";
import type { Backend } from "../../lib/backend/backend.ts";
import { HwptAllocFlags, IommuHwptInvalidate, MockConstants, selftestHwptData } from "../../lib/uapi/mod.ts";
import { NativeShim } from "../../ffi/native.ts";
import { Iommufd } from "../../lib/kernel/iommufd.ts";
import { MockDevice } from "../../lib/kernel/selftest.ts";
import { KernelBackend } from "../../lib/backend/kernel.ts";
import { guestMemoryOver } from "../../lib/core/memory.ts";
import { VtdInvalidationQueue } from "../../lib/frontends/vtd/queue.ts";
import { SmmuCommandQueue } from "../../lib/frontends/smmuv3/cmdq.ts";
import { vtdPasidIotlb, vtdWait, writeVtdDescriptor } from "../../lib/frontends/vtd/encode.ts";

const path = Deno.args[0];
const N = Number(Deno.args[1] ?? 1_000_000);
const WARM_UP = Number(Deno.args[2] ?? 50_000);
const nullBackend: Backend = {
  invalidate(_t, _f, _e, count, status) {
    status.errno = 0;
    status.handled = count;
  },
};
let step: () => void;
if (path === "encode") {
  const b = IommuHwptInvalidate.buffer();
  let i = 0;
  step = () => void b.set("hwpt_id", i++ & 0xffff).set("data_type", 1).set("entry_len", 24).set("entry_num", 1);
} else if (path === "relay") {
  const q = new RelayQueue(nullBackend);
  q.bind(1, 5, { targetId: 7, format: "vtd-s1" });
  let i = 0;
  const inv = {
    op: "invalidate" as const,
    domain: 1,
    scope: { kind: "pasid-range" as const, pasid: 5, firstPage: 0, pages: 1 },
  };
  const sync = { op: "sync" as const };
  const out = new DrainOutcome();
  step = () => {
    (inv.scope as { firstPage: number }).firstPage = (i++ & 0xff) * 32;
    q.submit(inv);
    q.submit(sync);
    q.drainInto(out);
  };
} else if (path === "doorbell") {
  // The VMM's side of a strict-mode guest: one doorbell = (PASID-IOTLB page invalidation, wait with status write),
  // decoded from guest RAM, relayed and completed. The guest's descriptors are written once, all round the ring.
  const ram = new Uint8Array(1 << 20);
  const q = new RelayQueue(nullBackend);
  q.bind(1, 5, { targetId: 7, format: "vtd-s1" });
  const qi = new VtdInvalidationQueue(guestMemoryOver(ram), q);
  qi.writeIqa(0x10000); // 4 KiB: 256 descriptors of 128 bits
  for (let i = 0; i < 128; i++) {
    writeVtdDescriptor(ram, 0x10000 + 32 * i, 16, vtdPasidIotlb(1, 5, { page: i * 8, am: 0 }));
    writeVtdDescriptor(ram, 0x10000 + 32 * i + 16, 16, vtdWait(0x8000, i));
  }
  let tail = 0;
  step = () => {
    tail = (tail + 32) % 4096;
    const r = qi.writeIqt(tail);
    if (r.processed !== 2 || r.waitsCompleted !== 1) throw new Error(`doorbell: ${JSON.stringify(r)}`);
  };
} else if (path === "smmu-cmdq") {
  // An SMMUv3 guest's strict unmap: (TLBI_NH_VA of one page of ASID 9, CMD_SYNC) per PROD write.
  const ram = new Uint8Array(1 << 20);
  const q = new RelayQueue(nullBackend);
  q.bind(1, 3, { targetId: 7, format: "smmuv3", asid: 9 });
  const users = [{ domain: 1, pasid: 3 }], domains = [1];
  const cmdq = new SmmuCommandQueue(guestMemoryOver(ram), q, { asidUsers: () => users, domains: () => domains });
  cmdq.writeBase(0x10000 | 8); // 256 commands of 16 bytes
  const v = new DataView(ram.buffer);
  for (let i = 0; i < 128; i++) {
    v.setUint32(0x10000 + 32 * i, 0x12, true); // TLBI_NH_VA
    v.setUint32(0x10000 + 32 * i + 4, 9 << 16, true);
    v.setUint32(0x10000 + 32 * i + 8, (i * 8) << 12, true);
    v.setUint32(0x10000 + 32 * i + 16, 0x46, true); // CMD_SYNC
  }
  let prod = 0;
  step = () => {
    prod = (prod + 2) % 512; // index and wrap bit
    const r = cmdq.writeProd(prod);
    if (r.processed !== 2 || r.syncsCompleted !== 1) throw new Error(`cmdq: ${JSON.stringify(r)}`);
  };
} else if (path === "kernel") {
  // On a kernel with the iommufd selftest (the test VM): the relay's whole host side — compile, the uAPI struct,
  // the FFI call, the real IOMMU_HWPT_INVALIDATE — for one invalidation + wait to a mock nested HWPT.
  const shim = await NativeShim.load();
  const iommufd = Iommufd.open(shim);
  const ioas = iommufd.allocIoas();
  const dev = MockDevice.create(iommufd, ioas.id);
  const parent = iommufd.allocHwpt({
    devId: dev.devId,
    ptId: ioas.id,
    flags: HwptAllocFlags.values.IOMMU_HWPT_ALLOC_NEST_PARENT,
  });
  const nested = iommufd.allocHwpt({
    devId: dev.devId,
    ptId: parent.id,
    data: selftestHwptData(MockConstants.values.IOMMU_TEST_IOTLB_DEFAULT),
  });
  const q = new RelayQueue(new KernelBackend(iommufd));
  q.bind(1, 5, { targetId: nested.id, format: "selftest" });
  const inv = {
    op: "invalidate" as const,
    domain: 1,
    scope: { kind: "pasid-range" as const, pasid: 5, firstPage: 0, pages: 1 },
  };
  const sync = { op: "sync" as const };
  const out = new DrainOutcome();
  step = () => {
    q.submit(inv);
    q.submit(sync);
    if (q.drainInto(out).failures.length) throw new Error(`IOMMU_HWPT_INVALIDATE failed: ${out.failures[0].errnoName}`);
  };
} else throw new Error(`unknown path ${path}`);
for (let i = 0; i < WARM_UP; i++) step();
for (let i = 0; i < N; i++) step();
