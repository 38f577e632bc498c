/**
 * The 2017 wire format, both ways: a request ↔ `struct vfio_iommu_tlb_invalidate` (+ iommu-relay's 16-byte
 * vendor tail when hints are present), and a bind ↔ `struct vfio_device_svm` with `VFIO_SVM_BIND_PGTABLE`.
 * The guest domain is not on the wire (2017 had one container per domain): decoders take it as an argument.
 *
 * Decoding is for hostile bytes: every field is validated and a bad one is a typed error; a byte range that is
 * not page-aligned is widened to whole pages (over-invalidating is safe).
 *
 * @module
 */
import {
  type BindRequest,
  type InvalidateRequest,
  PAGE_SPACE,
  pageRangeOfBytes,
  RequestError,
  type Scope,
  validateRequest,
} from "../request/request.ts";
import {
  DeviceSvm2017,
  SvmBindPgtable2017,
  TlbInvalidate2017,
  TlbInvalidate2017Tail,
  UapiError,
  VfioDeviceSvm,
  VfioIommuTlbInvalidate,
  writePageAddress,
  writeU64,
} from "../uapi/mod.ts";

const S = TlbInvalidate2017.values;
const HEAD = VfioIommuTlbInvalidate.size;
const TAIL = TlbInvalidate2017Tail.size;
const RID = 0xffff_ffff;

/**
 * Encode an invalidation. A range reaching the top of the 64-bit space has a size of 2^64, which a u64 cannot
 * hold; such a range is the whole space and is encoded without VADDR.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { decodeTlbInvalidate2017, encodeTlbInvalidate2017 } from "./wire2017.ts";
 * const bytes = encodeTlbInvalidate2017({ op: "invalidate", domain: 1, scope: { kind: "pasid-range", pasid: 5, firstPage: 0x7f000, pages: 512 }, leaf: true });
 * assert.equal(bytes.length, 32);
 * assert.deepEqual(decodeTlbInvalidate2017(bytes, 1).scope, { kind: "pasid-range", pasid: 5, firstPage: 0x7f000, pages: 512 });
 * ```
 */
export function encodeTlbInvalidate2017(request: InvalidateRequest): Uint8Array {
  validateRequest(request);
  let s: Scope = request.scope;
  if ((s.kind === "range" || s.kind === "pasid-range") && s.firstPage === 0 && s.pages === PAGE_SPACE) {
    s = s.kind === "range" ? { kind: "all" } : { kind: "pasid", pasid: s.pasid };
  }
  const hints = request.hints;
  const withTail = hints !== undefined && (hints.global || (hints.ttl ?? 0) !== 0);
  const bytes = new Uint8Array(HEAD + (withTail ? TAIL : 0));
  const v = new DataView(bytes.buffer);
  v.setUint32(0, bytes.byteLength, true);
  let scope = 0;
  if (s.kind === "pasid" || s.kind === "pasid-range") {
    scope |= S.VFIO_IOMMU_INVALIDATE_PASID;
    v.setUint32(12, s.pasid, true);
  }
  if (s.kind === "range" || s.kind === "pasid-range") {
    scope |= S.VFIO_IOMMU_INVALIDATE_VADDR;
    writePageAddress(v, 16, s.firstPage);
    // size = pages * 4096 < 2^64 here: split to stay exact without BigInt.
    writePageAddress(v, 24, s.pages);
  }
  v.setUint32(4, scope, true);
  v.setUint32(
    8,
    (request.noPasid ? S.VFIO_IOMMU_INVALIDATE_NO_PASID : 0) | (request.leaf ? S.VFIO_IOMMU_INVALIDATE_VADDR_LEAF : 0),
    true,
  );
  if (withTail) {
    TlbInvalidate2017Tail.encode({ version: 1, hints: hints!.global ? 1 : 0, ttl: hints!.ttl ?? 0 }, bytes, HEAD);
  }
  return bytes;
}

