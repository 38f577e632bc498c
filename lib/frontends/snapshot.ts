/**
 * Saving and restoring a relay (docs/snapshot.md): one guest vIOMMU's device layer (devices, virtual ids, bound
 * tables) and the guest-visible state of its front ends (VT-d invalidation and page request queues, SMMUv3 command,
 * event and PRI queues: registers, queue positions, page-request groups and their deadlines) in one versioned,
 * checksummed byte string, restored in another process against a fresh host.
 *
 * Layout (all integers little-endian): bytes 0-7 the magic `IOMMURLY`, 8-11 the format version (u32, now 1), 12-15
 * the body's length in bytes (u32), 16-19 the CRC-32 (IEEE 802.3, as zlib's `crc32`) of the body, then the body:
 * UTF-8 JSON `{ "guest": …, "frontends": { "vtdQueue"?, "vtdPrq"?, "vtdFaults"?, "smmuCmdq"?, "smmuEvtq"?, "smmuPriq"? } }`.
 *
 * Taking one: the relay must be quiet (nothing queued or unreported: between doorbells, after a drain — a
 * `SnapshotError` "busy" otherwise), then every page request the guest has not answered is answered to the old host
 * (its cookies die with it) and carried, with what is left of its deadline, so the guest's later answer is taken.
 * Restoring one: every check first (magic, version, length, checksum, each field), then the device layer is built
 * on the new host (new nested tables, attached), then the front ends' registers are set — nothing of it is handed
 * over unless all of it succeeded; a failure disposes what was built and throws.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { ModelHost } from "../host/model.ts";
 * import { ModelDeviceHost } from "../host/model_device_host.ts";
 * import { GuestIommu } from "../device/assigned.ts";
 * import { restoreRelay, snapshotRelay } from "./snapshot.ts";
 * import { VtdInvalidationQueue } from "./vtd/queue.ts";
 * const ram = new Uint8Array(1 << 16);
 * const memory = { read: (a: number, n: number) => ram.slice(a, a + n), write: (a: number, b: Uint8Array) => ram.set(b, a) };
 * const old = new ModelDeviceHost(new ModelHost());
 * using guest = new GuestIommu(old);
 * guest.assign(old.port(), { domain: 1, key: "nic" }).bind(5, { format: "vtd-s1", tableAddress: 0x3000, addressWidth: 48 });
 * const qi = new VtdInvalidationQueue(memory, guest.queue);
 * qi.writeIqa(0x1000);
 * const bytes = snapshotRelay(guest, { vtdQueue: qi });
 * const fresh = new ModelDeviceHost(new ModelHost());
 * const qi2 = new VtdInvalidationQueue(memory, { submit: () => 0, drain: () => ({ ioctls: 0, entries: 0, invalidations: 0, unrouted: 0, failures: [], waits: [] }) });
 * using restored = restoreRelay(bytes, fresh, () => fresh.port(), { vtdQueue: qi2 });
 * assert.equal(qi2.base, 0x1000);
 * assert.equal(restored.devices[0].key, "nic");
 * ```
 *
 * @module
 */
import type { DeviceHost, DevicePort } from "../host/device_host.ts";
import type { GuestIommu } from "../device/assigned.ts";
import {
  decodeGuestIommuState,
  type DeviceState,
  encodeGuestIommuState,
  type GuestIommuState,
  RestoreError,
  restoreGuestIommu,
  type RestoreOptions,
  SnapshotError,
  SnapshotFields as F,
} from "../device/snapshot.ts";
import { HOST_RESPONSE } from "./page_requests.ts";
import type { VtdInvalidationQueue } from "./vtd/queue.ts";
import type { VtdPageRequestQueue } from "./vtd/prq.ts";
import type { VtdFaultRecorder } from "./vtd/faults.ts";
import type { SmmuCommandQueue } from "./smmuv3/cmdq.ts";
import type { SmmuEventQueue } from "./smmuv3/evtq.ts";
import type { SmmuPriQueue } from "./smmuv3/priq.ts";

