import assert from "node:assert/strict";
import {
  decodeSvmBind2017,
  decodeTlbInvalidate2017,
  encodeSvmBind2017,
  encodeTlbInvalidate2017,
} from "../../lib/compile/wire2017.ts";
import { type InvalidateRequest, PAGE_SPACE, RequestError } from "../../lib/request/request.ts";
import { UapiError, VFIO_IOMMU_SVM_BIND_TASK, VFIO_IOMMU_TLB_INVALIDATE } from "../../lib/uapi/mod.ts";

Deno.test("wire2017: the posted layout — scope PASID 1<<0, VADDR 1<<1; byte vaddr/size; ioctls VFIO_BASE + 22/23", () => {
  const b = encodeTlbInvalidate2017({
    op: "invalidate",
    domain: 1,
    scope: { kind: "pasid-range", pasid: 5, firstPage: 0x7f000, pages: 512 },
    leaf: true,
  });
  const v = new DataView(b.buffer);
  assert.deepEqual([v.getUint32(0, true), v.getUint32(4, true), v.getUint32(8, true), v.getUint32(12, true)], [
    32,
    3,
    2,
    5,
  ]);
  assert.equal(v.getBigUint64(16, true), 0x7f00_0000n);
  assert.equal(v.getBigUint64(24, true), 0x20_0000n);
  assert.equal(VFIO_IOMMU_SVM_BIND_TASK.request, 0x3b7a);
  assert.equal(VFIO_IOMMU_TLB_INVALIDATE.request, 0x3b7b);
});

Deno.test("wire2017: random invalidations round-trip; hints travel in the vendor tail", () => {
  let seed = 77;
  const rnd = (n: number) => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) % n;
  for (let i = 0; i < 5000; i++) {
    const first = rnd(4) === 0 ? PAGE_SPACE - 1 - rnd(10) : rnd(1 << 30);
    const pages = 1 + rnd(Math.min(PAGE_SPACE - first, 1 << 20));
    const pasid = rnd(1 << 20);
    const kind = rnd(4);
    const scope = kind === 0
      ? { kind: "all" as const }
      : kind === 1
      ? { kind: "pasid" as const, pasid }
      : kind === 2
      ? { kind: "range" as const, firstPage: first, pages }
      : { kind: "pasid-range" as const, pasid, firstPage: first, pages };
    const hints = rnd(3) === 0 ? { global: rnd(2) === 0, ttl: 1 + rnd(3) } : undefined;
    const r: InvalidateRequest = {
      op: "invalidate",
      domain: 9,
      scope,
      noPasid: (kind === 0 || kind === 2) && rnd(2) === 0,
      leaf: rnd(2) === 0,
      ...(hints ? { hints } : {}),
    };
    const bytes = encodeTlbInvalidate2017(r);
    assert.equal(bytes.length, hints ? 48 : 32);
    assert.deepEqual(decodeTlbInvalidate2017(bytes, 9), r);
  }
  // The whole range is the whole space (its 2^64-byte size does not fit a u64).
  const whole = encodeTlbInvalidate2017({
    op: "invalidate",
    domain: 1,
    scope: { kind: "range", firstPage: 0, pages: PAGE_SPACE },
  });
  assert.deepEqual(decodeTlbInvalidate2017(whole, 1).scope, { kind: "all" });
});

Deno.test("wire2017: unaligned byte ranges widen to whole pages; wrapping ones are refused", () => {
  const b = new Uint8Array(32);
  const v = new DataView(b.buffer);
  v.setUint32(0, 32, true);
  v.setUint32(4, 2, true);
  v.setBigUint64(16, 0x1ffen, true);
  v.setBigUint64(24, 4n, true);
  assert.deepEqual(decodeTlbInvalidate2017(b, 1).scope, { kind: "range", firstPage: 1, pages: 2 });
  v.setBigUint64(16, 0xffff_ffff_ffff_f000n, true);
  v.setBigUint64(24, 0x2000n, true);
  assert.throws(() => decodeTlbInvalidate2017(b, 1), (e) => e instanceof RequestError && e.reason === "range-wraps");
});

Deno.test("wire2017: hostile bytes give only typed errors", () => {
  let seed = 4242;
  const rnd = (n: number) => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) % n;
  let accepted = 0;
  const base = encodeTlbInvalidate2017({
    op: "invalidate",
    domain: 1,
    scope: { kind: "pasid-range", pasid: 1, firstPage: 1, pages: 1 },
    hints: { ttl: 2 },
  });
  for (let i = 0; i < 100_000; i++) {
    const b = rnd(2) ? base.slice(0, rnd(4) === 0 ? rnd(60) : 48) : new Uint8Array(rnd(60));
    for (let k = rnd(4); k > 0 && b.length; k--) b[rnd(b.length)] = rnd(256);
    try {
      decodeTlbInvalidate2017(b, 1);
      accepted++;
    } catch (e) {
      if (!(e instanceof UapiError || e instanceof RequestError)) throw new Error(`seed 4242 input ${i}: untyped ${e}`);
    }
  }
  assert.ok(accepted > 0);
});

Deno.test("wire2017: VT-d binds round-trip through vfio_device_svm; bad ones are typed errors", () => {
  const bind = {
    op: "bind" as const,
    domain: 2,
    pasid: 7,
    table: {
      format: "vtd-s1" as const,
      tableAddress: 0x1234_5000,
      addressWidth: 57 as const,
      sre: true,
      eafe: false,
      wpe: true,
    },
  };
  const bytes = encodeSvmBind2017(bind);
  assert.deepEqual(decodeSvmBind2017(bytes, 2), bind);
  const rid = encodeSvmBind2017({ ...bind, pasid: "rid" });
  assert.equal(decodeSvmBind2017(rid, 2).pasid, "rid");
  const bad = bytes.slice();
  bad[4] = 1; // BIND_PASIDTBL instead of BIND_PGTABLE
  assert.throws(() => decodeSvmBind2017(bad, 2), UapiError);
  assert.throws(() => decodeSvmBind2017(bytes.subarray(0, 20), 2), UapiError);
  assert.throws(() => encodeSvmBind2017({ ...bind, table: { format: "smmuv3", ste: [0n, 0n], asid: 1 } }), UapiError);
  // iommu-relay's own format 2 carries the selftest mock's table.
  const mock = { ...bind, table: { format: "selftest" as const, iotlb: 0xbadbeef } };
  assert.deepEqual(decodeSvmBind2017(encodeSvmBind2017(mock), 2), mock);
});
