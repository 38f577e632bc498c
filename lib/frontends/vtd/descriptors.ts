/**
 * VT-d queued-invalidation descriptors, decoded from guest bytes (128-bit, or 256-bit with IQA.DW in scalable
 * mode). Layouts follow the VT-d spec as the Linux driver writes them (`drivers/iommu/intel/iommu.h` `QI_*`).
 * Every bit a descriptor type does not define must be zero; anything else — an unknown type, a reserved
 * granularity, a set reserved bit — is a {@linkcode VtdDescriptorError}, which the queue model turns into IQE.
 *
 * @module
 */

/** A decoded descriptor. Fields are numbers; addresses are 4 KiB page numbers (exact below 2^52). */
export type VtdDescriptor =
  | {
    readonly type: "context-cache";
    readonly granularity: "global" | "domain" | "device";
    readonly did: number;
    readonly sid: number;
    readonly fm: number;
  }
  | {
    readonly type: "iotlb";
    readonly granularity: "global" | "domain" | "page";
    readonly did: number;
    readonly drainReads: boolean;
    readonly drainWrites: boolean;
    readonly page: number;
    readonly am: number;
    readonly ih: boolean;
  }
  | {
    readonly type: "device-tlb";
    readonly sid: number;
    readonly pfsid: number;
    readonly qdep: number;
    readonly page: number;
    readonly size: boolean;
  }
  | { readonly type: "interrupt-entry-cache"; readonly selective: boolean; readonly im: number; readonly iidx: number }
  | {
    readonly type: "wait";
    readonly interrupt: boolean;
    readonly statusWrite: boolean;
    readonly fence: boolean;
    readonly pageRequestDrain: boolean;
    readonly statusData: number;
    /** Guest-physical byte address of the status dword (4-byte aligned). */
    readonly statusAddress: number;
  }
  | {
    readonly type: "pasid-iotlb";
    readonly granularity: "pasid" | "page";
    readonly did: number;
    readonly pasid: number;
    readonly page: number;
    readonly am: number;
    readonly ih: boolean;
  }
  | {
    readonly type: "pasid-cache";
    readonly granularity: "domain" | "pasid" | "global";
    readonly did: number;
    readonly pasid: number;
  }
  | {
    readonly type: "pasid-device-tlb";
    readonly sid: number;
    readonly pfsid: number;
    readonly qdep: number;
    readonly pasid: number;
    readonly global: boolean;
    readonly page: number;
    readonly size: boolean;
  }
  | {
    readonly type: "page-group-response";
    readonly pasidPresent: boolean;
    readonly responseCode: number;
    readonly rid: number;
    readonly pasid: number;
    readonly lastInGroup: boolean;
    readonly prgIndex: number;
  };

/** Why a descriptor was refused. */
export class VtdDescriptorError extends Error {
  /** Always `"VtdDescriptorError"`. */
  override name = "VtdDescriptorError";
  /** The message is `<reason>: <detail>`. */
  constructor(
    readonly reason: "unknown-type" | "reserved-bits" | "reserved-granularity" | "misaligned" | "truncated",
    detail: string,
  ) {
    super(`${reason}: ${detail}`);
  }
}

/** The allowed bits of a qword (inclusive [lo, hi] ranges) as masks of its two halves, computed once per layout. */
function mask(allowed: [number, number][]): [number, number] {
  let maskLo = 0, maskHi = 0;
  for (const [lo, hi] of allowed) {
    for (let b = lo; b <= hi; b++) {
      if (b < 32) maskLo |= 1 << b;
      else maskHi |= 1 << (b - 32);
    }
  }
  return [maskLo >>> 0, maskHi >>> 0];
}

/** Throw unless only the bits of `allowed` are set in the qword (lo32, hi32). */
function onlyBits(lo32: number, hi32: number, allowed: readonly [number, number], what: string): void {
  const badLo = (lo32 & ~allowed[0]) >>> 0, badHi = (hi32 & ~allowed[1]) >>> 0;
  if (badLo || badHi) {
    throw new VtdDescriptorError(
      "reserved-bits",
      `${what}: 0x${badHi.toString(16).padStart(8, "0")}${badLo.toString(16).padStart(8, "0")}`,
    );
  }
}

/** Bits [lo, hi] of a 32-bit half (hi - lo < 31). */
const field = (word: number, lo: number, hi: number) => (word >>> lo) & ((1 << (hi - lo + 1)) - 1);
const bit = (word: number, b: number) => ((word >>> b) & 1) === 1;
/** Little-endian dword at `at`. */
const u32 = (b: Uint8Array, at: number) => (b[at] | (b[at + 1] << 8) | (b[at + 2] << 16) | (b[at + 3] << 24)) >>> 0;

