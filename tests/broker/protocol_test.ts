// The broker's framing fuzzed with a per-input deadline: only typed errors, frames that encode back to their bytes,
// and no input that hangs the decoder.
import assert from "node:assert/strict";
import { fuzzWithDeadline } from "../../lib/testing/fuzz_deadline.ts";
import { FuzzFailure } from "../../lib/testing/fuzz.ts";

const TARGETS = new URL("./framing_fuzz_targets.ts", import.meta.url);

Deno.test("broker framing fuzz: takeFrames and the payload decoders, 20,000 inputs, a deadline per input", async () => {
  const seed = Number(Deno.env.get("IOMMU_RELAY_FUZZ_SEED") ?? 16);
  const r = await fuzzWithDeadline(TARGETS, "brokerFramingTarget", { inputs: 20_000, seed, hangMs: 5000 });
  assert.equal(r.inputs, 20_000);
  assert.ok(r.typedErrors > 0, "the fuzzer did reach the refusals");
});

Deno.test("broker framing fuzz: the target does fail an input whose frame would not encode back", async () => {
  // A target module that cannot fail would make the test above meaningless: break the invariant and see it caught.
  const broken = new URL("./framing_fuzz_broken.ts", import.meta.url);
  const err = await fuzzWithDeadline(broken, "brokenFramingTarget", { inputs: 2000, seed: 1, hangMs: 5000 }).then(
    () => undefined,
    (e) => e,
  );
  assert.ok(err instanceof FuzzFailure, String(err));
});
