/**
 * virtio-iommu requests (virtio 1.2 §5.13) as they arrive in a request virtqueue buffer: a device-readable part
 * (head + request) and a device-writable tail carrying the status. ATTACH, DETACH, MAP, UNMAP and PROBE are
 * decoded and validated and handed to the VMM's hooks (MAP/UNMAP are the shadow-mapping path); the drafted
 * INVALIDATE (the 2017-era `scope/flags/domain/pasid/virt_start/nr_pages/granule/tag` request, never merged into
 * the spec, request type 6 here — iommu-relay's own number, labelled so) becomes a relay invalidation. Hostile
 * buffers never throw: every problem is a virtio status the guest sees.
 *
 * @module
 */
import type { Request } from "../../request/request.ts";
import type { DrainReport } from "../../relay/outcome.ts";
import { PAGE_SPACE, pageRangeOfBytes, RequestError } from "../../request/request.ts";

/** Request types (`VIRTIO_IOMMU_T_*`); INVALIDATE is the draft's, numbered by iommu-relay. */
export const VirtioIommuType = {
  ATTACH: 1,
  DETACH: 2,
  MAP: 3,
  UNMAP: 4,
  PROBE: 5,
  INVALIDATE: 6,
  PAGE_RESP: 7,
} as const;
/** Status codes (`VIRTIO_IOMMU_S_*`). */
export const VirtioIommuStatus = {
  OK: 0,
  IOERR: 1,
  UNSUPP: 2,
  DEVERR: 3,
  INVAL: 4,
  RANGE: 5,
  NOENT: 6,
  FAULT: 7,
  NOMEM: 8,
} as const;
/** MAP flags. */
export const VirtioMapFlags = { READ: 1, WRITE: 2, MMIO: 4 } as const;

/**
 * Bytes of each request (head + body + tail), from Linux's `include/uapi/linux/virtio_iommu.h` (virtio 1.2 §5.13.6):
 * ATTACH and DETACH 24, MAP 40, UNMAP 32; INVALIDATE and PAGE_RESP are iommu-relay's drafted layouts.
 */
const SIZES: Record<number, number> = { 1: 24, 2: 24, 3: 40, 4: 32, 6: 48, 7: 32 };
/** PROBE: head 0..3, endpoint 4, reserved 8..71, then the device-writable properties and the tail. */
const PROBE_HEAD = 4 + 4 + 64;

/** A decoded request. Byte addresses are bigints (a guest may name any 64-bit address). */
export type VirtioIommuRequest =
  | { readonly type: "attach"; readonly domain: number; readonly endpoint: number; readonly bypass: boolean }
  | { readonly type: "detach"; readonly domain: number; readonly endpoint: number }
  | {
    readonly type: "map";
    readonly domain: number;
    readonly virtStart: bigint;
    readonly virtEnd: bigint;
    readonly physStart: bigint;
    readonly flags: number;
  }
  | { readonly type: "unmap"; readonly domain: number; readonly virtStart: bigint; readonly virtEnd: bigint }
  | { readonly type: "probe"; readonly endpoint: number; readonly propertyBytes: number }
  | {
    /** The drafted PAGE_RESP (iommu-relay's layout, type 7): the guest's answer to a page request. */
    readonly type: "page-resp";
    readonly endpoint: number;
    readonly pasid?: number;
    readonly grpid: number;
    /** 0 success, 1 invalid, 2 failure. */
    readonly code: number;
  }
  | {
    readonly type: "invalidate";
    readonly domain: number;
    readonly pasid?: number;
    readonly virtStart?: bigint;
    readonly pages?: bigint;
    readonly leaf: boolean;
  };

/** What the VMM does with the requests that are not invalidations; each answers a status. */
export interface VirtioIommuHooks {
  attach?(r: VirtioIommuRequest & { type: "attach" }): number;
  detach?(r: VirtioIommuRequest & { type: "detach" }): number;
  map?(r: VirtioIommuRequest & { type: "map" }): number;
  unmap?(r: VirtioIommuRequest & { type: "unmap" }): number;
  /**
   * Consecutive UNMAPs of one kick for one domain, in queue order (see {@linkcode handleVirtioIommuKick}): set
   * `statuses[i]` for `requests[i]` to exactly what `unmap` would answer for it handled alone, after the ones before
   * it, and return only once the host answered. Lets a VMM merge them into fewer host calls.
   */
  unmapMany?(requests: readonly (VirtioIommuRequest & { type: "unmap" })[], statuses: number[]): void;
  /** The drafted PAGE_RESP: match it to a pending page request (see lib/frontends/virtio/faults.ts). */
  pageResponse?(r: VirtioIommuRequest & { type: "page-resp" }): number;
  /** Fill the probe properties into `properties`; answer a status. */
  probe?(r: VirtioIommuRequest & { type: "probe" }, properties: Uint8Array): number;
}

