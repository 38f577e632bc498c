/**
 * SMMUv3 commands (`struct iommu_viommu_arm_smmuv3_invalidate`: two little-endian 64-bit words), sent to the
 * vIOMMU. The guest owns stage 1, so ASIDs are the guest's (from the context descriptor at each PASID); the
 * kernel forces the VMID.
 *
 * | unit | pending | commands |
 * |---|---|---|
 * | one ASID | whole space | `TLBI_NH_ASID` |
 * | one ASID | ranges | `TLBI_NH_VA` per 4 KiB page, or range commands (TG/NUM/SCALE) when the SMMU has RIL |
 * | every ASID | ranges | `TLBI_NH_VAA` likewise |
 * | every ASID | whole space | `TLBI_NH_ALL` |
 *
 * Without RIL, long ranges are escalated to the ASID (or NH_ALL) by the pending set's page limit, never sent as
 * thousands of commands. ATC_INV and CFGI_CD need the guest's stream id (a vDEVICE) and come with the device layer.
 *
 * @module
 */
import { ALL_ORIGINS, type PendingSet } from "../request/pending.ts";
import { HwptInvalidateDataType, writePageAddress } from "../uapi/mod.ts";
import type { EntryWriter } from "./entries.ts";

/** `IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3`. */
export const SMMUV3_DATA_TYPE: number = HwptInvalidateDataType.values.IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3;

/** Command opcodes (`CMDQ_OP_*`, arm-smmu-v3.h). */
export const SmmuOpcode = {
  CFGI_CD: 0x05,
  CFGI_CD_ALL: 0x06,
  TLBI_NH_ALL: 0x10,
  TLBI_NH_ASID: 0x11,
  TLBI_NH_VA: 0x12,
  TLBI_NH_VAA: 0x13,
  ATC_INV: 0x40,
  CMD_SYNC: 0x46,
} as const;

/** `IDR3.RIL`: range invalidation supported (`iommu_hw_info_arm_smmuv3.idr[3]`). */
export const IDR3_RIL = 1 << 10;

/** Which ASIDs an SMMUv3 unit covers. */
export type SmmuUnit = { readonly kind: "asid"; readonly asid: number } | { readonly kind: "every-asid" };

/** `TG` for a 4 KiB granule (0 means "not a range command"). */
const TG_4K = 1;

function writeCommand(
  out: EntryWriter,
  pending: PendingSet,
  which: number,
  opcode: number,
  asid: number,
  page: number,
  leaf: boolean,
  num = 0,
  scale = 0,
): void {
  const at = out.appendFor(pending, which);
  const v = out.view;
  const range = num > 0;
  // word 0: opcode [7:0], NUM [16:12], SCALE [25:20], VMID [47:32] (kernel-owned), ASID [63:48]
  v.setUint32(at, opcode | (range ? ((num - 1) << 12) | (scale << 20) : 0), true);
  v.setUint32(at + 4, (asid & 0xffff) << 16, true);
  // word 1: LEAF [0], TTL [9:8], TG [11:10], VA [63:12] (the flags sit below the page address: added, not ORed, so
  // no 32-bit intermediate is boxed)
  v.setUint32(at + 8, (page % 0x10_0000) * 4096 + (leaf ? 1 : 0) + (range ? TG_4K << 10 : 0), true);
  v.setUint32(at + 12, Math.floor(page / 0x10_0000), true);
}

function compileRange(
  out: EntryWriter,
  pending: PendingSet,
  which: number,
  opcode: number,
  asid: number,
  ril: boolean,
): void {
  const r = pending.rangeAt(which);
  let page = r.first;
  let remaining = r.last - r.first + 1;
  if (!ril) {
    for (; remaining > 0; remaining--, page++) writeCommand(out, pending, which, opcode, asid, page, r.leaf);
    return;
  }
  // The Linux driver's decomposition: each command covers (NUM+1) << SCALE pages, NUM+1 <= 31.
  while (remaining > 0) {
    let scale = 0;
    while (scale < 31 && Math.floor(remaining / 2 ** scale) % 2 === 0) scale++;
    const num = Math.floor(remaining / 2 ** scale) % 32;
    writeCommand(out, pending, which, opcode, asid, page, r.leaf, num, scale);
    const covered = num * 2 ** scale;
    page += covered;
    remaining -= covered;
  }
}

