/**
 * A small fuzzer for guest-facing and uAPI decoders: random and mutated inputs, a typed-error check on every
 * throw, a per-input hang bound, and a seed printed so a failure replays. Used by `tests/testing/fuzz_test.ts` (a bounded
 * budget per CI run) and `deno task fuzz` (a long run).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { fuzz } from "./fuzz.ts";
 * const r = fuzz({ name: "u32", sizes: [4], run: (b) => new DataView(b.buffer).getUint32(0), typed: () => false },
 *   { inputs: 1000, seed: 1 });
 * assert.equal(r.inputs, 1000);
 * assert.equal(r.typedErrors, 0);
 * ```
 *
 * @module
 */
import { prng } from "./workloads.ts";

/** What to fuzz. */
export interface FuzzTarget {
  readonly name: string;
  /** Input lengths to generate (random inputs pick one; mutations may also shrink or grow by a few bytes). */
  readonly sizes: readonly number[];
  /** Valid inputs to mutate (optional: without them every input is random). */
  readonly corpus?: readonly Uint8Array[];
  /** Decode one input; return normally or throw. */
  run(bytes: Uint8Array): void;
  /** Whether a thrown value is one of the decoder's typed errors. */
  typed(error: unknown): boolean;
}

/** What a run did. */
export interface FuzzReport {
  readonly name: string;
  readonly seed: number;
  readonly inputs: number;
  readonly typedErrors: number;
  readonly slowestMs: number;
}

/** An untyped error or a hang: the input, hex, and the seed that replays it. */
export class FuzzFailure extends Error {
  override name = "FuzzFailure";
  constructor(
    readonly target: string,
    readonly seed: number,
    readonly index: number,
    readonly input: string,
    cause: string,
  ) {
    super(`${target}: input ${index} (seed ${seed}): ${cause}; input ${input}`);
  }
}

const INTERESTING = [0, 1, 0x7f, 0x80, 0xff, 0xffff, 0x7fff_ffff, 0x8000_0000, 0xffff_ffff];

/** Run `opts.inputs` inputs (half mutated from the corpus, when there is one). */
export function fuzz(target: FuzzTarget, opts: { inputs: number; seed: number; hangMs?: number }): FuzzReport {
  const rnd = prng(opts.seed);
  const hangMs = opts.hangMs ?? 1000;
  let typedErrors = 0, slowest = 0;
  const corpus = target.corpus ?? [];
  for (let i = 0; i < opts.inputs; i++) {
    let bytes: Uint8Array;
    if (corpus.length && rnd(2) === 0) {
      const base = corpus[rnd(corpus.length)];
      const delta = rnd(8) === 0 ? rnd(9) - 4 : 0; // sometimes a few bytes short or long
      bytes = new Uint8Array(Math.max(0, base.length + delta));
      bytes.set(base.subarray(0, Math.min(base.length, bytes.length)));
      for (let m = 1 + rnd(4); m > 0 && bytes.length; m--) {
        const at = rnd(bytes.length);
        switch (rnd(3)) {
          case 0:
            bytes[at] ^= 1 << rnd(8);
            break;
          case 1:
            bytes[at] = rnd(256);
            break;
          default: {
            const word = at & ~3;
            if (word + 4 <= bytes.length) {
              new DataView(bytes.buffer).setUint32(word, INTERESTING[rnd(INTERESTING.length)], true);
            }
          }
        }
      }
    } else {
      bytes = new Uint8Array(target.sizes[rnd(target.sizes.length)]);
      for (let k = 0; k < bytes.length; k += 4) {
        const v = rnd(4) === 0 ? INTERESTING[rnd(INTERESTING.length)] : rnd(2 ** 32);
        for (let b = 0; b < 4 && k + b < bytes.length; b++) bytes[k + b] = (v >>> (8 * b)) & 0xff;
      }
    }
    const t0 = performance.now();
    try {
      target.run(bytes);
    } catch (e) {
      if (!target.typed(e)) {
        throw new FuzzFailure(
          target.name,
          opts.seed,
          i,
          hex(bytes),
          `untyped ${(e as Error)?.name}: ${(e as Error)?.message}`,
        );
      }
      typedErrors++;
    }
    const ms = performance.now() - t0;
    if (ms > slowest) slowest = ms;
    if (ms > hangMs) throw new FuzzFailure(target.name, opts.seed, i, hex(bytes), `took ${ms.toFixed(0)} ms`);
  }
  return {
    name: target.name,
    seed: opts.seed,
    inputs: opts.inputs,
    typedErrors,
    slowestMs: Number(slowest.toFixed(2)),
  };
}

function hex(b: Uint8Array): string {
  return Array.from(b.subarray(0, 256), (x) => x.toString(16).padStart(2, "0")).join("");
}