const TYPE: [number, number] = [0, 3];
const PAGE_ADDR: [number, number] = [12, 63];
const NONE = mask([]);
const M = {
  contextCache: mask([TYPE, [4, 5], [16, 31], [32, 47], [48, 49]]),
  iotlb0: mask([TYPE, [4, 5], [6, 6], [7, 7], [16, 31]]),
  iotlb1: mask([[0, 5], [6, 6], PAGE_ADDR]),
  deviceTlb0: mask([TYPE, [12, 15], [16, 20], [32, 47], [52, 63]]),
  deviceTlb1: mask([[0, 0], PAGE_ADDR]),
  iec: mask([TYPE, [4, 4], [27, 31], [32, 47]]),
  wait0: mask([TYPE, [4, 7], [32, 63]]),
  wait1: mask([[2, 63]]),
  pasidIotlb0: mask([TYPE, [4, 5], [16, 31], [32, 51]]),
  pasidCache0: mask([TYPE, [4, 5], [16, 31], [32, 51]]),
  pasidDeviceTlb0: mask([TYPE, [4, 8], [12, 15], [16, 31], [32, 51], [52, 63]]),
  pasidDeviceTlb1: mask([[0, 0], [11, 11], PAGE_ADDR]),
  pgr0: mask([TYPE, [4, 4], [12, 15], [16, 31], [32, 51]]),
  pgr1: mask([[2, 2], [3, 11]]),
} as const;

/** A decoded descriptor of type `K` with writable fields: the object a {@linkcode VtdDescriptorScratch} reuses. */
export type VtdScratchDescriptor<K extends VtdDescriptor["type"]> = {
  -readonly [P in keyof Extract<VtdDescriptor, { type: K }>]: Extract<VtdDescriptor, { type: K }>[P];
};

/** A new, zeroed object of each descriptor type. */
const FRESH = {
  "context-cache": (): VtdScratchDescriptor<"context-cache"> => ({
    type: "context-cache",
    granularity: "global",
    did: 0,
    sid: 0,
    fm: 0,
  }),
  iotlb: (): VtdScratchDescriptor<"iotlb"> => ({
    type: "iotlb",
    granularity: "global",
    did: 0,
    drainReads: false,
    drainWrites: false,
    page: 0,
    am: 0,
    ih: false,
  }),
  "device-tlb": (): VtdScratchDescriptor<"device-tlb"> => ({
    type: "device-tlb",
    sid: 0,
    pfsid: 0,
    qdep: 0,
    page: 0,
    size: false,
  }),
  "interrupt-entry-cache": (): VtdScratchDescriptor<"interrupt-entry-cache"> => ({
    type: "interrupt-entry-cache",
    selective: false,
    im: 0,
    iidx: 0,
  }),
  wait: (): VtdScratchDescriptor<"wait"> => ({
    type: "wait",
    interrupt: false,
    statusWrite: false,
    fence: false,
    pageRequestDrain: false,
    statusData: 0,
    statusAddress: 0,
  }),
  "pasid-iotlb": (): VtdScratchDescriptor<"pasid-iotlb"> => ({
    type: "pasid-iotlb",
    granularity: "pasid",
    did: 0,
    pasid: 0,
    page: 0,
    am: 0,
    ih: false,
  }),
  "pasid-cache": (): VtdScratchDescriptor<"pasid-cache"> => ({
    type: "pasid-cache",
    granularity: "domain",
    did: 0,
    pasid: 0,
  }),
  "pasid-device-tlb": (): VtdScratchDescriptor<"pasid-device-tlb"> => ({
    type: "pasid-device-tlb",
    sid: 0,
    pfsid: 0,
    qdep: 0,
    pasid: 0,
    global: false,
    page: 0,
    size: false,
  }),
  "page-group-response": (): VtdScratchDescriptor<"page-group-response"> => ({
    type: "page-group-response",
    pasidPresent: false,
    responseCode: 0,
    rid: 0,
    pasid: 0,
    lastInGroup: false,
    prgIndex: 0,
  }),
} as const;

/**
 * One reusable object per descriptor type: {@linkcode decodeVtdDescriptor} given a scratch fills and returns its
 * object instead of a new one (valid until the next decode into the same scratch), so a queue's doorbell allocates
 * nothing.
 */
