/**
 * Scalable-mode PASID structures, read from guest memory when the guest invalidates its PASID cache: the PASID
 * directory (8-byte entries, one per 64 PASIDs) and PASID tables (64-byte entries). Layouts as the Linux driver
 * writes them (`drivers/iommu/intel/pasid.h`): val[0] P (bit 0), FPD (1), AW (4:2), PGTT (8:6), SLPTPTR (63:12);
 * val[1] DID (15:0); val[2] SRE (0), FLPM (3:2), WPE (4), EAFE (7), FLPTPTR (63:12).
 *
 * A guest-written entry is hostile: a reserved PGTT or FLPM value, or a first-stage entry without a table, is a
 * {@linkcode VtdPasidEntryError}. What the VMM does then is its choice; the safe one (the mini-VMM's) is to
 * unbind the PASID, so the device loses access instead of keeping a stale table.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { decodeVtdPasidEntry, encodeVtdPasidEntry } from "./pasid.ts";
 * const entry = encodeVtdPasidEntry({ did: 2, firstStagePage: 0x300, addressWidth: 48 });
 * const decoded = decodeVtdPasidEntry(entry, 0);
 * assert.ok(decoded.present && decoded.translation === "first-stage");
 * assert.equal(decoded.did, 2);
 * ```
 *
 * @module
 */
import type { StageOneTable, VtdStageOne } from "../../request/request.ts";
import type { GuestMemory } from "../../memory/guest_memory.ts";

/** PASIDs per PASID table (PASID_PDE_SHIFT = 6). */
export const VTD_PASIDS_PER_TABLE = 64;
/** Bytes of a PASID table entry. */
export const VTD_PASID_ENTRY_SIZE = 64;

/** PGTT: what the entry translates with. */
export type VtdPasidTranslation = "first-stage" | "second-stage" | "nested" | "pass-through";
const PGTT: Record<number, VtdPasidTranslation> = {
  1: "first-stage",
  2: "second-stage",
  3: "nested",
  4: "pass-through",
};

/** A decoded PASID table entry. Page numbers are 4 KiB frames. */
export type VtdPasidEntry =
  | { readonly present: false }
  | {
    readonly present: true;
    readonly translation: VtdPasidTranslation;
    readonly did: number;
    /** Fault processing disable. */
    readonly fpd: boolean;
    /** First-stage table root (FLPTPTR), a page number; 0 when the entry has no first stage. */
    readonly firstStagePage: number;
    /** Second-stage table root (SLPTPTR), a page number; 0 when the entry has no second stage. */
    readonly secondStagePage?: number;
    /** Second-stage address width from AW: 48 (4-level) or 57 (5-level); absent for other AW values. */
    readonly secondStageWidth?: 48 | 57;
    /** First-stage paging: 4-level (48) or 5-level (57). */
    readonly addressWidth: 48 | 57;
    readonly sre: boolean;
    readonly wpe: boolean;
    readonly eafe: boolean;
  };

/** A guest PASID structure the VMM cannot use. */
export class VtdPasidEntryError extends Error {
  /** Always `"VtdPasidEntryError"`. */
  override name = "VtdPasidEntryError";
  /** The message is `<reason>: <detail>`. */
  constructor(
    readonly reason: "reserved-pgtt" | "reserved-flpm" | "no-first-stage-table" | "pasid-out-of-range" | "unreadable",
    detail: string,
  ) {
    super(`${reason}: ${detail}`);
  }
}

/** Decode the 64-byte PASID table entry at `at` in `bytes`. */
export function decodeVtdPasidEntry(bytes: Uint8Array, at: number): VtdPasidEntry {
  if (at < 0 || at + VTD_PASID_ENTRY_SIZE > bytes.length) {
    throw new VtdPasidEntryError("unreadable", `64 bytes at ${at} of a ${bytes.length}-byte buffer`);
  }
  const v = new DataView(bytes.buffer, bytes.byteOffset + at, VTD_PASID_ENTRY_SIZE);
  const w0 = v.getUint32(0, true), w2 = v.getUint32(16, true);
  if ((w0 & 1) === 0) return { present: false };
  const pgtt = (w0 >>> 6) & 7;
  const translation = PGTT[pgtt];
  if (!translation) throw new VtdPasidEntryError("reserved-pgtt", `PGTT ${pgtt}`);
  const flpm = (w2 >>> 2) & 3;
  if (flpm > 1) throw new VtdPasidEntryError("reserved-flpm", `FLPM ${flpm}`);
  const firstStagePage = (w2 >>> 12) + v.getUint32(20, true) * 2 ** 20;
  const usesFirstStage = translation === "first-stage" || translation === "nested";
  if (usesFirstStage && firstStagePage === 0) {
    throw new VtdPasidEntryError("no-first-stage-table", `${translation} entry with FLPTPTR 0`);
  }
  const usesSecondStage = translation === "second-stage" || translation === "nested";
  const aw = (w0 >>> 2) & 7;
  const secondStagePage = usesSecondStage ? (w0 >>> 12) + v.getUint32(4, true) * 2 ** 20 : 0;
  return {
    present: true,
    translation,
    did: v.getUint16(8, true),
    ...(usesSecondStage ? { secondStagePage } : {}),
    ...(usesSecondStage && (aw === 2 || aw === 3) ? { secondStageWidth: aw === 3 ? 57 as const : 48 as const } : {}),
    fpd: (w0 & 2) !== 0,
    firstStagePage: usesFirstStage ? firstStagePage : 0,
    addressWidth: flpm === 1 ? 57 : 48,
    sre: (w2 & 1) !== 0,
    wpe: (w2 & 0x10) !== 0,
    eafe: (w2 & 0x80) !== 0,
  };
}

