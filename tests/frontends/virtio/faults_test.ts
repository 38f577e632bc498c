import assert from "node:assert/strict";
import { guestMemoryOver } from "../../../lib/memory/guest_memory.ts";
import { VIRTIO_FAULT, VirtioIommuEventQueue } from "../../../lib/frontends/virtio/faults.ts";
import { handleVirtioIommuRequest, VirtioIommuStatus as S } from "../../../lib/frontends/virtio/iommu.ts";
import { prng } from "../../../lib/testing/workloads.ts";

function setup() {
  const ram = new Uint8Array(1 << 16);
  const memory = guestMemoryOver(ram);
  const answers: [number, number][] = [];
  const now = { t: 0 };
  const events = new VirtioIommuEventQueue(memory, (c, code) => answers.push([c, code]), { now: () => now.t }, 1000);
  return { ram, events, answers, now };
}
function pageResp(endpoint: number, pasid: number | undefined, grpid: number, code: number): Uint8Array {
  const b = new Uint8Array(32);
  const v = new DataView(b.buffer);
  b[0] = 7;
  v.setUint32(4, endpoint, true);
  v.setUint32(8, pasid ?? 0, true);
  v.setUint32(12, grpid, true);
  v.setUint32(16, code, true);
  v.setUint32(20, pasid === undefined ? 0 : 1, true);
  return b;
}

Deno.test("virtio faults: a fault report in the spec's layout, in the buffer the guest posted; none posted: lost", () => {
  const { ram, events } = setup();
  assert.equal(
    events.report({ reason: VIRTIO_FAULT.R_MAPPING, endpoint: 9, address: 0xdead_b000n, read: false, write: true }),
    false,
  );
  events.addBuffer(0x1000, 24);
  events.addBuffer(0x2000, 8); // too small: never used
  assert.ok(
    events.report({ reason: VIRTIO_FAULT.R_MAPPING, endpoint: 9, address: 0xdead_b000n, read: false, write: true }),
  );
  const v = new DataView(ram.buffer, 0x1000);
  assert.equal(v.getUint8(0), 2);
  assert.equal(v.getUint32(4, true), VIRTIO_FAULT.F_WRITE | VIRTIO_FAULT.F_ADDRESS);
  assert.equal(v.getUint32(8, true), 9);
  assert.equal(v.getBigUint64(16, true), 0xdead_b000n);
  assert.equal(events.telemetry.lost, 1);
});

Deno.test("virtio faults: a page request and the drafted PAGE_RESP: answered once, refusals as statuses", () => {
  const { ram, events, answers, now } = setup();
  events.addBuffer(0x1000, 24);
  events.addBuffer(0x1100, 24);
  assert.ok(
    events.pageRequest({
      rid: 3,
      pasid: 5,
      page: 0x7f000,
      read: true,
      write: false,
      exec: false,
      priv: false,
      lastInGroup: true,
      grpid: 0x42,
      cookie: 91,
    }),
  );
  const v = new DataView(ram.buffer, 0x1000);
  assert.equal(v.getUint8(0), VIRTIO_FAULT.R_PAGE_REQ);
  assert.equal(
    v.getUint32(4, true),
    VIRTIO_FAULT.F_READ | VIRTIO_FAULT.F_ADDRESS | VIRTIO_FAULT.F_PASID | VIRTIO_FAULT.F_LAST,
  );
  assert.equal(v.getUint32(12, true), 5);
  assert.equal(v.getBigUint64(16, true), (0x7f000n << 12n) | 0x42n);
  const hooks = { pageResponse: (r: Parameters<typeof events.pageResponse>[0]) => events.pageResponse(r) };
  const relay = { submit: () => 0 };
  assert.equal(handleVirtioIommuRequest(pageResp(3, 5, 0x41, 0), hooks, relay), S.NOENT, "no such group");
  assert.equal(handleVirtioIommuRequest(pageResp(3, 5, 0x42, 0), hooks, relay), S.OK);
  assert.equal(handleVirtioIommuRequest(pageResp(3, 5, 0x42, 0), hooks, relay), S.INVAL, "answered twice");
  assert.equal(handleVirtioIommuRequest(pageResp(3, 5, 0x242, 0), hooks, relay), S.INVAL, "grpid past 9 bits");
  assert.ok(
    events.pageRequest({
      rid: 3,
      pasid: 6,
      page: 1,
      read: true,
      write: false,
      exec: false,
      priv: false,
      lastInGroup: true,
      grpid: 1,
      cookie: 92,
    }),
  );
  now.t = 5000;
  assert.equal(events.expire(), 1);
  assert.deepEqual(answers, [[91, 0], [92, 1]]);
  // No buffer left: the request is answered INVALID at once.
  assert.equal(
    events.pageRequest({
      rid: 3,
      pasid: 6,
      page: 2,
      read: true,
      write: false,
      exec: false,
      priv: false,
      lastInGroup: true,
      grpid: 2,
      cookie: 93,
    }),
    false,
  );
  assert.deepEqual(answers.at(-1), [93, 1]);
});

Deno.test("virtio faults: 100,000 random PAGE_RESP buffers: statuses only, only pending requests answered", () => {
  const rnd = prng(17);
  const { events, answers } = setup();
  const hooks = { pageResponse: (r: Parameters<typeof events.pageResponse>[0]) => events.pageResponse(r) };
  const relay = { submit: () => 0 };
  const open = new Set<number>();
  for (let i = 0; i < 100_000; i++) {
    if (i % 100 === 0) {
      events.addBuffer(0x1000, 24);
      if (
        events.pageRequest({
          rid: 3,
          pasid: 5,
          page: i,
          read: true,
          write: false,
          exec: false,
          priv: false,
          lastInGroup: true,
          grpid: rnd(4),
          cookie: i,
        })
      ) open.add(i);
    }
    const b = rnd(2) ? pageResp(3, rnd(2) ? 5 : undefined, rnd(6), rnd(4)) : new Uint8Array(32).map(() => rnd(256));
    if (rnd(2)) b[0] = 7;
    const s = handleVirtioIommuRequest(b, hooks, relay);
    assert.ok(Object.values(S).includes(s as never));
  }
  const cookies = answers.map(([c]) => c);
  assert.equal(new Set(cookies).size, cookies.length, "no request answered twice");
  assert.ok(cookies.every((c) => open.has(c)));
  assert.ok(cookies.length > 0);
});
