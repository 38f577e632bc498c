// A kick's UNMAPs handled as one batch (handleVirtioIommuKick + shadowMapHooks.unmapMany): fewer IOAS unmaps, and
// every request's status and the host's mappings exactly as if each request were handled alone, in order.
import assert from "node:assert/strict";
import {
  handleVirtioIommuKick,
  handleVirtioIommuRequest,
  VirtioIommuStatus as S,
} from "../../../lib/frontends/virtio/iommu.ts";
import { shadowMapHooks } from "../../../lib/frontends/virtio/shadow.ts";
import { ShadowDomain } from "../../../lib/shadow/domain.ts";
import { ModelIoas } from "../../../lib/shadow/model_ioas.ts";
import { prng } from "../../../lib/testing/workloads.ts";

const relay = { submit: () => 0 };
const PAGE = 4096n;

// Buffers in the layouts of Linux's include/uapi/linux/virtio_iommu.h.
function map(domain: number, page: number, pages: number, phys: number, flags = 1): Uint8Array {
  const b = new Uint8Array(40), v = new DataView(b.buffer);
  b[0] = 3;
  v.setUint32(4, domain, true);
  v.setBigUint64(8, BigInt(page) * PAGE, true);
  v.setBigUint64(16, BigInt(page + pages) * PAGE - 1n, true);
  v.setBigUint64(24, BigInt(phys) * PAGE, true);
  v.setUint32(32, flags, true);
  return b;
}
function unmap(domain: number, page: number, pages: number, misalign = 0n): Uint8Array {
  const b = new Uint8Array(32), v = new DataView(b.buffer);
  b[0] = 4;
  v.setUint32(4, domain, true);
  v.setBigUint64(8, BigInt(page) * PAGE + misalign, true);
  v.setBigUint64(16, BigInt(page + pages) * PAGE - 1n, true);
  return b;
}

function rig() {
  const ioas = new ModelIoas();
  const domain = new ShadowDomain({ read: () => new Uint8Array(4096) }, 1 << 30, ioas);
  const hooks = shadowMapHooks((d) => (d === 1 ? domain : undefined));
  return { ioas, domain, hooks, kick: (buffers: Uint8Array[]) => handleVirtioIommuKick(buffers, hooks, relay) };
}

Deno.test("virtio batch: a lazy kick's four UNMAPs in one IOAS unmap, then its MAP; statuses in the tails", () => {
  const r = rig();
  for (const page of [0x10, 0x13, 0x12, 0x11, 0x20]) assert.deepEqual(r.kick([map(1, page, 1, page)]), [S.OK]);
  const calls = r.ioas.calls;
  const buffers = [unmap(1, 0x10, 1), unmap(1, 0x13, 1), unmap(1, 0x12, 1), unmap(1, 0x11, 1), map(1, 0x0f, 1, 1)];
  assert.deepEqual(r.kick(buffers), [0, 0, 0, 0, 0]);
  assert.deepEqual(buffers.map((b) => b[b.length - 4]), [0, 0, 0, 0, 0]);
  assert.equal(r.ioas.calls - calls, 2, "one unmap for four pages, one map");
  assert.deepEqual(r.ioas.areas.all.map((a) => a.firstPage), [0x0f, 0x20]);
  assert.deepEqual(r.domain.areas.all, r.ioas.areas.all);
});

Deno.test("virtio batch: a merged unmap never removes what the separate UNMAPs keep", () => {
  const r = rig();
  // Areas 0x10, [0x11,0x12] (one mapping), 0x13, 0x14, and 0x18 between the UNMAPs' ranges but named by none.
  r.kick([map(1, 0x10, 1, 1), map(1, 0x11, 2, 2), map(1, 0x13, 1, 4), map(1, 0x14, 1, 5), map(1, 0x18, 1, 6)]);
  const calls = r.ioas.calls;
  // UNMAP 0x10..0x11 and 0x12..0x13 would each split [0x11,0x12]: RANGE, nothing removed by them.
  const statuses = r.kick([unmap(1, 0x10, 2), unmap(1, 0x12, 2), unmap(1, 0x14, 1), unmap(1, 0x19, 4)]);
  assert.deepEqual(statuses, [S.RANGE, S.RANGE, S.OK, S.OK]);
  assert.deepEqual(r.ioas.areas.all.map((a) => a.firstPage), [0x10, 0x11, 0x13, 0x18]);
  assert.equal(r.ioas.calls - calls, 1);
  // 0x10 and 0x13 unmapped together: [0x11,0x12] lies between them, so two calls, never one over it.
  assert.deepEqual(r.kick([unmap(1, 0x10, 1), unmap(1, 0x13, 1)]), [S.OK, S.OK]);
  assert.equal(r.ioas.calls - calls, 3);
  assert.deepEqual(r.ioas.areas.all.map((a) => a.firstPage), [0x11, 0x18]);
  // 0x11..0x12 and 0x18 with nothing between them: one call over the empty gap.
  assert.deepEqual(r.kick([unmap(1, 0x18, 1), unmap(1, 0x11, 2)]), [S.OK, S.OK]);
  assert.equal(r.ioas.calls - calls, 4);
  assert.equal(r.ioas.areas.size, 0);
});

