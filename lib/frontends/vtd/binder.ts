/**
 * Scalable-mode binds from the guest's PASID tables: what a VMM does on a PASID-cache (or context-cache)
 * invalidation. It reads the device's PASID entry again and binds its table through the device's sink (its plugin)
 * — at `"rid"` when the PASID is the device's RID_PASID, so the guest's entry at the RID_PASID becomes the device's
 * requests-without-PASID binding, on devices with and without PASID capability — or unbinds when the entry is gone
 * or unusable (no translation is the safe state: the device faults instead of keeping a stale table).
 *
 * Guest tables are hostile: an unreadable or malformed entry, or a bind the sink refuses, is recorded in
 * `telemetry.badEntries` (the latest 64) and never thrown, so the binder can be the queue model's `configChanged` hook.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { VtdPasidBinder } from "./binder.ts";
 * import { encodeVtdPasidDirectoryEntry, encodeVtdPasidEntry } from "./pasid.ts";
 * const ram = new Uint8Array(1 << 16);
 * const memory = { read: (a: number, n: number) => ram.slice(a, a + n), write: (a: number, b: Uint8Array) => ram.set(b, a) };
 * ram.set(encodeVtdPasidDirectoryEntry(0x2000), 0x1000); // directory at 0x1000, PASIDs 0..63 in the table at 0x2000
 * ram.set(encodeVtdPasidEntry({ did: 3, firstStagePage: 0x300 }), 0x2000); // PASID 0: Linux's RID_PASID
 * const binds: unknown[] = [];
 * const binder = new VtdPasidBinder(memory);
 * binder.attach({ rid: 0x10, pasidDirectory: 0x1000, sink: { submit: (r) => binds.push(r) } });
 * binder.configChanged({ type: "pasid-cache", granularity: "pasid", did: 3, pasid: 0 });
 * assert.equal(binds.length, 1);
 * assert.equal((binds[0] as { pasid: unknown }).pasid, "rid");
 * ```
 *
 * @module
 */
import type { BindRequest, PasidOrRid, StageOneTable, UnbindRequest } from "../../request/request.ts";
import type { VtdDescriptor } from "./descriptors.ts";
import { lookupVtdPasidEntry, type VtdPasidEntry, vtdPasidEntryAnyTable } from "./pasid.ts";
import type { GuestMemory } from "../../memory/guest_memory.ts";
import { VTD_RID_PASID_ZERO, vtdBindingKey, type VtdRidPasidMap } from "./rid_pasid.ts";

/** A device behind the unit, as the VMM knows it from the device's scalable-mode context entry. */
export interface VtdBinderDevice {
  /** Requester id (bus/device/function). */
  readonly rid: number;
  /** Guest-physical address of the device's PASID directory. */
  readonly pasidDirectory: number;
  /** Where its binds and unbinds go (the device's plugin). What it throws is recorded as a refused bind. */
  readonly sink: { submit(request: BindRequest | UnbindRequest): unknown };
}

/** What the binder did. */
export interface VtdBinderTelemetry {
  /** Present PASID entries bound (a rebind after a change counts again). */
  binds: number;
  /** Bound PASIDs unbound (entry cleared, or the device detached). */
  unbinds: number;
  /** Binds at a RID_PASID (made at "rid"). */
  ridBinds: number;
  /** Entries that could not be bound, and why (the latest 64). */
  readonly badEntries: string[];
}

/** How a present PASID entry becomes a host table (default: stage-1 for nesting, second-level for shadow mode). */
export type VtdTableFor = (entry: VtdPasidEntry & { present: true }) => StageOneTable | undefined;

/** Keeps each attached device's binds equal to its PASID entries. */
export class VtdPasidBinder {
  /** Counters, readable at any time. */
  readonly telemetry: VtdBinderTelemetry = { binds: 0, unbinds: 0, ridBinds: 0, badEntries: [] };
  readonly #devices = new Map<number, VtdBinderDevice>();
  /** Per device (rid): PASID → the domain it is bound in. */
  readonly #bound = new Map<number, Map<number, number>>();

  /** A binder reading PASID tables from `memory`; `ridPasids` says which PASID is each device's RID_PASID, `tableFor` what host table an entry becomes. */
  constructor(
    readonly memory: GuestMemory,
    readonly ridPasids: VtdRidPasidMap = VTD_RID_PASID_ZERO,
    readonly tableFor: VtdTableFor = vtdPasidEntryAnyTable,
  ) {}

