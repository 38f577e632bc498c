/**
 * The device layer's part of a relay snapshot (docs/snapshot.md): what the guest made of its vIOMMU — each
 * assigned device's key, guest domain, mode, virtual id (the vDEVICE id the guest sees: its StreamID or RID) and
 * ATS, and every stage-1 table bound at its RID and PASIDs — as plain JSON, and its restore on a fresh host.
 *
 * Host object ids (nesting parents, nested HWPTs, vIOMMUs, vDEVICE objects) are not guest-visible and not in it: a
 * restore allocates new ones. A restore builds everything first — devices assigned in the snapshot's order, the RID
 * bound before the PASIDs — and hands the new {@linkcode GuestIommu} over only when every step succeeded; a failed
 * step disposes what was built (in reverse) and throws a {@linkcode RestoreError} naming the step. A snapshot's JSON
 * is hostile input: {@linkcode decodeGuestIommuState} checks every field and throws a {@linkcode SnapshotError}.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { ModelHost } from "../host/model.ts";
 * import { ModelDeviceHost } from "../host/model_device_host.ts";
 * import { GuestIommu } from "./assigned.ts";
 * import { decodeGuestIommuState, encodeGuestIommuState, restoreGuestIommu } from "./snapshot.ts";
 * const old = new ModelDeviceHost(new ModelHost());
 * using before = new GuestIommu(old);
 * before.assign(old.port(), { domain: 1, key: "00:03.0" }).bind(5, { format: "selftest", iotlb: 9 });
 * const json = JSON.stringify(encodeGuestIommuState(before.state()));
 * const fresh = new ModelDeviceHost(new ModelHost());
 * using after = restoreGuestIommu(fresh, decodeGuestIommuState(JSON.parse(json)), () => fresh.port());
 * assert.equal(after.devices[0].key, "00:03.0");
 * assert.deepEqual(fresh.model.iotlb(after.devices[0].boundTo(5)!), [9, 9, 9, 9]);
 * ```
 *
 * @module
 */
import type { Format } from "../compile/formats.ts";
import type { DevicePort } from "../host/device_host.ts";
import type { DeviceHost } from "../host/device_host.ts";
import {
  type PasidOrRid,
  RequestError,
  type StageOneTable,
  validateRequest,
  type VtdStageOne,
} from "../request/request.ts";
import { FORMAT_SPECS } from "../compile/formats.ts";
import { GuestIommu, type GuestIommuOptions } from "./assigned.ts";

/** Why a snapshot was refused. */
export type SnapshotErrorReason =
  | "busy"
  | "bad-magic"
  | "truncated"
  | "newer-version"
  | "unknown-version"
  | "checksum"
  | "malformed";

/**
 * A snapshot that cannot be taken (`busy`: the relay has work in flight) or read: not a snapshot, cut short, of a
 * newer (or unknown) version, a checksum that does not match, or a field that is not what the format says
 * (`path` names it). Nothing was restored when it is thrown.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { decodeGuestIommuState, SnapshotError } from "./snapshot.ts";
 * assert.throws(
 *   () => decodeGuestIommuState({ devices: [{ key: "a", mode: "nested", bound: [], ats: false, domain: -1 }] }),
 *   (e) => e instanceof SnapshotError && e.reason === "malformed" && e.path === "devices[0].domain",
 * );
 * ```
 */
export class SnapshotError extends Error {
  /** Always `"SnapshotError"`. */
  override name = "SnapshotError";
  /** `path` is the offending field (`""` for the snapshot as a whole). */
  constructor(readonly reason: SnapshotErrorReason, detail: string, readonly path: string = "") {
    super(`snapshot ${reason}${path ? ` at ${path}` : ""}: ${detail}`);
  }
}

