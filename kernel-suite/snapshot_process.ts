// One process of kernel-suite/snapshot_test.ts, run twice inside the test VM: `first <dir>` assigns two selftest
// mock devices on its own iommufd, binds their tables, rings the first half of a VT-d invalidation queue, leaves a
// real I/O page fault unanswered and takes a snapshot into <dir>; `second <dir>` restores it on a fresh iommufd with
// new mock devices and rings the rest. Each prints one JSON line of what the kernel's own selftest ops report.
import { GuestIommu } from "../lib/device/assigned.ts";
import { KernelDeviceHost } from "../lib/host/kernel_device_host.ts";
import { MockPort } from "../lib/host/ports.ts";
import { Iommufd, type MockDevice, mockIopfChain, mockIotlbHolds } from "../lib/kernel/mod.ts";
import { NativeShim } from "../ffi/native.ts";
import {
  hostFaultFromRecord,
  type RelaySink,
  restoreRelay,
  snapshotRelay,
  VtdInvalidationQueue,
  vtdIotlb,
  VtdPageRequestQueue,
  vtdPasidIotlb,
  vtdWait,
  writeVtdDescriptor,
} from "../lib/frontends/mod.ts";
import { guestMemoryOver } from "../lib/memory/guest_memory.ts";
import { MockConstants } from "../lib/uapi/mod.ts";

const M = MockConstants.values;
export const IOTLB_B = 0xb2;
const PASIDS = [8, 9, 10, 11];
const STATUS = 0x9000;
const [phase, dir] = Deno.args;
using shim = await NativeShim.load();
using iommufd = Iommufd.open(shim);
using ioas = iommufd.allocIoas();
const host = new KernelDeviceHost(iommufd, ioas);
const ram = phase === "first" ? new Uint8Array(1 << 16) : await Deno.readFile(`${dir}/ram`);
const memory = guestMemoryOver(ram);

// Descriptors 0-3 before the snapshot, 4-7 after: PASIDs 8..11 of mock-a each on a table of its own (IOTLB value
// 0xa0 + PASID; an invalidation of PASID p zeroes slot p mod 4 of its table), the RID of mock-b on another (its
// invalidation is slot 0).
const descriptors = [
  vtdPasidIotlb(1, 8, { page: 0x100, am: 0 }),
  vtdPasidIotlb(1, 9, { page: 0x101, am: 0 }),
  vtdWait(STATUS, 0x11),
  vtdWait(STATUS + 4, 0x12),
  vtdPasidIotlb(1, 10, { page: 0x102, am: 0 }),
  vtdPasidIotlb(1, 11, { page: 0x103, am: 0 }),
  vtdIotlb(2, { page: 0x104, am: 0 }),
  vtdWait(STATUS + 8, 0x13),
];

let guest: GuestIommu | undefined;
const sink: RelaySink = { submit: (r) => guest!.queue.submit(r), drain: () => guest!.queue.drain() };
const answered: [number, number][] = [];
let respond = (_cookie: number, _code: number) => {};
const prq = new VtdPageRequestQueue(memory, (cookie, code) => {
  answered.push([cookie, code]);
  respond(cookie, code);
});
const qi = new VtdInvalidationQueue(memory, sink, { pageGroupResponse: (d) => void prq.guestResponse(d) });
const slots = (dev: { boundTo(p: number | "rid"): number | undefined }, at: number | "rid", value: number) =>
  [0, 1, 2, 3].map((s) =>
    mockIotlbHolds(iommufd, dev.boundTo(at)!, s, 0)
      ? 0
      : mockIotlbHolds(iommufd, dev.boundTo(at)!, s, value)
      ? value
      : -1
  );
const mock = (port: unknown) => (port as MockPort).device as MockDevice;

if (phase === "first") {
  descriptors.forEach((d, i) => writeVtdDescriptor(ram, 0x1000 + 16 * i, 16, d));
  guest = new GuestIommu(host);
  const a = guest.assign(MockPort.create(iommufd, ioas.id, M.MOCK_FLAGS_DEVICE_PASID), { domain: 1, key: "mock-a" });
  const b = guest.assign(MockPort.create(iommufd, ioas.id, M.MOCK_FLAGS_DEVICE_PASID), { domain: 2, key: "mock-b" });
  for (const p of PASIDS) a.bind(p, { format: "selftest", iotlb: 0xa0 + p });
  b.bind("rid", { format: "selftest", iotlb: IOTLB_B });
  qi.writeIqa(0x1000);
  prq.writePqa(0x4000);
  const first = qi.writeIqt(4 * 16);
  // A real page fault the guest has not answered when the snapshot is taken.
  using chain = mockIopfChain(iommufd);
  respond = (cookie, code) => chain.queue.respond(cookie, code);
  chain.dev.triggerIopf({ pasid: 3, grpid: 2, perm: 1, addr: 0x5000 });
  if (!chain.queue.pollIn(1000)) throw new Error("no fault");
  const record = chain.queue.readFault();
  prq.deliver(hostFaultFromRecord(record, 0x18));
  const pendingBefore = prq.pending;
  const bytes = snapshotRelay(guest, { vtdQueue: qi, vtdPrq: prq });
  // The kernel took the answer: a second one for the same cookie is refused.
  let secondAnswer = "accepted";
  try {
    chain.queue.respond(record.cookie, 0);
  } catch (e) {
    secondAnswer = (e as Error).name;
  }
  await Deno.writeFile(`${dir}/snapshot`, bytes);
  await Deno.writeFile(`${dir}/ram`, ram);
  console.log(JSON.stringify({
    first: { processed: first.processed, waits: first.waitsCompleted, error: first.error },
    a: PASIDS.map((p) => slots(a, p, 0xa0 + p)),
    b: slots(b, "rid", IOTLB_B),
    pendingBefore,
    answered: answered.map(([, code]) => code),
    cookieAnswered: answered[0]?.[0] === record.cookie,
    secondAnswer,
  }));
  guest[Symbol.dispose]();
} else {
  guest = restoreRelay(
    await Deno.readFile(`${dir}/snapshot`),
    host,
    () => MockPort.create(iommufd, ioas.id, M.MOCK_FLAGS_DEVICE_PASID),
    { vtdQueue: qi, vtdPrq: prq },
  );
  const [a, b] = guest.devices;
  const attached = PASIDS.every((p) => mock(a.port).pasidAttachedTo(p, a.boundTo(p)!));
  const before = { a: PASIDS.map((p) => slots(a, p, 0xa0 + p)), b: slots(b, "rid", IOTLB_B) };
  const rest = qi.writeIqt(8 * 16);
  const view = new DataView(ram.buffer);
  console.log(JSON.stringify({
    keys: guest.devices.map((d) => d.key),
    attached,
    before,
    rest: { processed: rest.processed, waits: rest.waitsCompleted, error: rest.error },
    a: PASIDS.map((p) => slots(a, p, 0xa0 + p)),
    b: slots(b, "rid", IOTLB_B),
    statuses: [0, 1, 2].map((k) => view.getUint32(STATUS + 4 * k, true)),
    carried: prq.telemetry,
  }));
  guest[Symbol.dispose]();
}
