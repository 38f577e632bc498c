// A deliberately wrong framing target for tests/broker/protocol_test.ts: it checks the framing target's own
// invariant against a decoder that drops the last payload byte, so the fuzzer must report it.
import type { FuzzTarget } from "../../lib/testing/fuzz.ts";
import { brokerFramingTarget } from "./framing_fuzz_targets.ts";
import { takeFrames } from "../../lib/broker/protocol.ts";

export function brokenFramingTarget(): FuzzTarget {
  const real = brokerFramingTarget();
  return {
    ...real,
    run(bytes) {
      const { frames } = takeFrames(bytes);
      for (const f of frames) {
        if (f.payload.byteLength > 0) throw new Error("a payload byte was lost (deliberately)");
      }
      real.run(bytes);
    },
  };
}