/**
 * A restore step failed: what was built so far was disposed (in reverse), nothing of the snapshot is live. `step`
 * says which (`assign` a device, `bind` a table, `frontend` a queue's registers), `device` whose, `cause` why.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { RestoreError } from "./snapshot.ts";
 * const e = new RestoreError("bind", "00:03.0", new Error("EBUSY"), 5);
 * assert.match(e.message, /bind of 00:03.0 PASID 5/);
 * ```
 */
export class RestoreError extends Error {
  /** Always `"RestoreError"`. */
  override name = "RestoreError";
  /** `pasid` is the table's PASID for a `bind` step. */
  constructor(
    readonly step: "assign" | "bind" | "frontend",
    readonly device: string,
    override readonly cause: unknown,
    readonly pasid?: PasidOrRid,
  ) {
    super(
      `restore failed at ${step} of ${device}${pasid === undefined ? "" : ` PASID ${pasid}`}: ${
        (cause as Error)?.message ?? String(cause)
      } (everything restored so far was released)`,
    );
  }
}

/** One assigned device, as the guest made it. */
export interface DeviceState {
  /** The VMM's stable name for the device (`AssignOptions.key`): what a restore asks a new port for. */
  readonly key: string;
  /** Its guest domain. */
  readonly domain: number;
  /** Nested or shadowed. */
  readonly mode: "nested" | "shadow";
  /** Its guest-visible id on the vIOMMU (vDEVICE), in vIOMMU mode. */
  readonly virtId?: number;
  /** ATS enabled. */
  readonly ats: boolean;
  /** Tables bound: the RID first, then PASIDs ascending. */
  readonly bound: readonly { readonly pasid: PasidOrRid; readonly table: StageOneTable }[];
}

/** The device layer of one guest vIOMMU. */
export interface GuestIommuState {
  /** vIOMMU mode (type and invalidation format), when the guest IOMMU has one. */
  readonly viommu?: { readonly type: number; readonly format: Format };
  /** Devices in assignment order. */
  readonly devices: readonly DeviceState[];
}

/** {@linkcode GuestIommuState} as JSON: bigints (SMMUv3 STE words) as `0x` hex strings. */
export type GuestIommuStateJson = Record<string, unknown>;

/** The JSON form of a device layer's state (bigints as hex strings). */
export function encodeGuestIommuState(state: GuestIommuState): GuestIommuStateJson {
  return JSON.parse(JSON.stringify(state, (_, v) => (typeof v === "bigint" ? `0x${v.toString(16)}` : v)));
}

/** Read and check the JSON form; every field is checked (hostile input), any other is a `SnapshotError`. */
export function decodeGuestIommuState(json: unknown): GuestIommuState {
  const root = object(json, "");
  let viommu: GuestIommuState["viommu"];
  if (root.viommu !== undefined) {
    const v = object(root.viommu, "viommu");
    viommu = { type: u32(v.type, "viommu.type"), format: format(v.format, "viommu.format") };
  }
  const list = array(root.devices, "devices");
  const keys = new Set<string>(), virtIds = new Set<number>();
  const devices = list.map((d, i): DeviceState => {
    const at = `devices[${i}]`;
    const o = object(d, at);
    const key = string(o.key, `${at}.key`);
    if (keys.has(key)) throw new SnapshotError("malformed", `device key ${key} appears twice`, `${at}.key`);
    keys.add(key);
    const mode = o.mode === "nested" || o.mode === "shadow" ? o.mode : malformed(`${at}.mode`, "nested or shadow");
    const domain = u32(o.domain, `${at}.domain`);
    const bound = array(o.bound, `${at}.bound`).map((b, j) => {
      const bat = `${at}.bound[${j}]`;
      const e = object(b, bat);
      const pasid = e.pasid === "rid" ? "rid" as const : u32(e.pasid, `${bat}.pasid`);
      const t = table(e.table, `${bat}.table`);
      // The request layer's own checks of a bind (PASID range, table alignment, ASID width), here: a bind the guest
      // could never have made is a malformed snapshot before anything is built, not a rollback half-way.
      try {
        validateRequest({ op: "bind", domain, pasid, table: t });
      } catch (err) {
        if (!(err instanceof RequestError)) throw err;
        throw new SnapshotError("malformed", err.message, bat);
      }
      return { pasid, table: t };
    });
    const seen = new Set<PasidOrRid>();
    for (const [j, b] of bound.entries()) {
      if (seen.has(b.pasid)) throw new SnapshotError("malformed", `PASID ${b.pasid} bound twice`, `${at}.bound[${j}]`);
      seen.add(b.pasid);
    }
    const virtId = o.virtId === undefined ? undefined : u32(o.virtId, `${at}.virtId`);
    if (virtId !== undefined) {
      if (virtIds.has(virtId)) {
        throw new SnapshotError("malformed", `virtual id ${virtId} appears twice`, `${at}.virtId`);
      }
      virtIds.add(virtId);
    }
    return {
      key,
      domain,
      mode,
      ...(virtId !== undefined ? { virtId } : {}),
      ats: boolean(o.ats, `${at}.ats`),
      bound,
    };
  });
  return { ...(viommu ? { viommu } : {}), devices };
}