/**
 * Where invalidations go (a relay queue or a plugin). With `drain`, an INVALIDATE's status is written only after the
 * host answered it (drained), and a host failure is that request's IOERR; a sink without `drain` is one that answers
 * in `submit` (it throws on failure).
 */
export interface VirtioRelaySink {
  submit(request: Request): number;
  drain?(): DrainReport;
}

// Draft invalidate scope and flag bits (draft A).
const INVAL_S_DOMAIN = 1, INVAL_S_PASID = 2, INVAL_S_VA = 4, INVAL_F_LEAF = 2;

/**
 * Decode the device-readable part of a request. Returns the request, or the status to write (a number).
 *
 * @example
 * ```ts
 * import { decodeVirtioIommuRequest } from "./iommu.ts";
 * const b = new Uint8Array(24);
 * const v = new DataView(b.buffer);
 * b[0] = 1; v.setUint32(4, 7, true); v.setUint32(8, 0x10, true); // ATTACH domain 7, endpoint 0x10
 * console.log(decodeVirtioIommuRequest(b)); // { type: "attach", domain: 7, endpoint: 16, bypass: false }
 * ```
 */
export function decodeVirtioIommuRequest(buffer: Uint8Array): VirtioIommuRequest | number {
  const S = VirtioIommuStatus;
  if (buffer.byteLength < 8) return S.INVAL;
  const v = new DataView(buffer.buffer, buffer.byteOffset, buffer.byteLength);
  const type = buffer[0];
  if (buffer[1] || buffer[2] || buffer[3]) return S.INVAL; // head reserved bytes
  if (type === VirtioIommuType.PROBE) {
    if (buffer.byteLength < PROBE_HEAD + 4) return S.INVAL;
    for (let i = 8; i < PROBE_HEAD; i++) if (buffer[i]) return S.INVAL;
    return { type: "probe", endpoint: v.getUint32(4, true), propertyBytes: buffer.byteLength - PROBE_HEAD - 4 };
  }
  const size = SIZES[type];
  if (size === undefined) return S.UNSUPP;
  if (buffer.byteLength !== size) return S.INVAL;
  const u64 = (at: number) => v.getBigUint64(at, true);
  switch (type) {
    case VirtioIommuType.ATTACH: {
      // struct virtio_iommu_req_attach: head 0..3, domain 4, endpoint 8, flags 12, reserved 16..19, tail 20..23
      const flags = v.getUint32(12, true);
      if (flags & ~1 || v.getUint32(16, true)) return S.INVAL;
      return {
        type: "attach",
        domain: v.getUint32(4, true),
        endpoint: v.getUint32(8, true),
        bypass: (flags & 1) === 1,
      };
    }
    case VirtioIommuType.DETACH:
      // struct virtio_iommu_req_detach: head 0..3, domain 4, endpoint 8, reserved 12..19, tail 20..23
      if (v.getBigUint64(12, true)) return S.INVAL;
      return { type: "detach", domain: v.getUint32(4, true), endpoint: v.getUint32(8, true) };
    case VirtioIommuType.MAP: {
      // struct virtio_iommu_req_map: head 0..3, domain 4, virt_start 8, virt_end 16, phys_start 24, flags 32, tail 36
      const virtStart = u64(8), virtEnd = u64(16), flags = v.getUint32(32, true);
      if (virtEnd < virtStart || flags & ~7) return S.INVAL;
      return { type: "map", domain: v.getUint32(4, true), virtStart, virtEnd, physStart: u64(24), flags };
    }
    case VirtioIommuType.PAGE_RESP: {
      // head 0..3, endpoint 4, pasid 8, grpid 12, code 16, flags 20 (bit 0: PASID valid), reserved 24, tail 28
      const flags = v.getUint32(20, true), grpid = v.getUint32(12, true), code = v.getUint32(16, true);
      if (flags & ~1 || v.getUint32(24, true) || grpid > 0x1ff || code > 2) return S.INVAL;
      return {
        type: "page-resp",
        endpoint: v.getUint32(4, true),
        ...(flags & 1 ? { pasid: v.getUint32(8, true) } : {}),
        grpid,
        code,
      };
    }
    case VirtioIommuType.UNMAP: {
      // struct virtio_iommu_req_unmap: head 0..3, domain 4, virt_start 8, virt_end 16, reserved 24..27, tail 28..31
      const virtStart = u64(8), virtEnd = u64(16);
      if (v.getUint32(24, true) || virtEnd < virtStart) return S.INVAL;
      return { type: "unmap", domain: v.getUint32(4, true), virtStart, virtEnd };
    }
    default: {
      // The draft INVALIDATE in iommu-relay's naturally aligned layout: head 0..3, scope 4, flags 8, domain 12,
      // pasid 16, reserved 20..23, virt_start 24, nr_pages 32, granule 40, reserved 41..43, tail 44..47 (the
      // draft's SMMU-specific tag is left out: no host interface takes it).
      const scope = v.getUint32(4, true), flags = v.getUint32(8, true), domain = v.getUint32(12, true);
      const pasid = v.getUint32(16, true), virtStart = u64(24), pages = u64(32);
      const granule = buffer[40];
      if (scope & ~7 || flags & ~3 || v.getUint32(20, true) || buffer[41] || buffer[42] || buffer[43]) return S.INVAL;
      if (!(scope & INVAL_S_DOMAIN)) return S.INVAL;
      if ((scope & INVAL_S_VA) && (granule !== 12 || pages === 0n)) return S.INVAL;
      return {
        type: "invalidate",
        domain,
        ...(scope & INVAL_S_PASID ? { pasid } : {}),
        ...(scope & INVAL_S_VA ? { virtStart, pages } : {}),
        leaf: (flags & INVAL_F_LEAF) !== 0,
      };
    }
  }
}

