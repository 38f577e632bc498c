// virtio-iommu MAP/UNMAP through the front end onto a shadowed domain (the same IOAS path as invalidations).
import assert from "node:assert/strict";
import { handleVirtioIommuRequest, VirtioIommuStatus as S } from "../../../lib/frontends/virtio/iommu.ts";
import { shadowMapHooks } from "../../../lib/frontends/virtio/shadow.ts";
import { ShadowDomain } from "../../../lib/shadow/domain.ts";
import { ModelIoas } from "../../../lib/shadow/model_ioas.ts";

const RAM = 1 << 22;
const relay = { submit: () => 0 };

function map(domain: number, virtStart: bigint, virtEnd: bigint, physStart: bigint, flags: number): Uint8Array {
  const b = new Uint8Array(40);
  const v = new DataView(b.buffer);
  b[0] = 3;
  v.setUint32(4, domain, true);
  v.setBigUint64(8, virtStart, true);
  v.setBigUint64(16, virtEnd, true);
  v.setBigUint64(24, physStart, true);
  v.setUint32(32, flags, true);
  return b;
}

function unmap(domain: number, virtStart: bigint, virtEnd: bigint): Uint8Array {
  const b = new Uint8Array(32);
  const v = new DataView(b.buffer);
  b[0] = 4;
  v.setUint32(4, domain, true);
  v.setBigUint64(8, virtStart, true); // struct virtio_iommu_req_unmap: virt_start at 8, virt_end at 16
  v.setBigUint64(16, virtEnd, true);
  return b;
}

Deno.test("virtio shadow: MAP/UNMAP reach the IOAS; overlaps, partial unmaps, MMIO and foreign memory get their status", () => {
  const ioas = new ModelIoas();
  const domain = new ShadowDomain({ read: () => new Uint8Array(4096) }, RAM, ioas);
  const hooks = shadowMapHooks((d) => (d === 7 ? domain : undefined));
  const run = (b: Uint8Array) => handleVirtioIommuRequest(b, hooks, relay);
  assert.equal(run(map(7, 0x10_0000n, 0x10_7fffn, 0x20_0000n, 3)), S.OK);
  assert.deepEqual(ioas.lookup(0x107), { gpaPage: 0x207, read: true, write: true });
  assert.equal(run(map(7, 0x10_4000n, 0x10_4fffn, 0x30_0000n, 1)), S.INVAL, "overlap");
  assert.equal(run(map(7, 0x20_0000n, 0x20_0fffn, BigInt(RAM), 1)), S.RANGE, "not guest RAM");
  assert.equal(run(map(7, 0x20_0000n, 0x20_0fffn, 0x1000n, 4 | 1)), S.UNSUPP, "MMIO");
  assert.equal(run(map(7, 0x20_0800n, 0x20_0fffn, 0x1000n, 1)), S.INVAL, "unaligned");
  assert.equal(run(map(7, 0x20_0000n, 0x20_0fffn, 0x1000n, 0)), S.INVAL, "no permission");
  assert.equal(run(map(9, 0x20_0000n, 0x20_0fffn, 0x1000n, 1)), S.NOENT, "no such domain");
  assert.equal(run(unmap(7, 0x10_1000n, 0x10_1fffn)), S.RANGE, "partial: nothing unmapped");
  assert.equal(ioas.areas.size, 1);
  assert.equal(run(unmap(7, 0x0n, 0xff_ffffn)), S.OK);
  assert.equal(ioas.areas.size, 0);
  ioas.failNext = { op: "map", errno: 12 };
  assert.equal(run(map(7, 0x10_0000n, 0x10_0fffn, 0x1000n, 1)), S.NOMEM);
  assert.equal(ioas.areas.size, 0);
  assert.equal(domain.areas.size, 0, "a failed map is not recorded");
});