export class VtdDescriptorScratch {
  /** Reused for context-cache invalidation descriptors (type 1). */
  readonly "context-cache": VtdScratchDescriptor<"context-cache"> = FRESH["context-cache"]();
  /** Reused for IOTLB invalidation descriptors (type 2). */
  readonly iotlb: VtdScratchDescriptor<"iotlb"> = FRESH.iotlb();
  /** Reused for device-TLB invalidation descriptors (type 3). */
  readonly "device-tlb": VtdScratchDescriptor<"device-tlb"> = FRESH["device-tlb"]();
  /** Reused for interrupt-entry-cache invalidation descriptors (type 4). */
  readonly "interrupt-entry-cache": VtdScratchDescriptor<"interrupt-entry-cache"> = FRESH["interrupt-entry-cache"]();
  /** Reused for invalidation-wait descriptors (type 5). */
  readonly wait: VtdScratchDescriptor<"wait"> = FRESH.wait();
  /** Reused for PASID-based IOTLB invalidation descriptors (type 6). */
  readonly "pasid-iotlb": VtdScratchDescriptor<"pasid-iotlb"> = FRESH["pasid-iotlb"]();
  /** Reused for PASID-cache invalidation descriptors (type 7). */
  readonly "pasid-cache": VtdScratchDescriptor<"pasid-cache"> = FRESH["pasid-cache"]();
  /** Reused for PASID-based device-TLB invalidation descriptors (type 8). */
  readonly "pasid-device-tlb": VtdScratchDescriptor<"pasid-device-tlb"> = FRESH["pasid-device-tlb"]();
  /** Reused for page group response descriptors (type 9). */
  readonly "page-group-response": VtdScratchDescriptor<"page-group-response"> = FRESH["page-group-response"]();
}

const CONTEXT_GRANULARITY = ["global", "domain", "device"] as const;
const IOTLB_GRANULARITY = ["global", "domain", "page"] as const;

/**
 * Decode one descriptor of `size` bytes (16 or 32) at `at`; into `scratch`'s object of its type when given.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { decodeVtdDescriptor } from "./descriptors.ts";
 * const d = new Uint8Array(16);
 * const v = new DataView(d.buffer);
 * v.setUint32(0, 0x6 | (3 << 4) | (1 << 16), true); // PASID-IOTLB, page-selective, DID 1
 * v.setUint32(4, 5, true); // PASID 5
 * v.setUint32(8, 0x7f000000 | 9, true); // addr 0x7f000000, AM 9 (2 MiB)
 * assert.deepEqual(decodeVtdDescriptor(d, 0, 16), {
 *   type: "pasid-iotlb",
 *   granularity: "page",
 *   did: 1,
 *   pasid: 5,
 *   page: 0x7f000,
 *   am: 9,
 *   ih: false,
 * });
 * ```
 */