/** The format version this library writes; a snapshot with a higher one is refused ("newer-version"). */
export const SNAPSHOT_VERSION = 1;
/** The 8 bytes a snapshot starts with. */
export const SNAPSHOT_MAGIC = "IOMMURLY";
const HEADER = 20;
/** Bodies above this are refused before parsing (a snapshot of 65,536 devices fits easily). */
const MAX_BODY = 64 << 20;

/** The front ends of one guest vIOMMU whose state a snapshot carries (any subset). */
export interface RelayFrontends {
  /** The VT-d invalidation queue. */
  readonly vtdQueue?: VtdInvalidationQueue;
  /** The VT-d page request queue. */
  readonly vtdPrq?: VtdPageRequestQueue;
  /** The VT-d unit's fault recording registers. */
  readonly vtdFaults?: VtdFaultRecorder;
  /** The SMMUv3 command queue. */
  readonly smmuCmdq?: SmmuCommandQueue;
  /** The SMMUv3 event queue. */
  readonly smmuEvtq?: SmmuEventQueue;
  /** The SMMUv3 PRI queue. */
  readonly smmuPriq?: SmmuPriQueue;
}

const FRONTEND_NAMES = ["vtdQueue", "vtdPrq", "vtdFaults", "smmuCmdq", "smmuEvtq", "smmuPriq"] as const;

/** A decoded snapshot: the device layer's state and each front end's JSON state (checked again at restore). */
export interface RelaySnapshot {
  /** The format version it was written in. */
  readonly version: number;
  /** The device layer. */
  readonly guest: GuestIommuState;
  /** Front-end states by name, as JSON. */
  readonly frontends: Readonly<Partial<Record<keyof RelayFrontends, unknown>>>;
}

/** Options of {@linkcode snapshotRelay}. */
export interface SnapshotOptions {
  /**
   * What the old host is told for page requests the guest has not answered (default SUCCESS: the device retries, and
   * faults again, on the new host, if the page is still not there). INVALID makes the device give up instead.
   */
  readonly pageResponse?: number;
}

/**
 * Take a snapshot of `guest` and its front ends. Throws a `SnapshotError` ("busy") while the relay holds anything
 * queued or unreported — before anything is answered. Then answers pending page requests to the old host and
 * returns the bytes (header, checksum, body).
 */
export function snapshotRelay(
  guest: GuestIommu,
  frontends: RelayFrontends = {},
  options: SnapshotOptions = {},
): Uint8Array {
  const state = guest.state(); // "busy" before any page request is answered
  const code = options.pageResponse ?? HOST_RESPONSE.SUCCESS;
  frontends.vtdPrq?.quiesce(code);
  frontends.smmuPriq?.quiesce(code);
  frontends.smmuEvtq?.quiesce(code);
  const body: Record<string, unknown> = {};
  if (frontends.vtdQueue) body.vtdQueue = frontends.vtdQueue.saveState();
  if (frontends.vtdPrq) body.vtdPrq = frontends.vtdPrq.saveState();
  if (frontends.vtdFaults) body.vtdFaults = frontends.vtdFaults.saveState();
  if (frontends.smmuCmdq) body.smmuCmdq = frontends.smmuCmdq.saveState();
  if (frontends.smmuEvtq) body.smmuEvtq = frontends.smmuEvtq.saveState();
  if (frontends.smmuPriq) body.smmuPriq = frontends.smmuPriq.saveState();
  return encodeRelaySnapshot({ guest: encodeGuestIommuState(state), frontends: body });
}

/**
 * Frame a snapshot body (`{ guest, frontends }` as JSON values) with the header: magic, `version`, length and the
 * body's CRC-32. `version` is for tests of the refusal of other versions.
 */
export function encodeRelaySnapshot(body: unknown, version: number = SNAPSHOT_VERSION): Uint8Array {
  const json = new TextEncoder().encode(JSON.stringify(body));
  const out = new Uint8Array(HEADER + json.length);
  out.set(new TextEncoder().encode(SNAPSHOT_MAGIC), 0);
  const v = new DataView(out.buffer);
  v.setUint32(8, version, true);
  v.setUint32(12, json.length, true);
  v.setUint32(16, crc32(json), true);
  out.set(json, HEADER);
  return out;
}

