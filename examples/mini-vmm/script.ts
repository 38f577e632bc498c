/**
 * The guest's workload, as the script guest.S executes: records that store PASID-table entries and records of
 * 256-bit VT-d descriptors, each one doorbell. The same stream as the in-process demo of earlier releases — a
 * strict-mode NIC (one IOTLB invalidation + one wait per doorbell), an SVA munmap burst on PASID 5 of a second
 * device, a PASID rebind and finally the PASID's teardown — but here the binds too come from the guest: it writes
 * PASID entries and invalidates the PASID cache, and the VMM reads the entries back.
 *
 * @module
 */
import {
  encodeVtdPasidDirectoryEntry,
  encodeVtdPasidEntry,
  VTD_PASID_ENTRY_SIZE,
  type VtdDescriptorWords,
  vtdIotlb,
  vtdPageGroupResponse,
  vtdPasidCache,
  vtdPasidIotlb,
  vtdWait,
  writeVtdDescriptor,
} from "../../lib/frontends/vtd/mod.ts";
import type { PasidOrRid } from "../../lib/request/request.ts";
import { prng } from "../../lib/testing/workloads.ts";
import { LAYOUT, VTD_REG } from "./layout.ts";

/** Script record opcodes (guest.S). */
export const OP = { END: 0, DESCRIPTORS: 1, STORE: 2, WRITE_REG: 3, WAIT_REG: 4 } as const;

/** An assigned function as the guest sees it: its domain (DID) and PASID directory. */
export interface GuestFunction {
  readonly did: number;
  readonly pasidDirectory: number;
}

/** The NIC (DID 1, no PASID: its RID_PASID entry) and the SVA device (DID 2, PASID 5). */
export const FUNCTIONS: readonly GuestFunction[] = [
  { did: 1, pasidDirectory: LAYOUT.pasidDirectories },
  { did: 2, pasidDirectory: LAYOUT.pasidDirectories + 0x1000 },
];

/** The page request the VMM raises when the guest waits for one, and the group the scripted guest answers. */
export const FAULT = { rid: 0x10, pasid: 5, grpid: 0x2a, page: 0xcafe0 } as const;

/** A page that must have been invalidated on the host once doorbell `doorbell` has completed. */
export interface ExpectedInvalidation {
  readonly doorbell: number;
  readonly domain: number;
  readonly pasid: PasidOrRid;
  readonly page: number;
}

/** A built workload. */
export interface Workload {
  /** The script bytes, to be placed at LAYOUT.script. */
  readonly bytes: Uint8Array;
  readonly doorbells: number;
  readonly descriptors: number;
  /** Doorbell index of the SVA munmap burst. */
  readonly burstDoorbell: number;
  /** Pages each doorbell must have invalidated (checked on the in-process host). */
  readonly expected: readonly ExpectedInvalidation[];
  /** Byte offset in `bytes` of each doorbell's first descriptor. */
  readonly doorbellOffsets: readonly number[];
  /** Stage-1 table page numbers the guest binds, in order: NIC, PASID 5, PASID 5 after the rebind. */
  readonly tablePages: readonly number[];
}