/**
 * The PASID table entry for `pasid` under the PASID directory at guest-physical `directory`: a directory entry
 * without P means not present. Guest memory the VMM cannot read is a {@linkcode VtdPasidEntryError}.
 */
export function lookupVtdPasidEntry(memory: GuestMemory, directory: number, pasid: number): VtdPasidEntry {
  if (!Number.isInteger(pasid) || pasid < 0 || pasid >= 1 << 20) {
    throw new VtdPasidEntryError("pasid-out-of-range", `PASID ${pasid}`);
  }
  let dir: Uint8Array, entry: Uint8Array;
  try {
    dir = memory.read(directory + Math.floor(pasid / VTD_PASIDS_PER_TABLE) * 8, 8);
  } catch (e) {
    throw new VtdPasidEntryError("unreadable", `PASID directory entry: ${(e as Error).message}`);
  }
  const d = new DataView(dir.buffer, dir.byteOffset, 8);
  if ((d.getUint32(0, true) & 1) === 0) return { present: false };
  const table = (d.getUint32(0, true) >>> 12) * 4096 + d.getUint32(4, true) * 2 ** 32;
  try {
    entry = memory.read(table + (pasid % VTD_PASIDS_PER_TABLE) * VTD_PASID_ENTRY_SIZE, VTD_PASID_ENTRY_SIZE);
  } catch (e) {
    throw new VtdPasidEntryError("unreadable", `PASID table entry: ${(e as Error).message}`);
  }
  return decodeVtdPasidEntry(entry, 0);
}

/** The stage-1 table a present first-stage or nested entry binds (undefined for other translation types). */
export function vtdPasidEntryTable(entry: VtdPasidEntry): VtdStageOne | undefined {
  if (!entry.present || (entry.translation !== "first-stage" && entry.translation !== "nested")) return undefined;
  return {
    format: "vtd-s1",
    tableAddress: entry.firstStagePage * 4096,
    addressWidth: entry.addressWidth,
    sre: entry.sre,
    wpe: entry.wpe,
    eafe: entry.eafe,
  };
}

/**
 * The table a present entry gives its PASID in iommu-relay's request model: first-stage and nested entries their
 * stage-1 table (nesting), a second-stage entry its second-level table (what shadow mode walks). Undefined for
 * pass-through, for a second-stage entry without a usable root or width, and for an absent entry.
 */
export function vtdPasidEntryAnyTable(entry: VtdPasidEntry): StageOneTable | undefined {
  const stageOne = vtdPasidEntryTable(entry);
  if (stageOne || !entry.present || entry.translation !== "second-stage") return stageOne;
  if (!entry.secondStagePage || !entry.secondStageWidth) return undefined;
  return { format: "vtd-sl", tableAddress: entry.secondStagePage * 4096, addressWidth: entry.secondStageWidth };
}

/** A present second-stage PASID table entry (PGTT 2) as a guest driver writes it (64 bytes). */
export function encodeVtdSecondStagePasidEntry(
  opts: { did: number; secondStagePage: number; addressWidth?: 48 | 57 },
): Uint8Array {
  const bytes = new Uint8Array(VTD_PASID_ENTRY_SIZE);
  const v = new DataView(bytes.buffer);
  const aw = opts.addressWidth === 57 ? 3 : 2;
  v.setUint32(0, ((opts.secondStagePage % 2 ** 20) * 4096 + (2 << 6) + (aw << 2) + 1) >>> 0, true);
  v.setUint32(4, Math.floor(opts.secondStagePage / 2 ** 20), true);
  v.setUint16(8, opts.did, true);
  return bytes;
}

/** A present first-stage PASID table entry as a guest driver writes it (64 bytes). */
export function encodeVtdPasidEntry(
  opts: { did: number; firstStagePage: number; addressWidth?: 48 | 57; nested?: boolean; sre?: boolean },
): Uint8Array {
  const bytes = new Uint8Array(VTD_PASID_ENTRY_SIZE);
  const v = new DataView(bytes.buffer);
  v.setUint32(0, 1 | ((opts.nested ? 3 : 1) << 6), true);
  v.setUint16(8, opts.did, true);
  v.setUint32(
    16,
    ((opts.firstStagePage % 2 ** 20) * 4096) | (opts.addressWidth === 57 ? 4 : 0) | (opts.sre ? 1 : 0),
    true,
  );
  v.setUint32(20, Math.floor(opts.firstStagePage / 2 ** 20), true);
  return bytes;
}

/** A present PASID directory entry pointing at the PASID table at guest-physical `table` (8 bytes). */
export function encodeVtdPasidDirectoryEntry(table: number): Uint8Array {
  const bytes = new Uint8Array(8);
  const v = new DataView(bytes.buffer);
  v.setUint32(0, ((Math.floor(table / 4096) % 2 ** 20) * 4096) | 1, true);
  v.setUint32(4, Math.floor(table / 2 ** 32), true);
  return bytes;
}