/**
 * Handle one request buffer in place: decode, act (hooks or relay), write the status into the tail (the last 4
 * bytes, status in byte 0). Returns the status. Never throws for guest input.
 */
export function handleVirtioIommuRequest(buffer: Uint8Array, hooks: VirtioIommuHooks, relay: VirtioRelaySink): number {
  return handleDecoded(decodeVirtioIommuRequest(buffer), buffer, hooks, relay);
}

function handleDecoded(
  d: VirtioIommuRequest | number,
  buffer: Uint8Array,
  hooks: VirtioIommuHooks,
  relay: VirtioRelaySink,
): number {
  const S = VirtioIommuStatus;
  let status: number;
  if (typeof d === "number") status = d;
  else {
    try {
      status = act(d, buffer, hooks, relay);
    } catch (e) {
      status = e instanceof RequestError ? (e.reason === "range-wraps" ? S.RANGE : S.INVAL) : S.DEVERR;
    }
  }
  writeStatus(buffer, status);
  return status;
}

/** Write `status` into a request buffer's tail (the last 4 bytes, status in byte 0). */
function writeStatus(buffer: Uint8Array, status: number): void {
  if (buffer.byteLength < 4) return;
  buffer.fill(0, buffer.byteLength - 4);
  buffer[buffer.byteLength - 4] = status;
}

/**
 * Handle the request buffers one kick of the request queue made available, in queue order, writing each status into
 * its buffer's tail; returns the statuses. With `hooks.unmapMany`, each run of consecutive UNMAPs for one domain is
 * handed over as one batch (Linux's lazy driver queues its UNMAPs without a kick, so a kick brings 4 to 35 of them
 * and then a MAP): every other request — the MAP after the UNMAPs included — is handled after the run was answered,
 * so nothing is reordered across it. Every status is written after the host answered its request; the VMM puts the
 * buffers on the used ring after this returns. Never throws for guest input.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { handleVirtioIommuKick } from "./iommu.ts";
 * import { shadowMapHooks } from "./shadow.ts";
 * import { ShadowDomain } from "../../shadow/domain.ts";
 * import { ModelIoas } from "../../shadow/model_ioas.ts";
 * const ioas = new ModelIoas();
 * const domain = new ShadowDomain({ read: () => new Uint8Array(4096) }, 1 << 30, ioas);
 * const hooks = shadowMapHooks((d) => (d === 1 ? domain : undefined));
 * const request = (type: number, page: number) => {
 *   const b = new Uint8Array(type === 3 ? 40 : 32), v = new DataView(b.buffer);
 *   b[0] = type; // 3 MAP, 4 UNMAP: domain 4, virt_start 8, virt_end 16 (phys_start 24, flags 32)
 *   v.setUint32(4, 1, true);
 *   v.setBigUint64(8, BigInt(page) * 4096n, true);
 *   v.setBigUint64(16, BigInt(page) * 4096n + 4095n, true);
 *   if (type === 3) v.setBigUint64(24, BigInt(page) * 4096n, true), v.setUint32(32, 1, true);
 *   return b;
 * };
 * for (const page of [10, 11, 12, 13]) handleVirtioIommuKick([request(3, page)], hooks, { submit: () => 0 });
 * const before = ioas.calls;
 * const kick = [request(4, 10), request(4, 13), request(4, 12), request(4, 11), request(3, 9)];
 * assert.deepEqual(handleVirtioIommuKick(kick, hooks, { submit: () => 0 }), [0, 0, 0, 0, 0]);
 * assert.equal(ioas.calls - before, 2); // one IOAS unmap for the four pages, one map
 * ```
 */
