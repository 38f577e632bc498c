/**
 * The broker's wire protocol over a Unix socket — privilege separation with the 2017 format given a real job.
 *
 * Every frame is a 16-byte little-endian header `{version u8 = 1, op u8, reserved u16 = 0, length u32, device u32,
 * request u32}` and `length` bytes of payload (at most {@linkcode MAX_PAYLOAD}). Requests:
 *
 * | op | payload | answer payload |
 * |---|---|---|
 * | ATTACH 1 | `domain u32, kind u32` (0 in-process model, 1 selftest mock) | `device u32` |
 * | INVALIDATE 2 | a 2017 `vfio_iommu_tlb_invalidate` record (32 or 48 bytes, little-endian tail) | `seq u32` |
 * | BIND 3 | a 2017 `vfio_device_svm` + `VFIO_SVM_BIND_PGTABLE` record | — |
 * | UNBIND 4 | `pasid u32` (0xffffffff: the RID) | — |
 * | SYNC 5 | — | `ok u32, firstFailedRequest u32, failures u32, hostIoctls u32, firstErrno u32` |
 * | DETACH 6 | — | — |
 * | OPEN 7 | a device name (UTF-8, 1..64 bytes) the broker was started with | `device u32, domain u32` |
 * | MAP_MEMORY 8 | `token [16], iova u64` (device 0): map the memfd sent with `token` on the memfd socket | `iova u64, length u64` |
 *
 * MAP_MEMORY is guest RAM by file: Deno's sockets cannot carry a file descriptor, so the client first sends its memfd
 * over the broker's memfd socket (a Unix SOCK_SEQPACKET socket at a path ending `.memfd.sock`; the shim does the
 * SCM_RIGHTS on both sides and passes nothing but memfds) with a random 16-byte token beside it, then asks for the
 * mapping by token here. The broker maps it into its guest-RAM IOAS with `IOMMU_IOAS_MAP_FILE` at `iova` and unmaps
 * it when the connection closes. A token nobody sent is ENOENT; a broker without a memfd socket answers EOPNOTSUPP.
 *
 * Answers carry `op | 0x80` and the request id; an error is op 0xff with `errno u32` and a UTF-8 message.
 * SYNC reports every outcome of the connection's own invalidations since its previous SYNC, on all its devices,
 * whoever's action sent them; UNBIND of a PASID that is not bound is ENOENT. A connection may ATTACH only in guest
 * domains its listener serves and no other connection (nor a named device) is in (EACCES, EBUSY). The broker's caps
 * answer with their own errnos ({@linkcode BrokerErrno}): connections, devices per connection, invalidations
 * pending per connection; a connection that sends no frame in time, or does not read its answers, is closed.
 * ATTACH makes a device the connection owns (released when it closes); OPEN takes a handle on a named device the
 * broker owns (`serve --device`), which outlives the connection, so one-shot tools can bind, invalidate and unbind
 * across processes; DETACH of an opened handle only drops the handle. A frame
 * whose length is over the limit is answered with E2BIG and the connection is closed (its framing can no longer be
 * trusted); a malformed payload is answered with EINVAL and the connection goes on.
 *
 * @module
 */

export const PROTOCOL_VERSION = 1;
/** Bytes of a frame header: op, device handle, request id and payload length, four little-endian u32s. */
export const HEADER_BYTES = 16;
/** The largest payload a frame may carry; a longer one is a framing error that closes the connection. */
export const MAX_PAYLOAD = 4096;
/** Frame operations (the header's `op`). */
export const BrokerOp = {
  ATTACH: 1,
  INVALIDATE: 2,
  BIND: 3,
  UNBIND: 4,
  SYNC: 5,
  DETACH: 6,
  OPEN: 7,
  MAP_MEMORY: 8,
  ERROR: 0xff,
} as const;

/** The errnos of the broker's own refusals (the host's errors pass through with theirs). */
export const BrokerErrno = {
  /** OPEN of a name this listener does not serve; DETACH / any op on a handle this connection does not hold. */
  ENOENT: 2,
  /** A payload over {@linkcode MAX_PAYLOAD}: the connection is closed. */
  E2BIG: 7,
  /** ATTACH in a guest domain this listener does not serve; MAP_MEMORY on a listener not serving the whole broker. */
  EACCES: 13,
  /** ATTACH in a guest domain another connection or a named device is in; MAP_MEMORY while another holds guest RAM. */
  EBUSY: 16,
  /** A malformed frame or payload. */
  EINVAL: 22,
  /** MAP_MEMORY on a broker without a memfd socket (or without a kernel host). */
  EOPNOTSUPP: 95,
  /** Cap: devices (attached and opened) per connection. */
  ENOSPC: 28,
  /** Cap: guest RAM mappings (MAP_MEMORY) per connection, each holding a memfd open in the broker. */
  EMFILE: 24,
  /** Cap: connections (sent once, request 0, then the connection is closed). */
  EUSERS: 87,
  /** Cap: invalidations per connection not yet reported by a SYNC. */
  ENOBUFS: 105,
  /** No frame in time after connecting, or the connection stopped reading its answers: closed after this. */
  ETIMEDOUT: 110,
} as const;

