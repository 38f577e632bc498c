// Run by bench/hotpath_bench.ts and the hot-path tests (tests/alloc_probe.ts) under --trace-gc: one hot path of
// bench/probes/paths.ts, warmed up (50,000 iterations by default), then N more. The callers compare the scavenges of
// a run with N and one without.
// Usage: alloc_probe.ts <encode|relay|doorbell|smmu-cmdq|shared|shared-vtd|doorbell-ioctl|batch64-ioctl|kernel> <N>
// [warm-up]
import { RelayQueue } from "../../lib/relay/queue.ts";
import { SharedDoorbell, SharedRelay, sharedRelayBytes } from "../../lib/relay/shared.ts";
import { IommuHwptInvalidate } from "../../lib/uapi/mod.ts";
import { NativeShim } from "../../ffi/native.ts";
import { Iommufd } from "../../lib/kernel/iommufd.ts";
import { mockNestedChain } from "../../lib/kernel/selftest.ts";
import { KernelBackend } from "../../lib/host/kernel.ts";
import { CheapIoctlBackend, nullBackend, relayStep, smmuProdStep, vtdDoorbellStep, vtdPipelineStep } from "./paths.ts";

const path = Deno.args[0];
const N = Number(Deno.args[1] ?? 1_000_000);
const WARM_UP = Number(Deno.args[2] ?? 50_000);
let step: () => void;
if (path === "encode") {
  const b = IommuHwptInvalidate.buffer();
  let i = 0;
  step = () => void b.set("hwpt_id", i++ & 0xffff).set("data_type", 1).set("entry_len", 24).set("entry_num", 1);
} else if (path === "relay" || path === "doorbell") {
  const q = new RelayQueue(nullBackend);
  q.bind(1, 5, { targetId: 7, format: "vtd-s1" });
  step = path === "relay" ? relayStep(q) : vtdDoorbellStep(q);
} else if (path === "smmu-cmdq") {
  const q = new RelayQueue(nullBackend);
  q.bind(1, 3, { targetId: 7, format: "smmuv3", asid: 9 });
  step = smmuProdStep(q);
} else if (path === "shared") {
  // The multi-vCPU relay's combining path (one thread: the relay is always idle, so every doorbell combines).
  const layout = { slots: 64, bindings: 16 };
  const relay = new SharedRelay(new SharedArrayBuffer(sharedRelayBytes(layout)), layout, new RelayQueue(nullBackend));
  relay.bind(1, 5, { targetId: 7, format: "vtd-s1" });
  const requests = [
    { op: "invalidate" as const, domain: 1, scope: { kind: "pasid-range" as const, pasid: 5, firstPage: 0, pages: 1 } },
    { op: "sync" as const },
  ];
  const out = new SharedDoorbell();
  step = () => {
    if (relay.doorbellInto(requests, out).errno(1) !== 0) throw new Error("shared relay: the wait failed");
  };
} else if (path === "shared-vtd") {
  // A vCPU's VT-d doorbell with a SharedRelay as the queue model's sink (uncontended: every doorbell combines).
  const layout = { slots: 64, bindings: 16 };
  const relay = new SharedRelay(new SharedArrayBuffer(sharedRelayBytes(layout)), layout, new RelayQueue(nullBackend));
  relay.bind(1, 5, { targetId: 7, format: "vtd-s1" });
  step = vtdDoorbellStep(relay);
} else if (path === "doorbell-ioctl" || path === "batch64-ioctl") {
  // The pipeline bench's TypeScript doorbell with the cheap-ioctl sink (needs /dev/kvm).
  const q = new RelayQueue(new CheapIoctlBackend(await NativeShim.load()));
  q.bind(1, 5, { targetId: 7, format: "vtd-s1" });
  step = vtdPipelineStep(q, path === "doorbell-ioctl" ? "single" : "batch64");
} else if (path === "kernel") {
  // On a kernel with the iommufd selftest (the test VM): the relay's whole host side — compile, the uAPI struct,
  // the FFI call, the real IOMMU_HWPT_INVALIDATE — for one invalidation + wait to a mock nested HWPT.
  const iommufd = Iommufd.open(await NativeShim.load());
  const chain = mockNestedChain(iommufd);
  const q = new RelayQueue(new KernelBackend(iommufd));
  q.bind(1, 5, { targetId: chain.nested.id, format: "selftest" });
  step = relayStep(q);
} else throw new Error(`unknown path ${path}`);
for (let i = 0; i < WARM_UP; i++) step();
for (let i = 0; i < N; i++) step();
