// cli/commands/replay.ts as a user runs it: a trace through the relay on the in-process host, a bad line refused.
import assert from "node:assert/strict";
import { run } from "../run.ts";

Deno.test("cli: replay runs a trace through the relay on the in-process host", async () => {
  const dir = await Deno.makeTempDir();
  const trace = `${dir}/trace.jsonl`;
  const lines = [];
  for (let i = 0; i < 10; i++) {
    lines.push(
      JSON.stringify({ op: "invalidate", domain: 1, scope: { kind: "range", firstPage: 16, pages: 4 }, noPasid: true }),
    );
    lines.push(JSON.stringify({ op: "sync" }));
  }
  await Deno.writeTextFile(trace, lines.join("\n"));
  const r = await run([`--allow-read=${dir}`], ["replay", trace, "--domain-binding", "1:rid:vtd-s1", "--json"]);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(JSON.parse(r.stdout), {
    requests: 20,
    invalidations: 10,
    waits: 10,
    failedWaits: 0,
    ioctls: 10,
    entries: 10,
  });
  await Deno.writeTextFile(trace, '{"op":"invalidate","domain":1,"scope":{"kind":"pasid","pasid":2000000}}');
  const bad = await run([`--allow-read=${dir}`], ["replay", trace]);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /trace.jsonl:1: scope.pasid: pasid-out-of-range/);
  await Deno.remove(dir, { recursive: true });
});