Deno.test("virtio batch: an UNMAP then a MAP of the same range, and a second UNMAP of it, keep their order", () => {
  const r = rig();
  r.kick([map(1, 0x10, 1, 1), map(1, 0x11, 1, 2)]);
  const statuses = r.kick([
    unmap(1, 0x10, 1),
    map(1, 0x10, 1, 7), // overlaps what the UNMAP before it removes: handled after it
    unmap(1, 0x11, 1),
    unmap(1, 0x10, 2), // removes the new 0x10 mapping (0x11 is already gone)
    unmap(1, 0x10, 2), // nothing left: OK, no host call
  ]);
  assert.deepEqual(statuses, [0, 0, 0, 0, 0]);
  assert.equal(r.ioas.areas.size, 0);
});

Deno.test("virtio batch: a busy area in a merged run: the kernel stops there; its request DEVERR, the rest OK, map = host", () => {
  const r = rig();
  for (const page of [0x10, 0x11, 0x12, 0x13, 0x14]) r.kick([map(1, page, 1, page)]);
  r.ioas.busy.add(0x12);
  const statuses = r.kick([unmap(1, 0x10, 1), unmap(1, 0x12, 2), unmap(1, 0x11, 1), unmap(1, 0x14, 1)]);
  assert.deepEqual(statuses, [S.OK, S.DEVERR, S.OK, S.OK]);
  // As alone: request 2 stopped at its busy 0x12 and kept 0x13.
  assert.deepEqual(r.ioas.areas.all.map((a) => a.firstPage), [0x12, 0x13]);
  assert.deepEqual(r.domain.areas.all, r.ioas.areas.all);
  r.ioas.busy.clear();
  assert.deepEqual(r.kick([unmap(1, 0x12, 2)]), [S.OK], "a later kick finishes it");
  assert.equal(r.ioas.areas.size, 0);
});

Deno.test("virtio batch: an injected host failure of the merged call is redone area by area; a throwing hook is DEVERR", () => {
  const r = rig();
  for (const page of [0x10, 0x11, 0x12]) r.kick([map(1, page, 1, page)]);
  r.ioas.failNext = { op: "unmap", errno: 5, firstPage: 0x10 };
  assert.deepEqual(r.kick([unmap(1, 0x10, 1), unmap(1, 0x11, 2)]), [S.OK, S.OK]);
  assert.equal(r.ioas.areas.size, 0);
  assert.deepEqual(r.domain.areas.all, r.ioas.areas.all);
  const throwing = { ...r.hooks, unmapMany: () => void assert.fail("thrown") };
  const buffers = [unmap(1, 0x10, 1), unmap(1, 0x11, 1), map(1, 0x10, 1, 1)];
  assert.deepEqual(handleVirtioIommuKick(buffers, throwing, relay), [S.DEVERR, S.DEVERR, S.OK]);
});

Deno.test("virtio batch: 3,000 random kicks: statuses and host mappings equal request-by-request handling, fewer calls", () => {
  const rnd = prng(Number(Deno.env.get("IOMMU_RELAY_SEED") ?? 21));
  const alone = rig(), batched = rig();
  const aloneHooks = alone.hooks;
  let kicks = 0;
  for (let k = 0; k < 3000; k++) {
    const buffers: Uint8Array[] = [];
    for (let n = 1 + rnd(8); n > 0; n--) {
      const page = rnd(64), pages = 1 + rnd(rnd(4) === 0 ? 8 : 2);
      const domain = rnd(20) === 0 ? 2 : 1;
      if (rnd(3) === 0) buffers.push(map(domain, page, pages, 1 + rnd(1000), 1 + rnd(3)));
      else buffers.push(unmap(domain, page, pages, rnd(30) === 0 ? 0x800n : 0n));
    }
    // The same areas are busy on both hosts (an in-kernel user holding them).
    const busy = rnd(10) === 0 ? [rnd(64)] : [];
    for (const ioas of [alone.ioas, batched.ioas]) {
      ioas.busy.clear();
      for (const page of busy) ioas.busy.add(page);
    }
    const expected = buffers.map((b) => handleVirtioIommuRequest(b.slice(), aloneHooks, relay));
    const got = batched.kick(buffers);
    assert.deepEqual(got, expected, `kick ${k}`);
    assert.deepEqual(batched.ioas.areas.all, alone.ioas.areas.all, `kick ${k}: host mappings`);
    assert.deepEqual(batched.domain.areas.all, batched.ioas.areas.all, `kick ${k}: area map = host`);
    kicks++;
  }
  assert.equal(kicks, 3000);
  assert.ok(batched.ioas.calls < alone.ioas.calls, `${batched.ioas.calls} < ${alone.ioas.calls}`);
});
