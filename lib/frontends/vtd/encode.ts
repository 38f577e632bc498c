/**
 * VT-d queued-invalidation descriptors written the way a guest driver writes them: the inverse of
 * `decodeVtdDescriptor` for the descriptors a Linux guest sends most. Each returns the two low qwords
 * (the high 128 bits of a 256-bit descriptor are zero for these types). Used by scripted guests and the mini-VMM.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { vtdPasidIotlb } from "./encode.ts";
 * import { decodeVtdDescriptor } from "./descriptors.ts";
 * const [qw0, qw1] = vtdPasidIotlb(1, 5, { page: 0x7f000, am: 0 });
 * const bytes = new Uint8Array(16);
 * new DataView(bytes.buffer).setBigUint64(0, qw0, true);
 * new DataView(bytes.buffer).setBigUint64(8, qw1, true);
 * assert.equal(decodeVtdDescriptor(bytes, 0, 16).type, "pasid-iotlb");
 * ```
 *
 * @module
 */
/** The two low qwords of a descriptor. */
export type VtdDescriptorWords = readonly [bigint, bigint];

/** PASID-based IOTLB invalidation: the whole PASID, or 2^am pages at `page` (IH = `leaf`). */
export function vtdPasidIotlb(
  did: number,
  pasid: number,
  range?: { page: number; am: number; leaf?: boolean },
): VtdDescriptorWords {
  const qw0 = (BigInt(pasid) << 32n) | (BigInt(did) << 16n) | ((range ? 3n : 2n) << 4n) | 6n;
  const qw1 = range ? (BigInt(range.page) << 12n) | (range.leaf ? 1n << 6n : 0n) | BigInt(range.am) : 0n;
  return [qw0, qw1];
}

/** Second-stage IOTLB invalidation: page-selective, domain-selective or global. */
export function vtdIotlb(did: number, range: { page: number; am: number } | "domain" | "global"): VtdDescriptorWords {
  const g = range === "global" ? 1n : range === "domain" ? 2n : 3n;
  const qw1 = typeof range === "object" ? (BigInt(range.page) << 12n) | BigInt(range.am) : 0n;
  return [(BigInt(did) << 16n) | (g << 4n) | 2n, qw1];
}

/** PASID-cache invalidation of one PASID (PASID-selective within domain `did`). */
export function vtdPasidCache(did: number, pasid: number): VtdDescriptorWords {
  return [(BigInt(pasid) << 32n) | (BigInt(did) << 16n) | (1n << 4n) | 7n, 0n];
}

/** An invalidation wait that writes `statusData` to `statusAddress` (4-byte aligned), optionally fenced / with IF. */
export function vtdWait(
  statusAddress: number,
  statusData: number,
  opts: { fence?: boolean; interrupt?: boolean } = {},
): VtdDescriptorWords {
  const flags = (1n << 5n) | (opts.fence ? 1n << 6n : 0n) | (opts.interrupt ? 1n << 4n : 0n);
  return [(BigInt(statusData >>> 0) << 32n) | flags | 5n, BigInt(statusAddress)];
}

/** Write a descriptor's words at `at` in `bytes` (`size` 16 or 32; the upper 128 bits are zeroed). */
export function writeVtdDescriptor(bytes: Uint8Array, at: number, size: 16 | 32, [qw0, qw1]: VtdDescriptorWords): void {
  const v = new DataView(bytes.buffer, bytes.byteOffset + at, size);
  for (let i = 16; i < size; i += 8) v.setBigUint64(i, 0n, true);
  v.setBigUint64(0, qw0, true);
  v.setBigUint64(8, qw1, true);
}

/** A page group response (type 9): the answer to page request group `grpid` of `rid`/`pasid` (code 0 = success). */
export function vtdPageGroupResponse(
  rid: number,
  pasid: number | undefined,
  grpid: number,
  code = 0,
): VtdDescriptorWords {
  const qw0 = (BigInt(pasid ?? 0) << 32n) | (BigInt(rid & 0xffff) << 16n) | (BigInt(code & 0xf) << 12n) |
    (pasid !== undefined ? 1n << 4n : 0n) | 9n;
  return [qw0, (BigInt(grpid & 0x1ff) << 3n) | (1n << 2n)];
}
