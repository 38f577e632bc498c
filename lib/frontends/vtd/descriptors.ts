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
  override name = "VtdDescriptorError";
  constructor(
    readonly reason: "unknown-type" | "reserved-bits" | "reserved-granularity" | "misaligned" | "truncated",
    detail: string,
  ) {
    super(`${reason}: ${detail}`);
  }
}

/** 64 bits as two 32-bit halves (little-endian qword at `at`). */
function q(v: DataView, at: number): [number, number] {
  return [v.getUint32(at, true), v.getUint32(at + 4, true)];
}

/** Bits [lo, hi] of a qword given as halves. */
function bits([lo32, hi32]: [number, number], lo: number, hi: number): number {
  let value = 0;
  for (let b = hi; b >= lo; b--) value = value * 2 + ((b < 32 ? lo32 >>> b : hi32 >>> (b - 32)) & 1);
  return value;
}

/** Check that only the bits in `allowed` (inclusive [lo, hi] ranges) are set. */
function onlyBits(word: [number, number], allowed: [number, number][], what: string): void {
  let maskLo = 0, maskHi = 0;
  for (const [lo, hi] of allowed) {
    for (let b = lo; b <= hi; b++) {
      if (b < 32) maskLo |= 1 << b;
      else maskHi |= 1 << (b - 32);
    }
  }
  const badLo = (word[0] & ~maskLo) >>> 0, badHi = (word[1] & ~maskHi) >>> 0;
  if (badLo || badHi) {
    throw new VtdDescriptorError(
      "reserved-bits",
      `${what}: 0x${badHi.toString(16).padStart(8, "0")}${badLo.toString(16).padStart(8, "0")}`,
    );
  }
}

const TYPE: [number, number] = [0, 3];
const PAGE_ADDR: [number, number] = [12, 63];
const page = (w: [number, number]) => w[1] * 0x10_0000 + (w[0] >>> 12);

/**
 * Decode one descriptor of `size` bytes (16 or 32) at `at`.
 *
 * @example
 * ```ts
 * import { decodeVtdDescriptor } from "./descriptors.ts";
 * const d = new Uint8Array(16);
 * const v = new DataView(d.buffer);
 * v.setUint32(0, 0x6 | (3 << 4) | (1 << 16), true); // PASID-IOTLB, page-selective, DID 1
 * v.setUint32(4, 5, true); // PASID 5
 * v.setUint32(8, 0x7f000000 | 9, true); // addr 0x7f000000, AM 9 (2 MiB)
 * console.log(decodeVtdDescriptor(d, 0, 16)); // { type: "pasid-iotlb", granularity: "page", did: 1, pasid: 5, page: 520192, am: 9, ih: false }
 * ```
 */
