// The broker's framing as a fuzz target (run in a Worker by lib/testing/fuzz_deadline.ts, so it is exported by name):
// a client's bytes through takeFrames and every payload decoder the server uses. Besides throwing only typed errors,
// the decoders must agree with the encoder: the frames taken, encoded again, are exactly the bytes consumed.
import type { FuzzTarget } from "../../lib/testing/fuzz.ts";
import {
  BrokerOp,
  decodeAttach,
  decodeError,
  decodeOpen,
  decodeUnbind,
  encodeFrame,
  errorPayload,
  FrameError,
  HEADER_BYTES,
  MAX_PAYLOAD,
  takeFrames,
  u32s,
} from "../../lib/broker/protocol.ts";
import {
  decodeSvmBind2017,
  decodeTlbInvalidate2017,
  encodeSvmBind2017,
  encodeTlbInvalidate2017,
} from "../../lib/compile/wire2017.ts";
import { RequestError } from "../../lib/request/request.ts";
import { UapiError } from "../../lib/uapi/mod.ts";

function corpus(): Uint8Array[] {
  const frame = (op: number, payload: Uint8Array, request = 1) => encodeFrame({ op, device: 1, request, payload });
  const inv = encodeTlbInvalidate2017({
    op: "invalidate",
    domain: 1,
    scope: { kind: "pasid-range", pasid: 5, firstPage: 0x100, pages: 16 },
  });
  const bind = encodeSvmBind2017({
    op: "bind",
    domain: 1,
    pasid: 5,
    table: { format: "vtd-s1", tableAddress: 0x1000, addressWidth: 48 },
  });
  const two = (a: Uint8Array, b: Uint8Array) => {
    const out = new Uint8Array(a.byteLength + b.byteLength);
    out.set(a);
    out.set(b, a.byteLength);
    return out;
  };
  return [
    frame(BrokerOp.ATTACH, u32s(1, 0)),
    frame(BrokerOp.INVALIDATE, inv),
    frame(BrokerOp.BIND, bind),
    frame(BrokerOp.UNBIND, u32s(5)),
    frame(BrokerOp.SYNC, new Uint8Array(0)),
    frame(BrokerOp.OPEN, new TextEncoder().encode("gpu")),
    frame(BrokerOp.ERROR, errorPayload(22, "bad")),
    two(frame(BrokerOp.INVALIDATE, inv, 1), frame(BrokerOp.SYNC, new Uint8Array(0), 2)),
    two(frame(BrokerOp.ATTACH, u32s(1, 1)), frame(BrokerOp.DETACH, new Uint8Array(0)).subarray(0, 9)),
  ];
}

/** takeFrames and the payload decoders on one buffer of client bytes. */
export function brokerFramingTarget(): FuzzTarget {
  return {
    name: "broker framing",
    sizes: [0, 8, 16, 20, 24, 48, 64, 80, 96, 128],
    corpus: corpus(),
    run(bytes) {
      const { frames, rest } = takeFrames(bytes);
      let consumed = 0;
      for (const f of frames) {
        const again = encodeFrame(f);
        const original = bytes.subarray(consumed, consumed + again.byteLength);
        if (again.byteLength > HEADER_BYTES + MAX_PAYLOAD || again.some((b, i) => b !== original[i])) {
          throw new Error(`frame at ${consumed} does not encode back to the bytes it was taken from`);
        }
        consumed += again.byteLength;
      }
      if (consumed + rest.byteLength !== bytes.byteLength) throw new Error("bytes lost or made up by takeFrames");
      if (rest.byteLength >= HEADER_BYTES + MAX_PAYLOAD) throw new Error("a complete frame was left in the rest");
      for (const f of frames) {
        switch (f.op) {
          case BrokerOp.ATTACH:
            decodeAttach(f.payload);
            break;
          case BrokerOp.OPEN:
            decodeOpen(f.payload);
            break;
          case BrokerOp.UNBIND:
            decodeUnbind(f.payload);
            break;
          case BrokerOp.INVALIDATE:
            decodeTlbInvalidate2017(f.payload, 1);
            break;
          case BrokerOp.BIND:
            decodeSvmBind2017(f.payload, 1);
            break;
          case BrokerOp.ERROR:
            decodeError(f.payload);
            break;
        }
      }
    },
    typed: (e) => e instanceof FrameError || e instanceof UapiError || e instanceof RequestError,
  };
}