/** Decode (and validate) an invalidation for guest domain `domain`. Throws UapiError or RequestError. */
export function decodeTlbInvalidate2017(bytes: Uint8Array, domain: number): InvalidateRequest {
  if (bytes.byteLength < HEAD) {
    throw new UapiError(VfioIommuTlbInvalidate.name, "(buffer)", "short-buffer", `${bytes.byteLength} < ${HEAD}`);
  }
  const argsz = new DataView(bytes.buffer, bytes.byteOffset, 4).getUint32(0, true);
  if (argsz !== HEAD && argsz !== HEAD + TAIL) {
    throw new UapiError(
      VfioIommuTlbInvalidate.name,
      "argsz",
      "unknown-value",
      `${argsz} is neither ${HEAD} nor ${HEAD + TAIL}`,
    );
  }
  if (bytes.byteLength !== argsz) {
    throw new UapiError(
      VfioIommuTlbInvalidate.name,
      "argsz",
      argsz > bytes.byteLength ? "size-too-large" : "oversized-buffer",
      `argsz ${argsz}, buffer ${bytes.byteLength}`,
    );
  }
  // The head alone is validated as a 32-byte struct (argsz rewritten to match), the tail separately.
  const head = bytes.slice(0, HEAD);
  new DataView(head.buffer).setUint32(0, HEAD, true);
  const h = VfioIommuTlbInvalidate.decode(head);
  let hints: InvalidateRequest["hints"];
  if (argsz > HEAD) {
    const t = TlbInvalidate2017Tail.decode(bytes.subarray(HEAD, HEAD + TAIL));
    hints = { global: (t.hints & 1) === 1, ttl: t.ttl };
  }
  const hasPasid = (h.scope & S.VFIO_IOMMU_INVALIDATE_PASID) !== 0;
  const hasVaddr = (h.scope & S.VFIO_IOMMU_INVALIDATE_VADDR) !== 0;
  let scope: Scope;
  if (hasVaddr) {
    const range = pageRangeOfBytes(h.vaddr, h.size);
    scope = hasPasid ? { kind: "pasid-range", pasid: h.pasid, ...range } : { kind: "range", ...range };
  } else {
    if (h.vaddr !== 0n || h.size !== 0n) {
      throw new UapiError(VfioIommuTlbInvalidate.name, "vaddr", "reserved-nonzero", "vaddr/size without scope VADDR");
    }
    scope = hasPasid ? { kind: "pasid", pasid: h.pasid } : { kind: "all" };
  }
  if (!hasPasid && h.pasid !== 0) {
    throw new UapiError(VfioIommuTlbInvalidate.name, "pasid", "reserved-nonzero", "pasid without scope PASID");
  }
  const request: InvalidateRequest = {
    op: "invalidate",
    domain,
    scope,
    noPasid: (h.flags & S.VFIO_IOMMU_INVALIDATE_NO_PASID) !== 0,
    leaf: (h.flags & S.VFIO_IOMMU_INVALIDATE_VADDR_LEAF) !== 0,
    ...(hints ? { hints } : {}),
  };
  return validateRequest(request);
}

/**
 * Encode a VT-d stage-1 bind as `vfio_device_svm` + `VFIO_SVM_BIND_PGTABLE` data.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { decodeSvmBind2017, encodeSvmBind2017 } from "./wire2017.ts";
 * const b = encodeSvmBind2017({ op: "bind", domain: 1, pasid: 7, table: { format: "vtd-s1", tableAddress: 0x1000, addressWidth: 48 } });
 * assert.equal(b.length, 36);
 * assert.equal(decodeSvmBind2017(b, 1).pasid, 7);
 * ```
 */