/**
 * Write the commands for one unit of a vIOMMU.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { PendingSet } from "../request/pending.ts";
 * import { EntryWriter } from "./entries.ts";
 * import { compileSmmuv3 } from "./smmuv3.ts";
 * const p = new PendingSet({ maxRanges: 64, maxPages: 64 });
 * p.addRange(0x100, 3, true, 1);
 * const w = new EntryWriter(16);
 * compileSmmuv3(p, { kind: "asid", asid: 5 }, false, w);
 * assert.equal(w.count, 3); // one TLBI_NH_VA per page without RIL
 * ```
 */
export function compileSmmuv3(pending: PendingSet, unit: SmmuUnit, ril: boolean, out: EntryWriter): void {
  const asid = unit.kind === "asid" ? unit.asid : 0;
  if (pending.all) {
    const op = unit.kind === "asid" ? SmmuOpcode.TLBI_NH_ASID : SmmuOpcode.TLBI_NH_ALL;
    writeCommand(out, pending, ALL_ORIGINS, op, asid, 0, false);
    return;
  }
  const op = unit.kind === "asid" ? SmmuOpcode.TLBI_NH_VA : SmmuOpcode.TLBI_NH_VAA;
  for (let i = 0; i < pending.rangeCount; i++) compileRange(out, pending, i, op, asid, ril);
}

/** A decoded SMMUv3 TLBI command, for tests and the in-process host. */
export interface SmmuTlbi {
  /** The command's opcode (byte 0): `TLBI_NH_VA`, `TLBI_NH_VAA`, `TLBI_NH_ASID` or `TLBI_NH_ALL`. */
  readonly opcode: number;
  /** ASID (bits 63:48); 0 for the VAA and ALL forms, which carry none. */
  readonly asid: number;
  /** LEAF (bit 64): only leaf entries changed, so walk caches may be kept. */
  readonly leaf: boolean;
  /** First page. */
  readonly page: number;
  /** Pages covered: 1 for a non-range command; (NUM+1) << SCALE for a range one; Infinity for ASID/ALL. */
  readonly pages: number;
}

/** Decode one 16-byte TLBI command (4 KiB granule only). */
export function decodeSmmuTlbi(bytes: Uint8Array, at = 0): SmmuTlbi {
  const v = new DataView(bytes.buffer, bytes.byteOffset + at, 16);
  const w0 = v.getUint32(0, true);
  const opcode = w0 & 0xff;
  const asid = v.getUint32(4, true) >>> 16;
  const w1lo = v.getUint32(8, true);
  const tg = (w1lo >>> 10) & 3;
  const page = v.getUint32(12, true) * 0x10_0000 + (w1lo >>> 12);
  const num = ((w0 >>> 12) & 0x1f) + 1;
  const scale = (w0 >>> 20) & 0x3f; // SCALE is [25:20]
  const wide = opcode === SmmuOpcode.TLBI_NH_ALL || opcode === SmmuOpcode.TLBI_NH_ASID;
  return {
    opcode,
    asid,
    leaf: (w1lo & 1) === 1,
    page: wide ? 0 : page,
    pages: wide ? Infinity : tg === 0 ? 1 : num * 2 ** scale,
  };
}

/** `ATC_INV_SIZE_ALL`: an ATC_INV span of 2^52 pages, the whole space. */
export const ATC_INV_SIZE_ALL = 52;

/**
 * `ATC_INV` for a device's ATS translation cache — forwarding it is the VMM's job on SMMUv3 (on VT-d the kernel
 * does it). Each range becomes up to 4 naturally aligned power-of-two blocks covering it exactly, or else the one
 * aligned span covering it (over-invalidating, never under); whole space = `SIZE 52`. `ssid` undefined = the
 * no-PASID stream (SSV = 0).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { PendingSet } from "../request/pending.ts";
 * import { EntryWriter } from "./entries.ts";
 * import { compileAtcInv } from "./smmuv3.ts";
 * const p = new PendingSet({ maxRanges: 64, maxPages: 1 << 20 });
 * p.addRange(5, 3, false, 1); // pages 5..7 → blocks [5] and [6, 7]
 * const w = new EntryWriter(16);
 * compileAtcInv(p, 0x21, 9, w);
 * assert.equal(w.count, 2);
 * assert.equal(w.view.getUint32(24, true) & 0x3f, 1);
 * assert.equal(w.view.getUint32(24, true) >>> 12, 6);
 * ```
 */