/** A frame. */
export interface Frame {
  /** The operation (`BrokerOp`). */
  readonly op: number;
  /** The device handle the operation is for (0 before one is attached or opened). */
  readonly device: number;
  /** The client's request id, echoed in the answer. */
  readonly request: number;
  /** The operation's payload (at most `MAX_PAYLOAD` bytes). */
  readonly payload: Uint8Array;
}

/**
 * Encode a frame.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { BrokerOp, encodeFrame, takeFrames, u32s } from "./protocol.ts";
 * const bytes = encodeFrame({ op: BrokerOp.ATTACH, device: 0, request: 7, payload: u32s(1, 0) });
 * const { frames, rest } = takeFrames(bytes);
 * assert.deepEqual([frames[0].op, frames[0].request, frames[0].payload.byteLength, rest.byteLength], [1, 7, 8, 0]);
 * ```
 */
export function encodeFrame(f: Frame): Uint8Array {
  const b = new Uint8Array(HEADER_BYTES + f.payload.byteLength);
  const v = new DataView(b.buffer);
  v.setUint8(0, PROTOCOL_VERSION);
  v.setUint8(1, f.op);
  v.setUint32(4, f.payload.byteLength, true);
  v.setUint32(8, f.device, true);
  v.setUint32(12, f.request, true);
  b.set(f.payload, HEADER_BYTES);
  return b;
}

/** Why a frame could not be taken. */
export class FrameError extends Error {
  /** Always `FrameError`. */
  override name = "FrameError";
  /** A frame refused with `errno`; `fatal` when the connection cannot continue after it. */
  constructor(readonly errno: number, message: string, readonly fatal: boolean) {
    super(message);
  }
}

/**
 * Split complete frames off the front of `buffered`. Returns the frames and the bytes left over (a partial frame).
 * Throws a fatal {@linkcode FrameError} for a header that cannot be trusted.
 */
export function takeFrames(buffered: Uint8Array): { frames: Frame[]; rest: Uint8Array } {
  const frames: Frame[] = [];
  let at = 0;
  while (buffered.byteLength - at >= HEADER_BYTES) {
    const v = new DataView(buffered.buffer, buffered.byteOffset + at, HEADER_BYTES);
    if (v.getUint8(0) !== PROTOCOL_VERSION || v.getUint16(2, true) !== 0) {
      throw new FrameError(22, `bad frame header (version ${v.getUint8(0)})`, true);
    }
    const length = v.getUint32(4, true);
    if (length > MAX_PAYLOAD) {
      throw new FrameError(7, `payload of ${length} bytes is over the ${MAX_PAYLOAD}-byte limit`, true);
    }
    if (buffered.byteLength - at < HEADER_BYTES + length) break;
    frames.push({
      op: v.getUint8(1),
      device: v.getUint32(8, true),
      request: v.getUint32(12, true),
      payload: buffered.slice(at + HEADER_BYTES, at + HEADER_BYTES + length),
    });
    at += HEADER_BYTES + length;
  }
  return { frames, rest: buffered.slice(at) };
}

/** An error frame's payload. */
export function errorPayload(errno: number, message: string): Uint8Array {
  const text = new TextEncoder().encode(message.slice(0, 512));
  const b = new Uint8Array(4 + text.byteLength);
  new DataView(b.buffer).setUint32(0, errno, true);
  b.set(text, 4);
  return b;
}

/** Little-endian u32s as a payload. */
export function u32s(...values: number[]): Uint8Array {
  const b = new Uint8Array(values.length * 4);
  values.forEach((x, i) => new DataView(b.buffer).setUint32(i * 4, x >>> 0, true));
  return b;
}

/** An ATTACH payload. */
export interface AttachPayload {
  /** The guest domain the new device is in (the listener must serve it; one connection per domain). */
  readonly domain: number;
  /** 0: an in-process model device; 1: a selftest mock device. */
  readonly kind: 0 | 1;
}

