// DrainOutcome: drainInto refills one outcome in place and says exactly what drain() says; and the relay path it
// serves allocates nothing after warm-up (counted by V8's own scavenger under a 1 MiB young generation).
import assert from "node:assert/strict";
import { DrainOutcome } from "../../lib/relay/outcome.ts";
import { RelayQueue } from "../../lib/relay/queue.ts";
import type { PasidOrRid } from "../../lib/request/request.ts";
import { ModelHost } from "../../lib/host/model.ts";
import { assertAllocatesNothing } from "../alloc_probe.ts";

Deno.test("outcome: drainInto into one reused outcome reports what drain() reports, failures and waits included", () => {
  let seed = 99;
  const rnd = (n: number) => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) % n;
  const outcome = new DrainOutcome();
  let failures = 0, failedWaits = 0;
  for (let round = 0; round < 300; round++) {
    const hosts = [new ModelHost(), new ModelHost()];
    const maxPendingInvalidations = 1 + rnd(6);
    const queues = hosts.map((h) => new RelayQueue(h, { maxPendingInvalidations }));
    const targets = hosts.map((h) => [h.createTarget("vtd-s1"), h.createTarget("selftest")]);
    const pasids: PasidOrRid[] = ["rid", 1, 2];
    for (const [i, q] of queues.entries()) {
      q.bind(1, "rid", { targetId: targets[i][0], format: "vtd-s1" });
      q.bind(1, 1, { targetId: targets[i][0], format: "vtd-s1" });
      q.bind(1, 2, { targetId: targets[i][1], format: "selftest" });
    }
    for (let doorbell = 0; doorbell < 4; doorbell++) {
      for (let k = 0; k < 1 + rnd(8); k++) {
        const pasid = pasids[rnd(3)];
        const request = rnd(4) === 0 ? { op: "sync" as const } : pasid === "rid"
          ? {
            op: "invalidate" as const,
            domain: 1,
            scope: { kind: "range" as const, firstPage: rnd(64), pages: 1 + rnd(4) },
            noPasid: rnd(2) === 0,
          }
          : {
            op: "invalidate" as const,
            domain: 1,
            scope: { kind: "pasid-range" as const, pasid, firstPage: rnd(64), pages: 1 + rnd(4) },
          };
        if (rnd(5) === 0) {
          const failure = { atEntry: rnd(3), errno: [22, 12, 5, 4][rnd(4)], times: 1 + rnd(2) }, which = rnd(2);
          for (const [i, h] of hosts.entries()) h.inject.push({ targetId: targets[i][which], ...failure });
        }
        for (const q of queues) q.submit(request);
      }
      const plain = queues[0].drain();
      const reused = queues[1].drainInto(outcome);
      assert.equal(reused, outcome);
      assert.deepEqual(outcome.toReport(), plain, `round ${round} doorbell ${doorbell}`);
      assert.equal(outcome.waitCount, plain.waits.length);
      failures += plain.failures.length;
      failedWaits += plain.waits.filter((w) => !w.ok).length;
      for (let i = 0; i < outcome.waitCount; i++) {
        assert.equal(outcome.waitOk(i), plain.waits[i].ok);
        assert.equal(outcome.waitFirstFailed(i), plain.waits[i].firstFailed);
      }
    }
  }
  assert.ok(failures > 50 && failedWaits > 50, `the streams exercised failures (${failures}, ${failedWaits} waits)`);
});

Deno.test("outcome: a drain with nothing pending resets the outcome", () => {
  const host = new ModelHost();
  const q = new RelayQueue(host);
  const t = host.createTarget("vtd-s1");
  q.bind(1, 5, { targetId: t, format: "vtd-s1" });
  const out = new DrainOutcome();
  host.inject.push({ targetId: t, atEntry: 0, errno: 22 });
  q.submit({ op: "invalidate", domain: 1, scope: { kind: "pasid", pasid: 5 } });
  q.submit({ op: "sync" });
  q.drainInto(out);
  assert.equal(out.failures.length, 1);
  assert.equal(out.waitOk(0), false);
  q.drainInto(out);
  assert.deepEqual(out.toReport(), { ioctls: 0, entries: 0, invalidations: 0, unrouted: 0, failures: [], waits: [] });
});

Deno.test("outcome: submit(invalidate) + submit(sync) + drainInto, 1,000,000 times after warm-up, allocates nothing", async () => {
  await assertAllocatesNothing("relay");
});