/** What a restore needs besides the state: how to make the guest IOMMU (its queue, shadow RAM). */
export type RestoreOptions = Omit<GuestIommuOptions, "viommu">;

/**
 * Build a {@linkcode GuestIommu} equal to `state` on `host`: each device assigned on the port `portFor` gives for
 * its key (the port is owned by the restore from then on), then its tables bound — new nested tables, attached —
 * RID first. Committed only when every step succeeded; otherwise everything built is disposed and a
 * {@linkcode RestoreError} thrown.
 */
export function restoreGuestIommu(
  host: DeviceHost,
  state: GuestIommuState,
  portFor: (device: DeviceState) => DevicePort,
  options: RestoreOptions = {},
): GuestIommu {
  const guest = new GuestIommu(host, { ...options, ...(state.viommu ? { viommu: state.viommu } : {}) });
  try {
    for (const d of state.devices) {
      let device;
      try {
        device = guest.assign(portFor(d), {
          domain: d.domain,
          mode: d.mode,
          ats: d.ats,
          key: d.key,
          ...(d.virtId !== undefined ? { virtId: d.virtId } : {}),
        });
      } catch (e) {
        throw new RestoreError("assign", d.key, e);
      }
      for (const b of d.bound) {
        try {
          device.bind(b.pasid, b.table);
        } catch (e) {
          throw new RestoreError("bind", d.key, e, b.pasid);
        }
      }
    }
    // Binding is a barrier on the queue (and SMMUv3 PASIDs send CFGI_CD): nothing of it may be left for the VMM.
    guest.queue.drain();
    return guest;
  } catch (e) {
    try {
      guest[Symbol.dispose]();
    } catch {
      // The rollback's own failures are secondary: the RestoreError says what went wrong first.
    }
    throw e;
  }
}

/**
 * Field checks for a snapshot's JSON (hostile input): each returns the value typed, or throws a
 * {@linkcode SnapshotError} ("malformed") naming the field's path.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { SnapshotError, SnapshotFields } from "./snapshot.ts";
 * assert.equal(SnapshotFields.u32(7, "x"), 7);
 * assert.equal(SnapshotFields.u64("0x4000000000000000", "base"), 1n << 62n);
 * assert.throws(() => SnapshotFields.u32(-1, "queue.prod"), (e) => e instanceof SnapshotError && e.path === "queue.prod");
 * ```
 */
