/**
 * The synchronous channel between a plugin's Worker and the host: one `SharedArrayBuffer` holding a state word, a
 * length and a JSON message. The host's calls into the plugin and the plugin's calls on its device handle are
 * blocking round trips (`Atomics.wait`), so a plugin loaded in a Worker keeps the synchronous {@linkcode RelayPlugin}
 * API. Everything crossing is data (JSON, bigints tagged): no object of either side is reachable from the other.
 *
 * @module
 */

/** Who may write next. */
export const ChannelState = {
  /** The Worker is starting. */
  STARTING: 0,
  /** The Worker created its plugin and waits for calls. */
  READY: 1,
  /** The host called the plugin (host → Worker). */
  CALL: 2,
  /** The plugin called its device handle (Worker → host). */
  HANDLE_CALL: 3,
  /** The host answered the handle call (host → Worker). */
  HANDLE_RETURN: 4,
  /** The plugin answered the host's call (Worker → host). */
  RETURN: 5,
  /** The Worker could not start: the message is the reason. */
  FAILED: 6,
} as const;

/** Bytes of JSON one message may take. */
export const CHANNEL_BYTES = 4 << 20;

/** A serialized error: its name, message and own data fields. */
export interface ChannelError {
  readonly name: string;
  readonly message: string;
  readonly fields: Record<string, unknown>;
}

/** A message: a call (`method`, `args`), or an answer (`value` or `error`). */
export interface ChannelMessage {
  readonly method?: string;
  readonly args?: readonly unknown[];
  readonly value?: unknown;
  readonly error?: ChannelError;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/**
 * One side's view of the shared buffer.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Channel, ChannelState } from "./channel.ts";
 * const a = Channel.create();
 * const b = new Channel(a.buffer);
 * a.send(ChannelState.CALL, { method: "drain", args: [] });
 * assert.equal(b.state, ChannelState.CALL);
 * assert.deepEqual(b.read(), { method: "drain", args: [] });
 * ```
 */
export class Channel {
  readonly #words: Int32Array;
  readonly #bytes: Uint8Array;

  constructor(readonly buffer: SharedArrayBuffer) {
    this.#words = new Int32Array(buffer, 0, 2);
    this.#bytes = new Uint8Array(buffer, 8);
  }

  /** A new channel's buffer. */
  static create(): Channel {
    return new Channel(new SharedArrayBuffer(8 + CHANNEL_BYTES));
  }

  get state(): number {
    return Atomics.load(this.#words, 0);
  }

  /** Write `message` and hand the turn over with `state`. */
  send(state: number, message: ChannelMessage): void {
    let json = JSON.stringify(message, (_, v) => (typeof v === "bigint" ? { $bigint: v.toString() } : v));
    if (json.length * 3 > this.#bytes.byteLength) {
      json = JSON.stringify({ error: { name: "RangeError", message: "message over the channel's size", fields: {} } });
    }
    const { written } = encoder.encodeInto(json, this.#bytes);
    Atomics.store(this.#words, 1, written);
    Atomics.store(this.#words, 0, state);
    Atomics.notify(this.#words, 0);
  }

  /** The message in the buffer (a malformed one reads as an error). */
  read(): ChannelMessage {
    const length = Atomics.load(this.#words, 1);
    if (length < 0 || length > this.#bytes.byteLength) {
      return { error: { name: "RangeError", message: "bad message length", fields: {} } };
    }
    try {
      // Copied out first: TextDecoder does not read shared memory, and the other side may be writing it.
      const parsed = JSON.parse(
        decoder.decode(this.#bytes.slice(0, length)),
        (_, v) =>
          v !== null && typeof v === "object" && typeof v.$bigint === "string" && Object.keys(v).length === 1
            ? BigInt(v.$bigint)
            : v,
      );
      return parsed !== null && typeof parsed === "object" ? parsed as ChannelMessage : { value: parsed };
    } catch (e) {
      return { error: { name: "SyntaxError", message: (e as Error).message, fields: {} } };
    }
  }

  /**
   * Wait while the state is one of `states` (at most `timeoutMs` in all); returns the state then, or undefined on
   * timeout.
   */
  waitWhile(states: readonly number[], timeoutMs: number): number | undefined {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const s = this.state;
      if (!states.includes(s)) return s;
      const left = deadline - performance.now();
      if (left <= 0) return undefined;
      Atomics.wait(this.#words, 0, s, Math.min(left, 1000));
    }
  }
}

/** An error as data, for the other side. */
export function errorToChannel(e: unknown): ChannelError {
  if (!(e instanceof Error)) return { name: "Error", message: String(e), fields: {} };
  const fields: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(e)) {
    if (k !== "name" && k !== "message" && ["string", "number", "boolean"].includes(typeof v)) fields[k] = v;
  }
  return { name: e.name, message: e.message, fields };
}
