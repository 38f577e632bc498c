// lib/kernel/streams.ts against a scripted queue (the kernel suite runs it on a real vEVENTQ): lost-event accounting
// from the LOST_EVENTS header's sequence, unflagged gaps, the INT_MAX wrap, and shutdown on abort.
import assert from "node:assert/strict";
import { type VeventItem, veventStream } from "../../lib/kernel/streams.ts";
import type { Veventq, VeventRecord } from "../../lib/kernel/iommufd.ts";

function scripted(reads: VeventRecord[][]) {
  let i = 0;
  const queue = {
    fd: 3,
    // Like the shim's poll on its worker thread: ready at once when there is something, else after the timeout.
    iommufd: {
      shim: {
        pollAsync: (_fd: number, _events: number, ms: number) =>
          new Promise((r) => setTimeout(() => r(i < reads.length ? 1 : 0), i < reads.length ? 0 : ms)),
      },
    },
    readEvents: () => reads[i++] ?? [],
  };
  return queue as unknown as Veventq;
}
const ev = (sequence: number): VeventRecord => ({
  sequence,
  lostEvents: false,
  payload: new Uint8Array([sequence & 0xff]),
});
const lost = (sequence: number): VeventRecord => ({ sequence, lostEvents: true, payload: new Uint8Array(0) });

async function collect(queue: Veventq, until: number) {
  const ac = new AbortController();
  const stats = { delivered: 0, lost: 0, lostFlags: 0, reads: 0 };
  const items: VeventItem[] = [];
  for await (const item of veventStream(queue, { payloadSize: 1, signal: ac.signal, pollMs: 1, stats })) {
    items.push(item);
    if (items.length >= until) ac.abort();
  }
  return { items, stats };
}

Deno.test("vevent stream: the LOST_EVENTS header's sequence gives the exact count; events are never faked", async () => {
  const { items, stats } = await collect(scripted([[ev(0), ev(1)], [ev(2), ev(3), lost(9)], [ev(10)]]), 6);
  assert.deepEqual(items.map((x) => x.type === "lost" ? `lost ${x.count}@${x.sequence}` : `ev ${x.sequence}`), [
    "ev 0",
    "ev 1",
    "ev 2",
    "ev 3",
    "lost 6@9",
    "ev 10",
  ]);
  assert.deepEqual(stats, { delivered: 5, lost: 6, lostFlags: 1, reads: 3 });
});

Deno.test("vevent stream: an unflagged gap is counted too, across the INT_MAX wrap", async () => {
  const top = 2 ** 31 - 2;
  const { items, stats } = await collect(scripted([[ev(top), ev(top + 1)], [ev(1)]]), 4);
  assert.deepEqual(items.map((x) => x.type === "lost" ? `lost ${x.count} ${x.flagged}` : `ev ${x.sequence}`), [
    `ev ${top}`,
    `ev ${top + 1}`,
    "lost 1 false",
    "ev 1",
  ]);
  assert.equal(stats.lost, 1, "sequence 0 is missing after the wrap");
});

Deno.test("vevent stream: an abort ends the iteration at the next poll, with nothing pending", async () => {
  const ac = new AbortController();
  const q = scripted([]);
  setTimeout(() => ac.abort(), 20);
  const seen: VeventItem[] = [];
  for await (const item of veventStream(q, { payloadSize: 1, signal: ac.signal, pollMs: 5 })) seen.push(item);
  assert.deepEqual(seen, []);
});
