/**
 * The Worker side of {@linkcode fuzzWithDeadline}: runs the fuzz loop and marks each input's start in shared memory.
 *
 * @module
 */
import { fuzz, FuzzFailure, type FuzzTarget } from "./fuzz.ts";

/** The Worker's global scope, as much of it as is used. */
const scope = globalThis as unknown as {
  onmessage: ((e: MessageEvent) => void) | null;
  postMessage(message: unknown): void;
};

scope.onmessage = async (e: MessageEvent) => {
  const { module, name, inputs, seed, hangMs, progress } = e.data as {
    module: string;
    name: string;
    inputs: number;
    seed: number;
    hangMs: number;
    progress: Int32Array;
  };
  try {
    const make = (await import(module))[name] as () => FuzzTarget;
    const target = make();
    let index = 0;
    const marked: FuzzTarget = {
      ...target,
      run(bytes) {
        Atomics.store(progress, 0, ++index);
        target.run(bytes);
      },
      typed: (error) => target.typed(error),
    };
    // The in-loop bound stays (an input that returns late still fails); the watcher catches the ones that never do.
    const report = fuzz(marked, { inputs, seed, hangMs });
    scope.postMessage({ report });
  } catch (err) {
    const f = err instanceof FuzzFailure ? err : undefined;
    scope.postMessage({
      failure: { index: f?.index ?? -1, input: f?.input ?? "", message: (err as Error)?.message ?? String(err) },
    });
  }
};