/** Read and check a snapshot: header, version, length, checksum, then every field. Throws a `SnapshotError`. */
export function decodeRelaySnapshot(bytes: Uint8Array): RelaySnapshot {
  if (bytes.length < HEADER) throw new SnapshotError("truncated", `${bytes.length} bytes, the header alone is 20`);
  if (new TextDecoder().decode(bytes.subarray(0, 8)) !== SNAPSHOT_MAGIC) {
    throw new SnapshotError("bad-magic", `not an iommu-relay snapshot (no ${SNAPSHOT_MAGIC} header)`);
  }
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const version = v.getUint32(8, true), length = v.getUint32(12, true), crc = v.getUint32(16, true);
  if (version > SNAPSHOT_VERSION) {
    throw new SnapshotError("newer-version", `version ${version}; this library reads up to ${SNAPSHOT_VERSION}`);
  }
  if (version !== SNAPSHOT_VERSION) throw new SnapshotError("unknown-version", `version ${version}`);
  if (length > MAX_BODY) throw new SnapshotError("malformed", `a ${length}-byte body is beyond the 64 MiB limit`);
  if (bytes.length !== HEADER + length) {
    throw new SnapshotError(
      bytes.length < HEADER + length ? "truncated" : "malformed",
      `the header says ${length} body bytes, ${bytes.length - HEADER} follow`,
    );
  }
  const body = bytes.subarray(HEADER);
  const actual = crc32(body);
  if (actual !== crc) {
    throw new SnapshotError(
      "checksum",
      `CRC-32 0x${actual.toString(16)} does not match the header's 0x${crc.toString(16)}`,
    );
  }
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(body));
  } catch (e) {
    throw new SnapshotError("malformed", `the body is not UTF-8 JSON: ${(e as Error).message}`);
  }
  const root = F.object(json, "");
  const fronts = F.object(root.frontends, "frontends");
  for (const name of Object.keys(fronts)) {
    if (!(FRONTEND_NAMES as readonly string[]).includes(name)) F.malformed(`frontends.${name}`, "a known front end");
  }
  return { version, guest: decodeGuestIommuState(root.guest), frontends: fronts };
}

/**
 * Restore a snapshot on a fresh `host`: every check first; each front end in `frontends` must match the snapshot's
 * (same set) and its state must fit it; then the device layer is built (`portFor` gives each device's new port by
 * its snapshot entry), then the front ends' registers are set. Returns the new {@linkcode GuestIommu} only when all
 * of it succeeded; a `SnapshotError` (bad bytes) or `RestoreError` (a step failed: everything built was released)
 * otherwise — the front ends are then unchanged.
 */
export function restoreRelay(
  bytes: Uint8Array,
  host: DeviceHost,
  portFor: (device: DeviceState) => DevicePort,
  frontends: RelayFrontends = {},
  options: RestoreOptions = {},
): GuestIommu {
  const snapshot = decodeRelaySnapshot(bytes);
  const commits: (() => void)[] = [];
  for (const name of FRONTEND_NAMES) {
    const state = snapshot.frontends[name], target = frontends[name];
    if ((state === undefined) !== (target === undefined)) {
      throw new RestoreError(
        "frontend",
        name,
        new Error(state === undefined ? "the snapshot has no state for it" : "no such front end was given"),
      );
    }
    if (target) commits.push(target.prepareRestore(state, `frontends.${name}`));
  }
  const guest = restoreGuestIommu(host, snapshot.guest, portFor, options);
  for (const commit of commits) commit(); // checked above: assignments only
  return guest;
}

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

/**
 * CRC-32 (IEEE 802.3, reflected, as zlib's `crc32`) of `bytes`: the snapshot's checksum. It detects corruption,
 * not tampering: a snapshot is as trusted as whoever stored it, and every field is checked anyway.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { crc32 } from "./snapshot.ts";
 * assert.equal(crc32(new TextEncoder().encode("123456789")), 0xcbf43926);
 * ```
 */
export function crc32(bytes: Uint8Array): number {
  let c = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) c = CRC_TABLE[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}