export function decodeVtdDescriptor(bytes: Uint8Array, at: number, size: 16 | 32): VtdDescriptor {
  if (!(Number.isInteger(at) && at >= 0 && at + size <= bytes.length) || (size !== 16 && size !== 32)) {
    throw new VtdDescriptorError("truncated", `${size} bytes at ${at} of a ${bytes.length}-byte buffer`);
  }
  const v = new DataView(bytes.buffer, bytes.byteOffset + at, size);
  const w0 = q(v, 0), w1 = q(v, 8);
  const type = bits(w0, 0, 3) | (bits(w0, 9, 11) << 4);
  if (size === 32 && type !== 9) onlyBits(q(v, 16), [], "qw2"), onlyBits(q(v, 24), [], "qw3");
  switch (type) {
    case 1: {
      onlyBits(w0, [TYPE, [4, 5], [16, 31], [32, 47], [48, 49]], "context-cache qw0");
      onlyBits(w1, [], "context-cache qw1");
      const g = bits(w0, 4, 5);
      if (g === 0) throw new VtdDescriptorError("reserved-granularity", "context-cache granularity 0");
      return {
        type: "context-cache",
        granularity: (["global", "domain", "device"] as const)[g - 1],
        did: bits(w0, 16, 31),
        sid: bits(w0, 32, 47),
        fm: bits(w0, 48, 49),
      };
    }
    case 2: {
      onlyBits(w0, [TYPE, [4, 5], [6, 6], [7, 7], [16, 31]], "iotlb qw0");
      onlyBits(w1, [[0, 5], [6, 6], PAGE_ADDR], "iotlb qw1");
      const g = bits(w0, 4, 5);
      if (g === 0) throw new VtdDescriptorError("reserved-granularity", "IOTLB granularity 0");
      return {
        type: "iotlb",
        granularity: (["global", "domain", "page"] as const)[g - 1],
        did: bits(w0, 16, 31),
        drainWrites: bits(w0, 6, 6) === 1,
        drainReads: bits(w0, 7, 7) === 1,
        page: page(w1),
        am: bits(w1, 0, 5),
        ih: bits(w1, 6, 6) === 1,
      };
    }
    case 3:
      onlyBits(w0, [TYPE, [12, 15], [16, 20], [32, 47], [52, 63]], "device-tlb qw0");
      onlyBits(w1, [[0, 0], PAGE_ADDR], "device-tlb qw1");
      return {
        type: "device-tlb",
        sid: bits(w0, 32, 47),
        pfsid: bits(w0, 12, 15) | (bits(w0, 52, 63) << 4),
        qdep: bits(w0, 16, 20),
        page: page(w1),
        size: bits(w1, 0, 0) === 1,
      };
    case 4:
      onlyBits(w0, [TYPE, [4, 4], [27, 31], [32, 47]], "interrupt-entry-cache qw0");
      onlyBits(w1, [], "interrupt-entry-cache qw1");
      return {
        type: "interrupt-entry-cache",
        selective: bits(w0, 4, 4) === 1,
        im: bits(w0, 27, 31),
        iidx: bits(w0, 32, 47),
      };
    case 5:
      onlyBits(w0, [TYPE, [4, 7], [32, 63]], "wait qw0");
      onlyBits(w1, [[2, 63]], "wait qw1");
      return {
        type: "wait",
        interrupt: bits(w0, 4, 4) === 1,
        statusWrite: bits(w0, 5, 5) === 1,
        fence: bits(w0, 6, 6) === 1,
        pageRequestDrain: bits(w0, 7, 7) === 1,
        statusData: w0[1],
        statusAddress: w1[1] * 2 ** 32 + w1[0],
      };
    case 6: {
      onlyBits(w0, [TYPE, [4, 5], [16, 31], [32, 51]], "pasid-iotlb qw0");
      onlyBits(w1, [[0, 5], [6, 6], PAGE_ADDR], "pasid-iotlb qw1");
      const g = bits(w0, 4, 5);
      if (g < 2) throw new VtdDescriptorError("reserved-granularity", `PASID-IOTLB granularity ${g}`);
      return {
        type: "pasid-iotlb",
        granularity: g === 2 ? "pasid" : "page",
        did: bits(w0, 16, 31),
        pasid: bits(w0, 32, 51),
        page: page(w1),
        am: bits(w1, 0, 5),
        ih: bits(w1, 6, 6) === 1,
      };
    }
    case 7: {
      onlyBits(w0, [TYPE, [4, 5], [16, 31], [32, 51]], "pasid-cache qw0");
      onlyBits(w1, [], "pasid-cache qw1");
      const g = bits(w0, 4, 5);
      if (g === 2) throw new VtdDescriptorError("reserved-granularity", "PASID-cache granularity 2");
      return {
        type: "pasid-cache",
        granularity: g === 0 ? "domain" : g === 1 ? "pasid" : "global",
        did: bits(w0, 16, 31),
        pasid: bits(w0, 32, 51),
      };
    }
    case 8:
      onlyBits(w0, [TYPE, [4, 8], [12, 15], [16, 31], [32, 51], [52, 63]], "pasid-device-tlb qw0");
      onlyBits(w1, [[0, 0], [11, 11], PAGE_ADDR], "pasid-device-tlb qw1");
      return {
        type: "pasid-device-tlb",
        sid: bits(w0, 16, 31),
        pfsid: bits(w0, 12, 15) | (bits(w0, 52, 63) << 4),
        qdep: bits(w0, 4, 8),
        pasid: bits(w0, 32, 51),
        global: bits(w1, 0, 0) === 1,
        page: page(w1),
        size: bits(w1, 11, 11) === 1,
      };
    case 9:
      onlyBits(w0, [TYPE, [4, 4], [12, 15], [16, 31], [32, 51]], "page-group-response qw0");
      onlyBits(w1, [[2, 2], [3, 11]], "page-group-response qw1");
      return {
        type: "page-group-response",
        pasidPresent: bits(w0, 4, 4) === 1,
        responseCode: bits(w0, 12, 15),
        rid: bits(w0, 16, 31),
        pasid: bits(w0, 32, 51),
        lastInGroup: bits(w1, 2, 2) === 1,
        prgIndex: bits(w1, 3, 11),
      };
    default:
      throw new VtdDescriptorError("unknown-type", `type ${type}`);
  }
}
