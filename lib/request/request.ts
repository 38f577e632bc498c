/**
 * What the guest asked for, vendor-neutral: the 2017 `VFIO_IOMMU_TLB_INVALIDATE` model kept alive. An
 * invalidation has a scope (whole space, one PASID, one page range over every PASID and the no-PASID space, or a
 * range within one PASID), NO_PASID and LEAF flags and typed vendor hints; a bind attaches a stage-1 table to a
 * PASID (or the RID); a sync is a guest wait / CMD_SYNC.
 *
 * Ranges are whole 4 KiB pages: a page number is below 2^52, so it is an exact JS number and the hot path needs
 * no BigInt. Guest byte addresses convert at the edge ({@linkcode pageRangeOfBytes}).
 *
 * @module
 */

/** The largest page number + 1 of a 64-bit address space (2^52 pages of 4 KiB). */
export const PAGE_SPACE = 2 ** 52;
/** The PASID width of the PCIe spec (20 bits). */
export const PCIE_PASID_BITS = 20;

/** What an invalidation covers. */
export type Scope =
  | { readonly kind: "all" }
  | { readonly kind: "pasid"; readonly pasid: number }
  | { readonly kind: "range"; readonly firstPage: number; readonly pages: number }
  | { readonly kind: "pasid-range"; readonly pasid: number; readonly firstPage: number; readonly pages: number };

/** Vendor extras the 2017 format carried in its opaque tail. No current kernel interface takes them. */
export interface VendorHints {
  /** VT-d: the invalidation concerns global (G=1) entries too. */
  readonly global?: boolean;
  /** SMMUv3: the guest's translation-table level of the leaf entries (TTL), 0 = unknown. */
  readonly ttl?: number;
}

/** Invalidate cached translations. */
export interface InvalidateRequest {
  /** Discriminant: an invalidation. */
  readonly op: "invalidate";
  /** The guest domain (VT-d DID, SMMUv3 VMID-scope, virtio-iommu domain) whose targets this reaches. */
  readonly domain: number;
  /** What is invalidated: everything, a PASID, or a page range (with or without a PASID). */
  readonly scope: Scope;
  /** Only non-PASID (RID) mappings: the 2017 NO_PASID flag. Not valid with a PASID scope. */
  readonly noPasid?: boolean;
  /** Only leaf entries changed; walk caches may be kept (a hint: dropping it over-invalidates, safely). */
  readonly leaf?: boolean;
  /** What the guest's command said beyond the vendor-neutral model (kept for formats that can use it). */
  readonly hints?: VendorHints;
}

/** A VT-d first-stage (stage-1) table: `struct iommu_hwpt_vtd_s1`. */
export interface VtdStageOne {
  /** Discriminant: `IOMMU_HWPT_DATA_VTD_S1`. */
  readonly format: "vtd-s1";
  /** Guest-physical address of the table root (4 KiB aligned). */
  readonly tableAddress: number;
  /** Input address width: 48 (4-level) or 57 (5-level). */
  readonly addressWidth: 48 | 57;
  /** Supervisor requests enable (`IOMMU_VTD_S1_SRE`). */
  readonly sre?: boolean;

  /** Extended accessed flag enable (`IOMMU_VTD_S1_EAFE`). */
  readonly eafe?: boolean;
  /** Write protect enable (`IOMMU_VTD_S1_WPE`). */
  readonly wpe?: boolean;
}

/**
 * A VT-d second-level table (legacy mode, or scalable mode's second stage): what a guest without nesting support
 * gives its devices. Only shadow mode takes it — the host walks it and maps the result into an IOAS.
 */
export interface VtdSecondLevel {
  /** Discriminant: a VT-d second-level table (shadow mode only; no nested HWPT type takes it). */
  readonly format: "vtd-sl";
  /** Guest-physical address of the table root (4 KiB aligned). */
  readonly tableAddress: number;
  /** 48 (4-level) or 57 (5-level). */
  readonly addressWidth: 48 | 57;
}

/** An SMMUv3 stage-1 context: the guest STE words (nested HWPT data) and the CD's ASID for this PASID. */
export interface SmmuStageOne {
  /** Discriminant: `IOMMU_HWPT_DATA_ARM_SMMUV3`. */
  readonly format: "smmuv3";
  /** STE words 0 and 1 as the guest wrote them. */
  readonly ste: readonly [bigint, bigint];
  /** The ASID of the context descriptor at this PASID (SSID). */
  readonly asid: number;
}

