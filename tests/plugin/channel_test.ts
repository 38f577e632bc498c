// The plugin channel: what crosses is data only, and a bad message from the other side reads as an error.
import assert from "node:assert/strict";
import { Channel, CHANNEL_BYTES, ChannelState, errorToChannel } from "../../lib/plugin/channel.ts";
import { LimitError } from "../../lib/kernel/errors.ts";

Deno.test("channel: bigints and plain data cross; functions and prototypes do not", () => {
  const a = Channel.create(), b = new Channel(a.buffer);
  class Secret {
    readonly key = 7;
  }
  a.send(ChannelState.CALL, {
    method: "submit",
    args: [{ ste: [1n << 63n, 2n], f: () => 1, secret: new Secret() }],
  });
  const m = b.read();
  const arg = (m.args as Record<string, unknown>[])[0];
  assert.deepEqual(arg.ste, [1n << 63n, 2n]);
  assert.equal("f" in arg, false, "a function does not cross");
  assert.equal(Object.getPrototypeOf(arg.secret), Object.prototype, "an instance arrives as a plain object");
});

Deno.test("channel: a forged length, garbage bytes and an oversized message read as errors, never throw", () => {
  const a = Channel.create(), b = new Channel(a.buffer);
  const words = new Int32Array(a.buffer, 0, 2), bytes = new Uint8Array(a.buffer, 8);
  Atomics.store(words, 1, CHANNEL_BYTES + 1);
  assert.equal(b.read().error?.name, "RangeError");
  Atomics.store(words, 1, -5);
  assert.equal(b.read().error?.name, "RangeError");
  bytes.set([0x7b, 0xff, 0x00], 0);
  Atomics.store(words, 1, 3);
  assert.equal(b.read().error?.name, "SyntaxError");
  a.send(ChannelState.RETURN, { value: "x".repeat(CHANNEL_BYTES) });
  assert.equal(b.read().error?.name, "RangeError", "too big to send: the receiver reads an error");
});

Deno.test("channel: an error crosses as its name, message and plain fields", () => {
  const e = errorToChannel(new LimitError("pasids-per-device", 2, "unbind first"));
  assert.deepEqual(e, {
    name: "LimitError",
    message: e.message,
    fields: { limit: "pasids-per-device", max: 2, hint: "unbind first" },
  });
});
