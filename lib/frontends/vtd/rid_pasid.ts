/**
 * The RID_PASID of scalable-mode VT-d: the PASID whose PASID-table entry translates a device's requests *without*
 * PASID. A guest therefore invalidates that translation with PASID-granular descriptors (P-IOTLB, PASID-cache) for the
 * RID_PASID, and its page requests without PASID are answered under it. In iommu-relay's request model that address
 * space is `"rid"`, not a numeric PASID: the host binds a device's no-PASID translation at its RID, which works on
 * devices with and without PASID capability.
 *
 * Which PASID it is (VT-d spec 9.4, scalable-mode context entry; ECAP.RPS, bit 49): with ECAP.RPS clear, PASID 0 for
 * every device; with RPS set, the RID_PASID field of the device's scalable-mode context entry (bits 83:64). Linux
 * (`drivers/iommu/intel/pasid.c`, `context_set_sm_rid2pasid(context, IOMMU_NO_PASID)`) always writes 0.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { VTD_RID_PASID_ZERO, VtdRidPasidTable } from "./rid_pasid.ts";
 * assert.equal(VTD_RID_PASID_ZERO.route(3, 0), "rid");
 * assert.equal(VTD_RID_PASID_ZERO.route(3, 5), "pasid");
 * const rps = new VtdRidPasidTable();
 * rps.assign(0x10, 3, 7); // device 00:02.0 in domain 3 uses PASID 7 as its RID_PASID
 * rps.assign(0x18, 3, 0);
 * assert.equal(rps.route(3, 7), "rid-and-pasid");
 * assert.equal(rps.route(3, 0), "rid-and-pasid");
 * assert.equal(rps.route(3, 9), "pasid");
 * ```
 *
 * @module
 */
import type { PasidOrRid } from "../../request/request.ts";

/**
 * Which host address space a guest (DID, PASID) names: the no-PASID one (`"rid"`), the PASID's own, or both (the
 * PASID is the RID_PASID of some devices of the domain and may be an ordinary PASID of others: invalidating both
 * over-invalidates, which is safe).
 */
export type VtdPasidRoute = "rid" | "pasid" | "rid-and-pasid";

/** Resolves guest PASIDs against the RID_PASIDs of the devices in a domain. Called on the doorbell path: no allocation. */
export interface VtdRidPasidMap {
  /** The route of PASID `pasid` in guest domain `did`. */
  route(did: number, pasid: number): VtdPasidRoute;
  /** The route of PASID `pasid` of the device with requester id `rid` (page requests and their responses). */
  routeOfDevice(rid: number, pasid: number): VtdPasidRoute;
}

/** ECAP.RPS: the unit supports a RID_PASID other than 0 (VT-d spec 11.4.3). */
export const VTD_ECAP_RPS_BIT = 49;

/** Whether an ECAP register value has RPS set (bit 49). */
export function vtdEcapRps(ecap: bigint): boolean {
  return ((ecap >> BigInt(VTD_ECAP_RPS_BIT)) & 1n) === 1n;
}

/**
 * The RID_PASID field of a scalable-mode context entry (bits 83:64: the low 20 bits of its second qword), from the
 * 16 bytes at `at`. Meaningful only when ECAP.RPS is set; otherwise the RID_PASID is 0 whatever the field holds.
 */
export function vtdContextRidPasid(bytes: Uint8Array, at: number): number {
  if (!(Number.isInteger(at) && at >= 0 && at + 16 <= bytes.length)) {
    throw new RangeError(`a context entry needs 16 bytes at ${at} of a ${bytes.length}-byte buffer`);
  }
  return (bytes[at + 8] | (bytes[at + 9] << 8) | ((bytes[at + 10] & 0x0f) << 16)) >>> 0;
}

/** ECAP.RPS clear (and every Linux guest): PASID 0 is every device's RID_PASID, and no other PASID is. */
export const VTD_RID_PASID_ZERO: VtdRidPasidMap = Object.freeze({
  route: (_did: number, pasid: number): VtdPasidRoute => pasid === 0 ? "rid" : "pasid",
  routeOfDevice: (_rid: number, pasid: number): VtdPasidRoute => pasid === 0 ? "rid" : "pasid",
});

/**
 * ECAP.RPS set: each device's RID_PASID as the VMM read it from the device's scalable-mode context entry
 * ({@linkcode vtdContextRidPasid}), with the domain (DID) its RID_PASID entry names. A device the table does not know
 * uses 0 (the reset value of the field).
 */
export class VtdRidPasidTable implements VtdRidPasidMap {
  /** Requester id → [domain, RID_PASID]. */
  readonly #devices = new Map<number, readonly [number, number]>();
  /** Domain → the distinct RID_PASIDs of its devices, rebuilt when a device changes (so `route` allocates nothing). */
  readonly #byDomain = new Map<number, number[]>();

  /** Device `rid` is in domain `did` with RID_PASID `ridPasid` (replacing what was recorded for it). */
  assign(rid: number, did: number, ridPasid: number): void {
    if (!Number.isInteger(ridPasid) || ridPasid < 0 || ridPasid >= 1 << 20) {
      throw new RangeError(`RID_PASID ${ridPasid} is not a 20-bit PASID`);
    }
    this.#devices.set(rid, [did, ridPasid]);
    this.#rebuild();
  }

  /** Forget device `rid` (its context entry was cleared). */
  remove(rid: number): void {
    if (this.#devices.delete(rid)) this.#rebuild();
  }

  #rebuild(): void {
    this.#byDomain.clear();
    for (const [did, ridPasid] of this.#devices.values()) {
      const list = this.#byDomain.get(did) ?? [];
      if (!list.includes(ridPasid)) list.push(ridPasid);
      this.#byDomain.set(did, list);
    }
  }

  route(did: number, pasid: number): VtdPasidRoute {
    const list = this.#byDomain.get(did);
    if (list === undefined) return pasid === 0 ? "rid" : "pasid";
    let isRidPasid = false;
    for (let i = 0; i < list.length; i++) if (list[i] === pasid) isRidPasid = true;
    if (!isRidPasid) return "pasid";
    // Another device of the domain has another RID_PASID, so this PASID may be an ordinary PASID of that device.
    return list.length === 1 ? "rid" : "rid-and-pasid";
  }

  routeOfDevice(rid: number, pasid: number): VtdPasidRoute {
    const d = this.#devices.get(rid);
    return pasid === (d === undefined ? 0 : d[1]) ? "rid" : "pasid";
  }
}

/** The request model's binding key for PASID `pasid` of device `rid`: `"rid"` at its RID_PASID. */
export function vtdBindingKey(map: VtdRidPasidMap, rid: number, pasid: number): PasidOrRid {
  return map.routeOfDevice(rid, pasid) === "rid" ? "rid" : pasid;
}