export function encodeSvmBind2017(request: BindRequest): Uint8Array {
  validateRequest(request);
  const t = request.table;
  if (t.format === "smmuv3") {
    throw new UapiError(
      SvmBindPgtable2017.name,
      "format",
      "unknown-value",
      "smmuv3: the 2017 bind carried VT-d tables (and iommu-relay's selftest format) only",
    );
  }
  const bytes = new Uint8Array(VfioDeviceSvm.size + SvmBindPgtable2017.size);
  VfioDeviceSvm.encode({
    argsz: bytes.byteLength,
    flags: DeviceSvm2017.values.VFIO_SVM_BIND_PGTABLE,
    length: SvmBindPgtable2017.size,
  }, bytes);
  const data = bytes.subarray(VfioDeviceSvm.size);
  if (t.format === "vtd-sl") {
    throw new RequestError("bad-table", "table.format", "the 2017 bind record carries stage-1 tables, not vtd-sl");
  }
  SvmBindPgtable2017.encode({
    pasid: request.pasid === "rid" ? RID : request.pasid,
    format: t.format === "vtd-s1" ? 1 : 2,
    table: 0,
    addr_width: t.format === "vtd-s1" ? t.addressWidth : 48,
    flags: t.format === "vtd-s1" ? (t.sre ? 1 : 0) | (t.eafe ? 2 : 0) | (t.wpe ? 4 : 0) : 0,
  }, data);
  writeU64(new DataView(data.buffer, data.byteOffset), 8, t.format === "vtd-s1" ? t.tableAddress : t.iotlb);
  return bytes;
}

/** Decode (and validate) a `vfio_device_svm` bind for guest domain `domain`. */
export function decodeSvmBind2017(bytes: Uint8Array, domain: number): BindRequest {
  const total = VfioDeviceSvm.size + SvmBindPgtable2017.size;
  if (bytes.byteLength !== total) {
    throw new UapiError(
      VfioDeviceSvm.name,
      "(buffer)",
      bytes.byteLength < total ? "short-buffer" : "oversized-buffer",
      `${bytes.byteLength} bytes, expected ${total}`,
    );
  }
  const head = bytes.slice(0, VfioDeviceSvm.size);
  const declared = new DataView(head.buffer).getUint32(0, true);
  if (declared !== total) {
    throw new UapiError(VfioDeviceSvm.name, "argsz", "unknown-value", `${declared}, expected ${total}`);
  }
  new DataView(head.buffer).setUint32(0, VfioDeviceSvm.size, true);
  const h = VfioDeviceSvm.decode(head);
  if (h.flags !== DeviceSvm2017.values.VFIO_SVM_BIND_PGTABLE) {
    throw new UapiError(
      VfioDeviceSvm.name,
      "flags",
      "unknown-value",
      `0x${h.flags.toString(16)}: only BIND_PGTABLE is relayed`,
    );
  }
  if (h.length !== SvmBindPgtable2017.size) {
    throw new UapiError(VfioDeviceSvm.name, "length", "unknown-value", `${h.length}`);
  }
  const d = SvmBindPgtable2017.decode(bytes.subarray(VfioDeviceSvm.size));
  if (d.table > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new UapiError(SvmBindPgtable2017.name, "table", "out-of-range", `0x${d.table.toString(16)}`);
  }
  const pasid = d.pasid === RID ? "rid" as const : d.pasid;
  if (d.format === 2) {
    if (d.table > 0xffff_ffffn || d.flags) {
      throw new UapiError(SvmBindPgtable2017.name, "table", "out-of-range", "selftest IOTLB value");
    }
    return validateRequest({ op: "bind", domain, pasid, table: { format: "selftest", iotlb: Number(d.table) } });
  }
  return validateRequest({
    op: "bind",
    domain,
    pasid,
    table: {
      format: "vtd-s1",
      tableAddress: Number(d.table),
      addressWidth: d.addr_width as 48 | 57,
      sre: (d.flags & 1) !== 0,
      eafe: (d.flags & 2) !== 0,
      wpe: (d.flags & 4) !== 0,
    },
  });
}