/** The kernel selftest's mock stage-1: just the initial IOTLB value. */
export interface SelftestStageOne {
  /** Discriminant: `IOMMU_HWPT_DATA_SELFTEST`. */
  readonly format: "selftest";
  /** The value every mock IOTLB slot starts at (`struct iommu_hwpt_selftest.iotlb`). */
  readonly iotlb: number;
}

/** A stage-1 table in one host format. */
export type StageOneTable = VtdStageOne | VtdSecondLevel | SmmuStageOne | SelftestStageOne;

/** The tables a nested HWPT takes (a second-level table is shadow mode's). */
export type NestedTable = Exclude<StageOneTable, VtdSecondLevel>;

/** The no-PASID address space (requests without PASID, the RID's domain). */
export type PasidOrRid = number | "rid";

/** Attach a stage-1 table to a PASID (or the RID), replacing what was there. */
export interface BindRequest {
  /** Discriminant: a bind. */
  readonly op: "bind";
  /** The guest domain the device is in. */
  readonly domain: number;
  /** Where the table is attached: a PASID, or `"rid"` for requests without PASID. */
  readonly pasid: PasidOrRid;
  /** The guest table to attach. */
  readonly table: StageOneTable;
}

/** Detach a PASID (or the RID). */
export interface UnbindRequest {
  /** Discriminant: an unbind. */
  readonly op: "unbind";
  /** The guest domain the device is in. */
  readonly domain: number;
  /** What to detach: a PASID, or `"rid"`. */
  readonly pasid: PasidOrRid;
}

/** A guest wait: everything queued before it must be complete before it completes. */
export interface SyncRequest {
  /** Discriminant: a wait. */
  readonly op: "sync";
}

/** Any guest request. */
export type Request = InvalidateRequest | BindRequest | UnbindRequest | SyncRequest;

/** Why a request was refused. */
export type RequestErrorReason =
  | "pasid-out-of-range"
  | "empty-range"
  | "range-wraps"
  | "misaligned"
  | "not-integer"
  | "unknown-flag"
  | "conflicting-flags"
  | "bad-table";

/**
 * A guest request that cannot be relayed, with the field at fault.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { RequestError } from "./request.ts";
 * const e = new RequestError("pasid-out-of-range", "scope.pasid", "PASID 1048576 needs more than 20 bits");
 * assert.equal(e.reason, "pasid-out-of-range");
 * ```
 */
export class RequestError extends Error {
  /** Always `"RequestError"`. */
  override name = "RequestError";
  /** The message is `<field>: <reason>: <detail>`. */
  constructor(
    /** Machine-readable reason. */
    readonly reason: RequestErrorReason,
    /** The field at fault. */
    readonly field: string,
    detail: string,
  ) {
    super(`${field}: ${reason}: ${detail}`);
  }
}

/** Limits requests are validated against. */
export interface RequestLimits {
  /** PASID width in bits (20, or what the hardware reports). */
  readonly pasidBits: number;
}

const DEFAULT_LIMITS: RequestLimits = { pasidBits: PCIE_PASID_BITS };

function checkPasid(pasid: number, field: string, limits: RequestLimits): void {
  if (!Number.isInteger(pasid)) throw new RequestError("not-integer", field, `${pasid}`);
  const bits = limits.pasidBits;
  if (pasid < 0 || pasid >= (bits < 31 ? 1 << bits : 2 ** bits)) {
    throw new RequestError("pasid-out-of-range", field, `PASID ${pasid} needs more than ${limits.pasidBits} bits`);
  }
}

function checkRange(firstPage: number, pages: number): void {
  if (!Number.isInteger(firstPage) || !Number.isInteger(pages)) {
    throw new RequestError("not-integer", "scope", `firstPage ${firstPage}, pages ${pages}`);
  }
  if (pages <= 0) throw new RequestError("empty-range", "scope.pages", `${pages} pages`);
  if (firstPage < 0 || firstPage + pages > PAGE_SPACE) {
    throw new RequestError("range-wraps", "scope", `pages [${firstPage}, +${pages}) leave the 64-bit space`);
  }
}