export function decodeVtdDescriptor(
  bytes: Uint8Array,
  at: number,
  size: 16 | 32,
  scratch?: VtdDescriptorScratch,
): VtdDescriptor {
  if (!(Number.isInteger(at) && at >= 0 && at + size <= bytes.length) || (size !== 16 && size !== 32)) {
    throw new VtdDescriptorError("truncated", `${size} bytes at ${at} of a ${bytes.length}-byte buffer`);
  }
  const lo0 = u32(bytes, at), hi0 = u32(bytes, at + 4), lo1 = u32(bytes, at + 8), hi1 = u32(bytes, at + 12);
  const type = field(lo0, 0, 3) | (field(lo0, 9, 11) << 4);
  if (size === 32 && type !== 9) {
    onlyBits(u32(bytes, at + 16), u32(bytes, at + 20), NONE, "qw2");
    onlyBits(u32(bytes, at + 24), u32(bytes, at + 28), NONE, "qw3");
  }
  const page = hi1 * 0x10_0000 + (lo1 >>> 12);
  switch (type) {
    case 1: {
      onlyBits(lo0, hi0, M.contextCache, "context-cache qw0");
      onlyBits(lo1, hi1, NONE, "context-cache qw1");
      const g = field(lo0, 4, 5);
      if (g === 0) throw new VtdDescriptorError("reserved-granularity", "context-cache granularity 0");
      const d = scratch ? scratch["context-cache"] : FRESH["context-cache"]();
      d.granularity = CONTEXT_GRANULARITY[g - 1];
      d.did = field(lo0, 16, 31);
      d.sid = field(hi0, 0, 15);
      d.fm = field(hi0, 16, 17);
      return d;
    }
    case 2: {
      onlyBits(lo0, hi0, M.iotlb0, "iotlb qw0");
      onlyBits(lo1, hi1, M.iotlb1, "iotlb qw1");
      const g = field(lo0, 4, 5);
      if (g === 0) throw new VtdDescriptorError("reserved-granularity", "IOTLB granularity 0");
      const d = scratch ? scratch.iotlb : FRESH.iotlb();
      d.granularity = IOTLB_GRANULARITY[g - 1];
      d.did = field(lo0, 16, 31);
      d.drainWrites = bit(lo0, 6);
      d.drainReads = bit(lo0, 7);
      d.page = page;
      d.am = field(lo1, 0, 5);
      d.ih = bit(lo1, 6);
      return d;
    }
    case 3: {
      onlyBits(lo0, hi0, M.deviceTlb0, "device-tlb qw0");
      onlyBits(lo1, hi1, M.deviceTlb1, "device-tlb qw1");
      const d = scratch ? scratch["device-tlb"] : FRESH["device-tlb"]();
      d.sid = field(hi0, 0, 15);
      d.pfsid = field(lo0, 12, 15) | (field(hi0, 20, 31) << 4);
      d.qdep = field(lo0, 16, 20);
      d.page = page;
      d.size = bit(lo1, 0);
      return d;
    }
    case 4: {
      onlyBits(lo0, hi0, M.iec, "interrupt-entry-cache qw0");
      onlyBits(lo1, hi1, NONE, "interrupt-entry-cache qw1");
      const d = scratch ? scratch["interrupt-entry-cache"] : FRESH["interrupt-entry-cache"]();
      d.selective = bit(lo0, 4);
      d.im = field(lo0, 27, 31);
      d.iidx = field(hi0, 0, 15);
      return d;
    }
    case 5: {
      onlyBits(lo0, hi0, M.wait0, "wait qw0");
      onlyBits(lo1, hi1, M.wait1, "wait qw1");
      const d = scratch ? scratch.wait : FRESH.wait();
      d.interrupt = bit(lo0, 4);
      d.statusWrite = bit(lo0, 5);
      d.fence = bit(lo0, 6);
      d.pageRequestDrain = bit(lo0, 7);
      d.statusData = hi0;
      d.statusAddress = hi1 * 2 ** 32 + lo1;
      return d;
    }
    case 6: {
      onlyBits(lo0, hi0, M.pasidIotlb0, "pasid-iotlb qw0");
      onlyBits(lo1, hi1, M.iotlb1, "pasid-iotlb qw1");
      const g = field(lo0, 4, 5);
      if (g < 2) throw new VtdDescriptorError("reserved-granularity", `PASID-IOTLB granularity ${g}`);
      const d = scratch ? scratch["pasid-iotlb"] : FRESH["pasid-iotlb"]();
      d.granularity = g === 2 ? "pasid" : "page";
      d.did = field(lo0, 16, 31);
      d.pasid = field(hi0, 0, 19);
      d.page = page;
      d.am = field(lo1, 0, 5);
      d.ih = bit(lo1, 6);
      return d;
    }
    case 7: {
      onlyBits(lo0, hi0, M.pasidCache0, "pasid-cache qw0");
      onlyBits(lo1, hi1, NONE, "pasid-cache qw1");
      const g = field(lo0, 4, 5);
      if (g === 2) throw new VtdDescriptorError("reserved-granularity", "PASID-cache granularity 2");
      const d = scratch ? scratch["pasid-cache"] : FRESH["pasid-cache"]();
      d.granularity = g === 0 ? "domain" : g === 1 ? "pasid" : "global";
      d.did = field(lo0, 16, 31);
      d.pasid = field(hi0, 0, 19);
      return d;
    }
    case 8: {
      onlyBits(lo0, hi0, M.pasidDeviceTlb0, "pasid-device-tlb qw0");
      onlyBits(lo1, hi1, M.pasidDeviceTlb1, "pasid-device-tlb qw1");
      const d = scratch ? scratch["pasid-device-tlb"] : FRESH["pasid-device-tlb"]();
      d.sid = field(lo0, 16, 31);
      d.pfsid = field(lo0, 12, 15) | (field(hi0, 20, 31) << 4);
      d.qdep = field(lo0, 4, 8);
      d.pasid = field(hi0, 0, 19);
      d.global = bit(lo1, 0);
      d.page = page;
      d.size = bit(lo1, 11);
      return d;
    }
    case 9: {
      onlyBits(lo0, hi0, M.pgr0, "page-group-response qw0");
      onlyBits(lo1, hi1, M.pgr1, "page-group-response qw1");
      const d = scratch ? scratch["page-group-response"] : FRESH["page-group-response"]();
      d.pasidPresent = bit(lo0, 4);
      d.responseCode = field(lo0, 12, 15);
      d.rid = field(lo0, 16, 31);
      d.pasid = field(hi0, 0, 19);
      d.lastInGroup = bit(lo1, 2);
      d.prgIndex = field(lo1, 3, 11);
      return d;
    }
    default:
      throw new VtdDescriptorError("unknown-type", `type ${type}`);
  }
}
