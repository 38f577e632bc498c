// The sender against a scripted backend: which entries each call carries, what is retried or resent, and which
// requests a failure is charged to.
import assert from "node:assert/strict";
import { EntryWriter } from "../../lib/compile/entries.ts";
import type { Backend, Format, InvalidateStatus } from "../../lib/host/backend.ts";
import type { RequestFailure } from "../../lib/relay/outcome.ts";
import { requestFailure, sendBatch } from "../../lib/relay/send.ts";
import { Errno } from "../../lib/uapi/errno.ts";

const { EINTR, EAGAIN, EINVAL, EOPNOTSUPP, ENOMEM, EIO } = Errno.values;

/** Answers each call from `script` ({errno, handled}; success once it runs out) and records what it was sent. */
class ScriptedBackend implements Backend {
  readonly calls: { first: number; count: number }[] = [];
  constructor(readonly script: { errno: number; handled: number }[]) {}
  invalidate(_target: number, _format: Format, entries: Uint8Array, count: number, status: InvalidateStatus): void {
    this.calls.push({ first: entries[0], count });
    const next = this.script.shift() ?? { errno: 0, handled: count };
    status.errno = next.errno;
    status.handled = next.handled;
  }
}

/** `n` one-byte entries numbered 0..n-1 (the byte is the entry's index), entry i merged from requests origins[i]. */
function batch(origins: number[][]): EntryWriter {
  const w = new EntryWriter(1);
  origins.forEach((o, i) => {
    w.append(o);
    w.tail(i)[0] = i;
  });
  return w;
}

function send(backend: Backend, w: EntryWriter, format: Format = "vtd-s1", maxEntriesPerCall = 16) {
  const failures: RequestFailure[] = [];
  const counters = { resends: 0 };
  const ioctls = sendBatch(
    backend,
    7,
    format,
    w,
    { maxEntriesPerCall, transientRetries: 2 },
    {
      errno: 0,
      handled: 0,
    },
    failures,
    counters,
  );
  return { ioctls, failures, resends: counters.resends };
}

Deno.test("send: a batch over the per-call cap goes in consecutive calls, each starting where the last stopped", () => {
  const backend = new ScriptedBackend([]);
  const r = send(backend, batch([[1], [2], [3], [4], [5]]), "vtd-s1", 2);
  assert.deepEqual(backend.calls, [{ first: 0, count: 2 }, { first: 2, count: 2 }, { first: 4, count: 1 }]);
  assert.deepEqual([r.ioctls, r.failures, r.resends], [3, [], 0]);
});

Deno.test("send: EINTR and EAGAIN are retried up to the policy's count, then the last errno is a failure", () => {
  const ok = new ScriptedBackend([{ errno: EINTR, handled: 0 }, { errno: EAGAIN, handled: 0 }]);
  assert.deepEqual(send(ok, batch([[1]])).failures, []);
  assert.equal(ok.calls.length, 3);
  const stuck = new ScriptedBackend(new Array(3).fill({ errno: EAGAIN, handled: 0 }));
  const r = send(stuck, batch([[1]]));
  assert.equal(stuck.calls.length, 3, "one call and two retries");
  assert.deepEqual(r.failures.map((f) => [f.seq, f.errnoName, f.positionUnknown]), [[1, "EAGAIN", false]]);
});

Deno.test("send: a named failing entry is charged to every request merged into it; the rest is resent after it", () => {
  const backend = new ScriptedBackend([{ errno: EINVAL, handled: 1 }]);
  const r = send(backend, batch([[1], [2, 3], [4]]));
  assert.deepEqual(r.failures.map((f) => [f.seq, f.entryIndex, f.retrySafe]), [[2, 1, false], [3, 1, false]]);
  assert.deepEqual(backend.calls, [{ first: 0, count: 3 }, { first: 2, count: 1 }]);
  assert.equal(r.resends, 1);
});

Deno.test("send: the last entry failing leaves nothing to resend", () => {
  const backend = new ScriptedBackend([{ errno: EINVAL, handled: 1 }]);
  const r = send(backend, batch([[1], [2]]));
  assert.equal(backend.calls.length, 1);
  assert.equal(r.resends, 0);
  assert.deepEqual(r.failures.map((f) => f.seq), [2]);
});

Deno.test("send: an untrustworthy count resends the whole batch once; a second failure fails all of it, position unknown", () => {
  const cases: [string, Format, { errno: number; handled: number }][] = [
    ["ENOMEM with nothing handled", "vtd-s1", { errno: ENOMEM, handled: 0 }],
    ["SMMUv3 EIO (its count may overstate)", "smmuv3", { errno: EIO, handled: 1 }],
    ["a count past the batch", "vtd-s1", { errno: EIO, handled: 3 }],
  ];
  for (const [what, format, answer] of cases) {
    const once = new ScriptedBackend([answer]);
    const r1 = send(once, batch([[1], [2, 3]]), format);
    assert.deepEqual([r1.failures, r1.resends, once.calls.length], [[], 1, 2], `${what}: resent once`);
    assert.deepEqual(once.calls.map((c) => c.first), [0, 0], `${what}: from the first entry`);
    const twice = new ScriptedBackend([answer, answer]);
    const r2 = send(twice, batch([[1], [2, 1]]), format);
    assert.deepEqual(
      r2.failures.map((f) => [f.seq, f.positionUnknown]),
      [[1, true], [2, true]],
      `${what}: each request once, flagged`,
    );
  }
});

Deno.test("send: SMMUv3 validation errors keep the kernel's position", () => {
  const backend = new ScriptedBackend([{ errno: EOPNOTSUPP, handled: 0 }]);
  const r = send(backend, batch([[1], [2]]), "smmuv3");
  assert.deepEqual(r.failures.map((f) => [f.seq, f.positionUnknown]), [[1, false]]);
  assert.deepEqual(backend.calls.map((c) => c.first), [0, 1]);
});

Deno.test("requestFailure: EINVAL and EOPNOTSUPP are not worth a retry; other errnos are", () => {
  assert.equal(requestFailure(1, EINVAL, 2, 0, false).retrySafe, false);
  assert.equal(requestFailure(1, EOPNOTSUPP, 2, 0, false).retrySafe, false);
  assert.deepEqual(requestFailure(5, ENOMEM, 9, 4, true), {
    seq: 5,
    errno: ENOMEM,
    errnoName: "ENOMEM",
    targetId: 9,
    entryIndex: 4,
    positionUnknown: true,
    retrySafe: true,
  });
});