export function compileAtcInv(pending: PendingSet, vsid: number, ssid: number | undefined, out: EntryWriter): void {
  if (pending.all) {
    writeAtcInv(out, pending, ALL_ORIGINS, vsid, ssid, 0, ATC_INV_SIZE_ALL);
    return;
  }
  for (let i = 0; i < pending.rangeCount; i++) {
    // Exact cover by naturally aligned blocks when that takes few commands; else the one aligned span covering
    // the range (over-invalidating, never under). The blocks are counted first, then written: nothing is kept.
    const r = pending.rangeAt(i);
    if (atcBlocks(r.first, r.last, null, pending, i, vsid, ssid) <= MAX_ATC_BLOCKS) {
      atcBlocks(r.first, r.last, out, pending, i, vsid, ssid);
      continue;
    }
    let size = 0;
    while (size < ATC_INV_SIZE_ALL && Math.floor(r.first / 2 ** size) !== Math.floor(r.last / 2 ** size)) size++;
    writeAtcInv(out, pending, i, vsid, ssid, Math.floor(r.first / 2 ** size) * 2 ** size, size);
  }
}

/** Walk the naturally aligned blocks covering [first, last]: write them to `out` (when given); return how many (up
 * to MAX_ATC_BLOCKS + 1). */
function atcBlocks(
  first: number,
  last: number,
  out: EntryWriter | null,
  pending: PendingSet,
  which: number,
  vsid: number,
  ssid: number | undefined,
): number {
  let blocks = 0;
  for (let page = first; page <= last && blocks <= MAX_ATC_BLOCKS;) {
    let size = 0;
    while (size < ATC_INV_SIZE_ALL && page % 2 ** (size + 1) === 0 && page + 2 ** (size + 1) - 1 <= last) size++;
    if (out) writeAtcInv(out, pending, which, vsid, ssid, page, size);
    blocks++;
    page += 2 ** size;
  }
  return blocks;
}

function writeAtcInv(
  out: EntryWriter,
  pending: PendingSet,
  which: number,
  vsid: number,
  ssid: number | undefined,
  page: number,
  size: number,
): void {
  const at = out.appendFor(pending, which);
  const v = out.view;
  v.setUint32(at, SmmuOpcode.ATC_INV | (ssid === undefined ? 0 : (1 << 11) | ((ssid & 0xfffff) << 12)), true);
  v.setUint32(at + 4, vsid >>> 0, true);
  writePageAddress(v, at + 8, page);
  v.setUint32(at + 8, (v.getUint32(at + 8, true) | size) >>> 0, true);
}

/** Above this many aligned blocks per range, one covering span is sent instead. */
const MAX_ATC_BLOCKS = 4;

/** `CFGI_CD{SID, SSID, LEAF}`: the guest changed the context descriptor of `ssid` on stream `vsid`. */
export function writeCfgiCd(out: EntryWriter, origins: number[], vsid: number, ssid: number): void {
  const at = out.append(origins);
  out.view.setUint32(at, SmmuOpcode.CFGI_CD | ((ssid & 0xfffff) << 12), true);
  out.view.setUint32(at + 4, vsid >>> 0, true);
  out.view.setUint32(at + 8, 1, true); // LEAF: only the CD itself changed
}

/** A decoded ATC_INV, for tests and the in-process host. */
export interface SmmuAtcInv {
  /** The guest's (virtual) StreamID whose ATC is invalidated. */
  readonly vsid: number;
  /** SubstreamID (PASID); undefined when SSV is clear (the device's no-PASID translations). */
  readonly ssid: number | undefined;
  /** First 4 KiB page of the span (the address is aligned down to the span). */
  readonly page: number;
  /** log2 of the span in pages. */
  readonly size: number;
}

/** Decode one 16-byte ATC_INV command. */
export function decodeAtcInv(bytes: Uint8Array, at = 0): SmmuAtcInv {
  const v = new DataView(bytes.buffer, bytes.byteOffset + at, 16);
  const w0 = v.getUint32(0, true);
  const w1lo = v.getUint32(8, true);
  return {
    vsid: v.getUint32(4, true),
    ssid: (w0 & (1 << 11)) ? (w0 >>> 12) & 0xfffff : undefined,
    page: v.getUint32(12, true) * 0x10_0000 + (w1lo >>> 12),
    size: w1lo & 0x3f,
  };
}