/**
 * Validate a request; throws a {@linkcode RequestError} naming the field. Returns the request for chaining.
 *
 * @example
 * ```ts
 * import { validateRequest } from "./request.ts";
 * validateRequest({ op: "invalidate", domain: 1, scope: { kind: "pasid-range", pasid: 5, firstPage: 0x7f000, pages: 512 }, leaf: true });
 * ```
 */
export function validateRequest<R extends Request>(request: R, limits: RequestLimits = DEFAULT_LIMITS): R {
  switch (request.op) {
    case "sync":
      return request;
    case "unbind":
    case "bind":
      if (!Number.isInteger(request.domain) || request.domain < 0) {
        throw new RequestError("not-integer", "domain", `${request.domain}`);
      }
      if (request.pasid !== "rid") checkPasid(request.pasid, "pasid", limits);
      if (request.op === "bind") validateTable(request.table);
      return request;
    case "invalidate": {
      if (!Number.isInteger(request.domain) || request.domain < 0) {
        throw new RequestError("not-integer", "domain", `${request.domain}`);
      }
      const s = request.scope;
      if (s.kind === "pasid" || s.kind === "pasid-range") {
        checkPasid(s.pasid, "scope.pasid", limits);
        if (request.noPasid) {
          throw new RequestError("conflicting-flags", "noPasid", "NO_PASID with a PASID scope selects nothing");
        }
      }
      if (s.kind === "range" || s.kind === "pasid-range") checkRange(s.firstPage, s.pages);
      if (s.kind !== "all" && s.kind !== "pasid" && s.kind !== "range" && s.kind !== "pasid-range") {
        throw new RequestError("unknown-flag", "scope.kind", `${(s as { kind: string }).kind}`);
      }
      const ttl = request.hints?.ttl;
      if (ttl !== undefined && (!Number.isInteger(ttl) || ttl < 0 || ttl > 3)) {
        throw new RequestError("unknown-flag", "hints.ttl", `${ttl}`);
      }
      return request;
    }
    default:
      throw new RequestError("unknown-flag", "op", `${(request as { op: string }).op}`);
  }
}

function validateTable(t: StageOneTable): void {
  switch (t.format) {
    case "vtd-s1":
    case "vtd-sl":
      if (!Number.isInteger(t.tableAddress) || t.tableAddress < 0 || t.tableAddress % 4096 !== 0) {
        throw new RequestError("misaligned", "table.tableAddress", `0x${t.tableAddress.toString(16)}`);
      }
      if (t.addressWidth !== 48 && t.addressWidth !== 57) {
        throw new RequestError("bad-table", "table.addressWidth", `${t.addressWidth}`);
      }
      return;
    case "smmuv3":
      if (!Number.isInteger(t.asid) || t.asid < 0 || t.asid > 0xffff) {
        throw new RequestError("bad-table", "table.asid", `${t.asid}`);
      }
      return;
    case "selftest":
      if (!Number.isInteger(t.iotlb) || t.iotlb < 0 || t.iotlb > 0xffff_ffff) {
        throw new RequestError("bad-table", "table.iotlb", `${t.iotlb}`);
      }
      return;
    default:
      throw new RequestError("bad-table", "table.format", `${(t as { format: string }).format}`);
  }
}

/**
 * The whole 4 KiB pages a byte range touches (a guest's byte address and size), or a typed error for an empty
 * or wrapping range. Addresses are bigints here because guests may name any 64-bit address.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { pageRangeOfBytes } from "./request.ts";
 * assert.deepEqual(pageRangeOfBytes(0x7f00_0800n, 0x1000n), { firstPage: 0x7f000, pages: 2 });
 * ```
 */
export function pageRangeOfBytes(address: bigint, size: bigint): { firstPage: number; pages: number } {
  if (size <= 0n) throw new RequestError("empty-range", "size", `${size}`);
  const end = address + size; // exclusive
  if (address < 0n || end > 1n << 64n) {
    throw new RequestError("range-wraps", "size", `0x${address.toString(16)} + ${size}`);
  }
  const first = address >> 12n;
  const last = (end - 1n) >> 12n;
  return { firstPage: Number(first), pages: Number(last - first + 1n) };
}