/**
 * Decode an ATTACH payload (`domain u32, kind u32`); a wrong length or an unknown kind is a {@linkcode FrameError}.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { decodeAttach, FrameError, u32s } from "./protocol.ts";
 * assert.deepEqual(decodeAttach(u32s(3, 1)), { domain: 3, kind: 1 });
 * assert.throws(() => decodeAttach(u32s(3, 9)), FrameError);
 * ```
 */
export function decodeAttach(payload: Uint8Array): AttachPayload {
  if (payload.byteLength !== 8) throw new FrameError(22, "ATTACH takes domain u32, kind u32", false);
  const v = new DataView(payload.buffer, payload.byteOffset, 8);
  const kind = v.getUint32(4, true);
  if (kind !== 0 && kind !== 1) throw new FrameError(22, `unknown device kind ${kind}`, false);
  return { domain: v.getUint32(0, true), kind };
}

/**
 * Decode an OPEN payload: a device name, UTF-8, 1..64 bytes of letters, digits, `_`, `.` and `-` (what
 * `serve --device` accepts).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { decodeOpen, FrameError } from "./protocol.ts";
 * assert.equal(decodeOpen(new TextEncoder().encode("gpu")), "gpu");
 * assert.throws(() => decodeOpen(new Uint8Array([0xff])), FrameError);
 * ```
 */
export function decodeOpen(payload: Uint8Array): string {
  let name: string | undefined;
  try {
    name = new TextDecoder("utf-8", { fatal: true }).decode(payload);
  } catch { /* not UTF-8: refused below */ }
  if (name === undefined || !/^[A-Za-z0-9_.-]{1,64}$/.test(name)) {
    throw new FrameError(22, "OPEN takes a device name of 1..64 letters, digits, '_', '.' or '-'", false);
  }
  return name;
}

/**
 * Decode an UNBIND payload: `pasid u32`, 0xffffffff for the RID.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { decodeUnbind, u32s } from "./protocol.ts";
 * assert.equal(decodeUnbind(u32s(5)), 5);
 * assert.equal(decodeUnbind(u32s(0xffff_ffff)), "rid");
 * ```
 */
export function decodeUnbind(payload: Uint8Array): number | "rid" {
  if (payload.byteLength !== 4) throw new FrameError(22, "UNBIND takes pasid u32", false);
  const p = new DataView(payload.buffer, payload.byteOffset, 4).getUint32(0, true);
  return p === 0xffff_ffff ? "rid" : p;
}

/** The errno and message of an error frame's payload (a short payload is errno 0, no message). */
export function decodeError(payload: Uint8Array): { errno: number; message: string } {
  if (payload.byteLength < 4) return { errno: 0, message: "" };
  const v = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
  return { errno: v.getUint32(0, true), message: new TextDecoder().decode(payload.subarray(4)) };
}

/** A MAP_MEMORY payload. */
export interface MapMemoryPayload {
  /** The token the memfd was sent with, as 32 hex digits. */
  readonly token: string;
  /** Where to map it in the broker's guest-RAM IOAS. */
  readonly iova: number;
}

/**
 * Decode a MAP_MEMORY payload (`token [16], iova u64`); another length, or an IOVA past 2^53, is a
 * {@linkcode FrameError}.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { decodeMapMemory, encodeMapMemory, FrameError } from "./protocol.ts";
 * const token = new Uint8Array(16).fill(0xab);
 * assert.deepEqual(decodeMapMemory(encodeMapMemory(token, 0x100_0000)), { token: "ab".repeat(16), iova: 0x100_0000 });
 * assert.throws(() => decodeMapMemory(new Uint8Array(8)), FrameError);
 * ```
 */
export function decodeMapMemory(payload: Uint8Array): MapMemoryPayload {
  if (payload.byteLength !== 24) throw new FrameError(22, "MAP_MEMORY takes token [16], iova u64", false);
  const v = new DataView(payload.buffer, payload.byteOffset, 24);
  const iova = v.getBigUint64(16, true);
  if (iova > BigInt(Number.MAX_SAFE_INTEGER)) throw new FrameError(22, "MAP_MEMORY: IOVA past 2^53", false);
  return { token: tokenHex(payload.subarray(0, 16)), iova: Number(iova) };
}

/** Encode a MAP_MEMORY payload. */
export function encodeMapMemory(token: Uint8Array, iova: number): Uint8Array {
  if (token.byteLength !== 16) throw new RangeError("a MAP_MEMORY token is 16 bytes");
  const b = new Uint8Array(24);
  b.set(token);
  new DataView(b.buffer).setBigUint64(16, BigInt(iova), true);
  return b;
}

/** A token's bytes as 32 lower-case hex digits. */
export function tokenHex(token: Uint8Array): string {
  return [...token].map((x) => x.toString(16).padStart(2, "0")).join("");
}