export function handleVirtioIommuKick(
  buffers: readonly Uint8Array[],
  hooks: VirtioIommuHooks,
  relay: VirtioRelaySink,
): number[] {
  const S = VirtioIommuStatus;
  const statuses: number[] = new Array(buffers.length);
  const decoded = buffers.map(decodeVirtioIommuRequest);
  for (let i = 0; i < buffers.length;) {
    const d = decoded[i];
    if (!hooks.unmapMany || typeof d === "number" || d.type !== "unmap") {
      statuses[i] = handleDecoded(d, buffers[i], hooks, relay);
      i++;
      continue;
    }
    const run: (VirtioIommuRequest & { type: "unmap" })[] = [d];
    let j = i + 1;
    for (; j < buffers.length; j++) {
      const next = decoded[j];
      if (typeof next === "number" || next.type !== "unmap" || next.domain !== d.domain) break;
      run.push(next);
    }
    const answers: number[] = [];
    try {
      hooks.unmapMany(run, answers);
    } catch {
      answers.length = 0; // the hook failed: no request of the run may claim success
    }
    for (let k = 0; k < run.length; k++) {
      const status = answers[k] ?? S.DEVERR;
      statuses[i + k] = status;
      writeStatus(buffers[i + k], status);
    }
    i = j;
  }
  return statuses;
}

function act(d: VirtioIommuRequest, buffer: Uint8Array, hooks: VirtioIommuHooks, relay: VirtioRelaySink): number {
  const S = VirtioIommuStatus;
  switch (d.type) {
    case "attach":
      return hooks.attach ? hooks.attach(d) : S.UNSUPP;
    case "detach":
      return hooks.detach ? hooks.detach(d) : S.UNSUPP;
    case "map":
      return hooks.map ? hooks.map(d) : S.UNSUPP;
    case "unmap":
      return hooks.unmap ? hooks.unmap(d) : S.UNSUPP;
    case "page-resp":
      return hooks.pageResponse ? hooks.pageResponse(d) : S.UNSUPP;
    case "probe":
      return hooks.probe ? hooks.probe(d, buffer.subarray(PROBE_HEAD, buffer.byteLength - 4)) : S.OK;
    case "invalidate": {
      let scope: Request & { op: "invalidate" };
      if (d.virtStart !== undefined && d.pages !== undefined) {
        if (d.pages > BigInt(PAGE_SPACE)) return S.RANGE;
        const range = pageRangeOfBytes(d.virtStart, d.pages * 4096n);
        scope = d.pasid !== undefined
          ? {
            op: "invalidate",
            domain: d.domain,
            scope: { kind: "pasid-range", pasid: d.pasid, ...range },
            leaf: d.leaf,
          }
          : { op: "invalidate", domain: d.domain, scope: { kind: "range", ...range }, leaf: d.leaf };
      } else {
        scope = d.pasid !== undefined
          ? { op: "invalidate", domain: d.domain, scope: { kind: "pasid", pasid: d.pasid } }
          : { op: "invalidate", domain: d.domain, scope: { kind: "all" } };
      }
      const seq = relay.submit(scope);
      // The status is the host's answer: drain now, so a host EIO is this request's status, not a later drain's.
      if (relay.drain) {
        const failures = relay.drain().failures;
        for (let i = 0; i < failures.length; i++) if (failures[i].seq === seq) return S.IOERR;
        if (failures.length > 0) return S.IOERR; // an earlier request's failure surfaced here: do not claim success
      }
      return S.OK;
    }
  }
}
