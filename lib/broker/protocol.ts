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
 * | SYNC 5 | — | `ok u32, firstFailedRequest u32, failures u32, hostIoctls u32` |
 * | DETACH 6 | — | — |
 * | OPEN 7 | a device name (UTF-8, 1..64 bytes) the broker was started with | `device u32, domain u32` |
 *
 * Answers carry `op | 0x80` and the request id; an error is op 0xff with `errno u32` and a UTF-8 message.
 * ATTACH makes a device the connection owns (released when it closes); OPEN takes a handle on a named device the
 * broker owns (`serve --device`), which outlives the connection, so one-shot tools can bind, invalidate and unbind
 * across processes; DETACH of an opened handle only drops the handle. A frame
 * whose length is over the limit is answered with E2BIG and the connection is closed (its framing can no longer be
 * trusted); a malformed payload is answered with EINVAL and the connection goes on.
 *
 * @module
 */

export const PROTOCOL_VERSION = 1;
export const HEADER_BYTES = 16;
export const MAX_PAYLOAD = 4096;
export const BrokerOp = {
  ATTACH: 1,
  INVALIDATE: 2,
  BIND: 3,
  UNBIND: 4,
  SYNC: 5,
  DETACH: 6,
  OPEN: 7,
  ERROR: 0xff,
} as const;

/** A frame. */
export interface Frame {
  readonly op: number;
  readonly device: number;
  readonly request: number;
  readonly payload: Uint8Array;
}

/** Encode a frame. */
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
  override name = "FrameError";
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