export const SnapshotFields = {
  /** A JSON object. */
  object: (v: unknown, path: string): Record<string, unknown> => object(v, path),
  /** A JSON array of at most 65,536 entries. */
  array: (v: unknown, path: string): unknown[] => array(v, path),
  /** An integer in [0, 2^32). */
  u32: (v: unknown, path: string): number => u32(v, path),
  /** A non-negative safe integer. */
  uint: (v: unknown, path: string): number => safeAddress(v, path),
  /** A boolean. */
  boolean: (v: unknown, path: string): boolean => boolean(v, path),
  /** A string of 1 to 256 characters. */
  string: (v: unknown, path: string): string => string(v, path),
  /** A 64-bit value written as a `0x` hex string. */
  u64: (v: unknown, path: string): bigint => u64(v, path),
  /** Throw the "malformed" error for `path`, expecting `what`. */
  malformed: (path: string, what: string): never => malformed(path, what),
} as const;

function malformed(path: string, what: string): never {
  throw new SnapshotError("malformed", `expected ${what}`, path);
}

function object(v: unknown, path: string): Record<string, unknown> {
  if (typeof v !== "object" || v === null || Array.isArray(v)) malformed(path, "an object");
  return v as Record<string, unknown>;
}

function array(v: unknown, path: string): unknown[] {
  if (!Array.isArray(v)) malformed(path, "an array");
  if (v.length > 65_536) malformed(path, "at most 65,536 entries");
  return v;
}

function u32(v: unknown, path: string): number {
  if (typeof v !== "number" || !Number.isInteger(v) || v < 0 || v > 0xffff_ffff) malformed(path, "a u32");
  return v;
}

function boolean(v: unknown, path: string): boolean {
  if (typeof v !== "boolean") malformed(path, "a boolean");
  return v;
}

function string(v: unknown, path: string): string {
  if (typeof v !== "string" || v.length === 0 || v.length > 256) malformed(path, "a string of 1 to 256 characters");
  return v;
}

function format(v: unknown, path: string): Format {
  if (typeof v !== "string" || !Object.hasOwn(FORMAT_SPECS, v)) malformed(path, "a host format");
  return v as Format;
}

function u64(v: unknown, path: string): bigint {
  if (typeof v !== "string" || !/^0x[0-9a-f]{1,16}$/.test(v)) malformed(path, "a 64-bit value as a 0x hex string");
  return BigInt(v);
}

function safeAddress(v: unknown, path: string): number {
  if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 0) malformed(path, "a guest-physical address");
  return v;
}

function width(v: unknown, path: string): 48 | 57 {
  if (v !== 48 && v !== 57) malformed(path, "48 or 57");
  return v;
}

function flag(v: unknown, path: string): boolean | undefined {
  return v === undefined ? undefined : boolean(v, path);
}

/** A stage-1 table's JSON form; the request layer validates its values again at the bind. */
function table(v: unknown, path: string): StageOneTable {
  const t = object(v, path);
  switch (t.format) {
    case "selftest":
      return { format: "selftest", iotlb: u32(t.iotlb, `${path}.iotlb`) };
    case "vtd-s1": {
      const out: { -readonly [K in keyof VtdStageOne]: VtdStageOne[K] } = {
        format: "vtd-s1",
        tableAddress: safeAddress(t.tableAddress, `${path}.tableAddress`),
        addressWidth: width(t.addressWidth, `${path}.addressWidth`),
      };
      for (const f of ["sre", "eafe", "wpe"] as const) {
        const b = flag(t[f], `${path}.${f}`);
        if (b !== undefined) out[f] = b;
      }
      return out;
    }
    case "vtd-sl":
      return {
        format: "vtd-sl",
        tableAddress: safeAddress(t.tableAddress, `${path}.tableAddress`),
        addressWidth: width(t.addressWidth, `${path}.addressWidth`),
      };
    case "smmuv3": {
      const ste = array(t.ste, `${path}.ste`);
      if (ste.length !== 2) malformed(`${path}.ste`, "two STE words");
      return {
        format: "smmuv3",
        ste: [u64(ste[0], `${path}.ste[0]`), u64(ste[1], `${path}.ste[1]`)],
        asid: u32(t.asid, `${path}.asid`),
      };
    }
    default:
      return malformed(`${path}.format`, "selftest, vtd-s1, vtd-sl or smmuv3");
  }
}
