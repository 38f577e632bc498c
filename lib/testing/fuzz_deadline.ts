/**
 * A fuzz run with a per-input deadline that catches real hangs: {@linkcode fuzz} times an input only once it returns,
 * so an input that loops forever would hang the run without a word. Here the run happens in a Worker that marks each
 * input's start in shared memory; the caller's thread watches, and when one input runs past `hangMs` it terminates the
 * Worker and fails with the target, the seed and the input's index (the same seed and target replay it).
 *
 * The targets come from a module (a Worker cannot be handed functions): its export `name` is a function returning a
 * {@linkcode FuzzTarget}.
 *
 * @example
 * ```ts ignore
 * import assert from "node:assert/strict";
 * import { fuzzWithDeadline } from "./fuzz_deadline.ts";
 * const report = await fuzzWithDeadline(new URL("./my_targets.ts", import.meta.url), "vtdQueueTarget",
 *   { inputs: 10_000, seed: 1, hangMs: 2000 });
 * assert.equal(report.inputs, 10000);
 * ```
 *
 * @module
 */
import { FuzzFailure, type FuzzReport } from "./fuzz.ts";

/** Run `inputs` inputs of the target module `module` exports as `name`, failing any input that takes over `hangMs`. */
export function fuzzWithDeadline(
  module: URL,
  name: string,
  opts: { inputs: number; seed: number; hangMs?: number },
): Promise<FuzzReport> {
  const hangMs = opts.hangMs ?? 2000;
  // [0]: index of the input running + 1 (0 before the first), [1]: its start, ms since the Worker began (rounded).
  const progress = new Int32Array(new SharedArrayBuffer(8));
  const worker = new Worker(new URL("./fuzz_deadline_worker.ts", import.meta.url), { type: "module" });
  return new Promise<FuzzReport>((resolve, reject) => {
    let lastIndex = -1, since = performance.now();
    const finish = (f: () => void) => {
      clearInterval(watch);
      worker.terminate();
      f();
    };
    const watch = setInterval(() => {
      const index = Atomics.load(progress, 0) - 1;
      if (index !== lastIndex) {
        lastIndex = index;
        since = performance.now();
        return;
      }
      if (index >= 0 && performance.now() - since > hangMs) {
        finish(() =>
          reject(new FuzzFailure(name, opts.seed, index, "(see the seed)", `no answer within ${hangMs} ms: a hang`))
        );
      }
    }, Math.max(10, Math.floor(hangMs / 10)));
    worker.onmessage = (e: MessageEvent) => {
      const m = e.data as { report?: FuzzReport; failure?: { index: number; input: string; message: string } };
      if (m.report) finish(() => resolve(m.report!));
      else if (m.failure) {
        const f = m.failure;
        finish(() => reject(new FuzzFailure(name, opts.seed, f.index, f.input, f.message)));
      }
    };
    worker.onerror = (e) => {
      e.preventDefault();
      finish(() => reject(new FuzzFailure(name, opts.seed, lastIndex, "(see the seed)", `worker: ${e.message}`)));
    };
    worker.postMessage({ module: module.href, name, inputs: opts.inputs, seed: opts.seed, hangMs, progress });
  });
}