/** Build the workload: `doorbells` strict-mode doorbells, then the burst, the rebind and the teardown. */
export function buildWorkload(opts: { doorbells: number; seed: number }): Workload {
  const chunks: Uint8Array[] = [];
  let size = 0, doorbells = 0, descriptors = 0;
  const expected: ExpectedInvalidation[] = [];
  const doorbellOffsets: number[] = [];
  let statusSlot = 0;
  const u32s = (...values: number[]) => {
    const b = new Uint8Array(values.length * 4);
    const v = new DataView(b.buffer);
    values.forEach((x, i) => v.setUint32(i * 4, x >>> 0, true));
    return b;
  };
  const push = (b: Uint8Array) => {
    chunks.push(b);
    size += b.length;
  };
  const store = (gpa: number, bytes: Uint8Array) => {
    push(u32s(OP.STORE, gpa, bytes.length));
    push(bytes);
  };
  const ring = (words: VtdDescriptorWords[]) => {
    if (words.length === 0 || words.length > 255) throw new RangeError("a doorbell carries 1..255 descriptors");
    push(u32s(OP.DESCRIPTORS, words.length));
    doorbellOffsets.push(size);
    const body = new Uint8Array(words.length * 32);
    words.forEach((w, i) => writeVtdDescriptor(body, i * 32, 32, w));
    push(body);
    descriptors += words.length;
    return doorbells++;
  };
  const wait = () => {
    const slot = statusSlot++ % 1024;
    return vtdWait(LAYOUT.status + slot * 4, 0x600d0000 + slot);
  };
  const [nic, sva] = FUNCTIONS;
  const tablePages = [0x100, 0x200, 0x300];
  const bindEntry = (fn: GuestFunction, pasid: number, entry: Uint8Array) => {
    // One PASID table page per device, right after the queue; the directory entry for PASIDs 0..63 points at it.
    const table = LAYOUT.pasidTables + (fn.did - 1) * 0x1000;
    store(fn.pasidDirectory, encodeVtdPasidDirectoryEntry(table));
    store(table + pasid * VTD_PASID_ENTRY_SIZE, entry);
  };
  // Boot: the NIC's RID_PASID entry and PASID 5 of the SVA device, then tell the IOMMU.
  bindEntry(nic, 0, encodeVtdPasidEntry({ did: nic.did, firstStagePage: tablePages[0] }));
  bindEntry(sva, 5, encodeVtdPasidEntry({ did: sva.did, firstStagePage: tablePages[1] }));
  ring([vtdPasidCache(nic.did, 0), vtdPasidCache(sva.did, 5), wait()]);

  const rnd = prng(opts.seed);
  let iova = 0x4_0000;
  for (let i = 0; i < opts.doorbells; i++) {
    // Strict mode: the same IOVA recurs 96 % of the time; 4 KiB or 128 KiB.
    if (rnd(100) >= 96) iova = 0x4_0000 + rnd(1 << 16) * 32;
    const am = rnd(2) === 0 ? 0 : 5;
    const d = ring([vtdIotlb(nic.did, { page: iova, am }), wait()]);
    expected.push({ doorbell: d, domain: nic.did, pasid: "rid", page: iova });
  }
  // An SVA munmap of 512 KiB in one doorbell: 128 page invalidations, then one wait.
  const burst: VtdDescriptorWords[] = [];
  for (let p = 0; p < 128; p++) burst.push(vtdPasidIotlb(sva.did, 5, { page: 0x7f000 + p, am: 0, leaf: true }));
  const burstDoorbell = ring([...burst, wait()]);
  for (const page of [0x7f000, 0x7f07f]) expected.push({ doorbell: burstDoorbell, domain: sva.did, pasid: 5, page });
  // The process exits and another takes PASID 5: a new entry, the PASID cache and its IOTLB flushed.
  bindEntry(sva, 5, encodeVtdPasidEntry({ did: sva.did, firstStagePage: tablePages[2] }));
  ring([vtdPasidCache(sva.did, 5), vtdPasidIotlb(sva.did, 5), wait()]);
  // One I/O page fault round trip: the guest sets up its page request queue and waits for PRS.PPR; the VMM raises
  // the fault then (from the host: TRIGGER_IOPF on a kernel); the scripted guest answers the group it expects.
  push(u32s(OP.WRITE_REG, VTD_REG.PQA, LAYOUT.prq));
  push(u32s(OP.WAIT_REG, VTD_REG.PRS, 1));
  ring([vtdPageGroupResponse(FAULT.rid, FAULT.pasid, FAULT.grpid, 0), wait()]);
  // Teardown: the entry cleared, the PASID cache invalidated: the VMM unbinds PASID 5.
  bindEntry(sva, 5, new Uint8Array(VTD_PASID_ENTRY_SIZE));
  ring([vtdPasidCache(sva.did, 5), wait()]);
  push(u32s(OP.END));

  if (LAYOUT.script + size > LAYOUT.scriptEnd) {
    throw new RangeError(`the script (${size} bytes) does not fit below 0x${LAYOUT.scriptEnd.toString(16)}`);
  }
  const bytes = new Uint8Array(size);
  let at = 0;
  for (const c of chunks) {
    bytes.set(c, at);
    at += c.length;
  }
  return { bytes, doorbells, descriptors, burstDoorbell, expected, tablePages, doorbellOffsets };
}

/**
 * `workload` behind one more record that overwrites the guest's own loop head (`next:`, code offset 0x2b) with
 * `jmp $`: a guest that spins without ever exiting again — what a VMM's deadline must get out of KVM_RUN.
 */
export function spinningWorkload(workload: Workload): Workload {
  const bytes = new Uint8Array(workload.bytes.length + 16);
  const v = new DataView(bytes.buffer);
  [OP.STORE, LAYOUT.code + 0x2b, 4].forEach((x, i) => v.setUint32(i * 4, x, true));
  bytes.set([0xeb, 0xfe, 0x90, 0x90], 12);
  bytes.set(workload.bytes, 16);
  return { ...workload, bytes };
}