  /** A device whose context entry the guest made present (or changed). */
  attach(device: VtdBinderDevice): void {
    this.#devices.set(device.rid, device);
    if (!this.#bound.has(device.rid)) this.#bound.set(device.rid, new Map());
  }

  /** The device's context entry went away: everything it had bound is unbound. */
  detach(rid: number): void {
    for (const [pasid, did] of [...(this.#bound.get(rid) ?? [])]) this.#unbind(rid, pasid, did);
    this.#devices.delete(rid);
    this.#bound.delete(rid);
  }

  /** The queue model's `configChanged` hook. */
  configChanged(d: VtdDescriptor & { type: "pasid-cache" | "context-cache" }): void {
    if (d.type === "context-cache") {
      // A device's context (its PASID directory, its RID_PASID) changed: everything it had bound is read again.
      for (const rid of this.#devices.keys()) {
        if (d.granularity !== "device" || rid === d.sid) this.#rereadDevice(rid, undefined);
      }
      return;
    }
    if (d.granularity === "pasid") {
      for (const rid of this.#devices.keys()) this.refresh(rid, d.pasid, d.did);
    } else {
      for (const rid of this.#devices.keys()) this.#rereadDevice(rid, d.granularity === "domain" ? d.did : undefined);
    }
  }

  /** Read the PASIDs device `rid` has bound (those in domain `did`, when given) again. */
  #rereadDevice(rid: number, did: number | undefined): void {
    for (const [pasid, boundDid] of [...(this.#bound.get(rid) ?? [])]) {
      if (did === undefined || boundDid === did) this.refresh(rid, pasid, undefined);
    }
  }

  /**
   * Read device `rid`'s entry at `pasid` and bind or unbind. `did` (a PASID-selective invalidation's domain) limits it
   * to an entry of that domain, or one the device has bound in that domain.
   */
  refresh(rid: number, pasid: number, did: number | undefined): void {
    const device = this.#devices.get(rid);
    const bound = this.#bound.get(rid);
    if (!device || !bound) return;
    const boundDid = bound.get(pasid);
    let entry: VtdPasidEntry;
    try {
      entry = lookupVtdPasidEntry(this.memory, device.pasidDirectory, pasid);
    } catch (e) {
      this.#bad(rid, pasid, (e as Error).message);
      if (boundDid !== undefined) this.#unbind(rid, pasid, boundDid);
      return;
    }
    if (!entry.present) {
      if (boundDid !== undefined && (did === undefined || did === boundDid)) this.#unbind(rid, pasid, boundDid);
      return;
    }
    if (did !== undefined && entry.did !== did && boundDid !== did) return; // another domain's entry: not this one
    const table = this.tableFor(entry);
    if (!table) {
      this.#bad(rid, pasid, `${entry.translation} entries are not relayed`);
      if (boundDid !== undefined) this.#unbind(rid, pasid, boundDid);
      return;
    }
    if (boundDid !== undefined && boundDid !== entry.did) this.#unbind(rid, pasid, boundDid);
    const key = vtdBindingKey(this.ridPasids, rid, pasid);
    try {
      device.sink.submit({ op: "bind", domain: entry.did, pasid: key, table });
    } catch (e) {
      this.#bad(rid, pasid, `bind refused: ${(e as Error).message}`);
      if (bound.has(pasid)) this.#unbind(rid, pasid, entry.did);
      return;
    }
    bound.set(pasid, entry.did);
    this.telemetry.binds++;
    if (key === "rid") this.telemetry.ridBinds++;
  }

  #unbind(rid: number, pasid: number, did: number): void {
    const device = this.#devices.get(rid);
    this.#bound.get(rid)?.delete(pasid);
    if (!device) return;
    const key: PasidOrRid = vtdBindingKey(this.ridPasids, rid, pasid);
    try {
      device.sink.submit({ op: "unbind", domain: did, pasid: key });
      this.telemetry.unbinds++;
    } catch (e) {
      this.#bad(rid, pasid, `unbind refused: ${(e as Error).message}`);
    }
  }

  #bad(rid: number, pasid: number, why: string): void {
    const list = this.telemetry.badEntries;
    list.push(`device 0x${rid.toString(16)} PASID ${pasid}: ${why}`);
    if (list.length > 64) list.shift();
  }
}
