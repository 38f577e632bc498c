// The guest workload of tests/frontends/snapshot_test.ts, shared by the test and the process it restores in
// (snapshot_restore_process.ts): two devices behind one VT-d unit on the in-process host, their binds, and 120
// invalidation-queue descriptors in guest RAM — each a page-selective PASID-IOTLB invalidation of its own page, every
// tenth a wait writing its index to a status word — plus one page request the guest answers in the second half.
import { VtdFaultRecorder } from "../../lib/frontends/vtd/faults.ts";
import { GuestIommu } from "../../lib/device/assigned.ts";
import type { ModelDeviceHost } from "../../lib/host/model_device_host.ts";
import type { GuestMemory } from "../../lib/memory/guest_memory.ts";
import {
  type HostResponder,
  type RelaySink,
  VtdInvalidationQueue,
  vtdPageGroupResponse,
  VtdPageRequestQueue,
  vtdPasidIotlb,
  vtdWait,
  writeVtdDescriptor,
} from "../../lib/frontends/mod.ts";

export const DESCRIPTORS = 120;
export const IQA = 0x1000 | 1; // two pages: 512 descriptors of 16 bytes
export const PQA = 0x8000;
export const STATUS = 0x9000;
export const RID_A = 0x18, GROUP = 5, FAULT_PASID = 2;
/** The page request answered in the second half sits at this descriptor. */
export const RESPONSE_AT = 95;

/** Device, domain and PASID descriptor `i` invalidates (undefined for a wait or the page group response). */
export function target(i: number): { key: string; domain: number; pasid: number; page: number } | undefined {
  if (i % 10 === 9 || i === RESPONSE_AT) return undefined;
  return i % 3 === 0
    ? { key: "00:04.0", domain: 2, pasid: 7, page: 0x20000 + i }
    : { key: "00:03.0", domain: 1, pasid: 1 + (i % 4), page: 0x10000 + i };
}

/** The guest's descriptors, written into `ram` (what it had written by the time of the snapshot, and after). */
export function writeDescriptors(ram: Uint8Array): void {
  for (let i = 0; i < DESCRIPTORS; i++) {
    const t = target(i);
    const words = i === RESPONSE_AT
      ? vtdPageGroupResponse(RID_A, FAULT_PASID, GROUP, 0)
      : t
      ? vtdPasidIotlb(t.domain, t.pasid, { page: t.page, am: 0 })
      : vtdWait(STATUS + 4 * Math.floor(i / 10), 0x100 + i);
    writeVtdDescriptor(ram, 0x1000 + 16 * i, 16, words);
  }
}

export function memoryOver(ram: Uint8Array): GuestMemory {
  return { read: (a, n) => ram.slice(a, a + n), write: (a, b) => ram.set(b, a) };
}

/** The device layer as the guest set it up (on the first host). */
export function assignAndBind(host: ModelDeviceHost): GuestIommu {
  const guest = new GuestIommu(host);
  const a = guest.assign(host.port({ label: "nic" }), { domain: 1, key: "00:03.0" });
  const b = guest.assign(host.port({ label: "disk" }), { domain: 2, key: "00:04.0" });
  for (let p = 1; p <= 4; p++) a.bind(p, { format: "vtd-s1", tableAddress: 0x40000 + p * 0x1000, addressWidth: 48 });
  b.bind("rid", { format: "vtd-s1", tableAddress: 0x50000, addressWidth: 48 });
  b.bind(7, { format: "vtd-s1", tableAddress: 0x51000, addressWidth: 57, sre: true });
  return guest;
}

/** The front ends over `sink` (the guest's relay queue): the invalidation queue (its page group responses go to the PRQ) and the PRQ. */
export function frontends(ram: Uint8Array, sink: RelaySink, respond: HostResponder, now: () => number) {
  const memory = memoryOver(ram);
  const vtdPrq = new VtdPageRequestQueue(memory, respond, { now }, 10_000);
  const vtdQueue = new VtdInvalidationQueue(memory, sink, {
    pageGroupResponse: (d) => void vtdPrq.guestResponse(d),
  });
  const vtdFaults = new VtdFaultRecorder(4);
  return { vtdQueue, vtdPrq, vtdFaults };
}
