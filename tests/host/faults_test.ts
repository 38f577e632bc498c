// Every kernel failure mode at the backend boundary, through the relay queue onto the in-process host: the
// guest-visible outcome, no request lost (every request either invalidated on the host or reported failed), none
// reported twice. The kernel suite runs the same matrix on the real kernel (kernel-suite/faults_test.ts).
import assert from "node:assert/strict";
import { FaultInjectingBackend } from "../../lib/host/faults.ts";
import { FAULT_CASES } from "./fault_cases.ts";
import { RelayQueue } from "../../lib/relay/queue.ts";
import { ModelHost } from "../../lib/host/model.ts";

Deno.test("faults: each kernel failure mode gives the right guest-visible outcome; nothing lost, nothing twice", () => {
  for (const c of FAULT_CASES) {
    const host = new ModelHost();
    const t = host.createTarget(c.format);
    const backend = new FaultInjectingBackend(host, c.faults);
    const q = new RelayQueue(backend);
    q.bind(1, 1, { targetId: t, format: c.format, ...(c.format === "smmuv3" ? { asid: 3 } : {}) });
    const pages = [10, 20, 30, 40];
    const seqs = pages.map((p) =>
      q.submit({ op: "invalidate", domain: 1, scope: { kind: "pasid-range", pasid: 1, firstPage: p, pages: 1 } })
    );
    const wait = q.submit({ op: "sync" });
    const r = q.drain();
    const failed = r.failures.map((f) => seqs.indexOf(f.seq));
    assert.deepEqual(failed.toSorted(), c.failed, c.name);
    assert.equal(new Set(r.failures.map((f) => f.seq)).size, r.failures.length, `${c.name}: reported twice`);
    pages.forEach((p, i) => {
      if (!c.failed.includes(i)) {
        assert.ok(host.covered(t, p, c.format === "smmuv3" ? 3 : undefined), `${c.name}: request ${i} lost`);
      }
    });
    assert.deepEqual(r.waits, [
      c.failed.length ? { seq: wait, ok: false, firstFailed: seqs[Math.min(...c.failed)] } : { seq: wait, ok: true },
    ], c.name);
  }
});
