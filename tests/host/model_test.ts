// The in-process host follows the 7.3 kernel's IOMMU_HWPT_INVALIDATE rules (the differential test in the kernel
// suite holds it to them); these tests pin each rule.
import assert from "node:assert/strict";
import { ModelHost } from "../../lib/host/model.ts";

function selftest(entries: [number, number][]): Uint8Array {
  const b = new Uint8Array(Math.max(1, entries.length) * 8);
  entries.forEach(([f, id], i) => {
    new DataView(b.buffer).setUint32(i * 8, f, true);
    new DataView(b.buffer).setUint32(i * 8 + 4, id, true);
  });
  return b;
}

Deno.test("model: selftest entries zero slots; a bad entry stops processing with entry_num = entries before it", () => {
  const host = new ModelHost();
  const id = host.createTarget("selftest", 7);
  const s = { errno: 0, handled: 0 };
  host.invalidate(id, "selftest", selftest([[0, 1], [0, 4], [0, 2]]), 3, s);
  assert.deepEqual(s, { errno: 22, handled: 1 });
  assert.deepEqual(host.iotlb(id), [7, 0, 7, 7]);
  host.invalidate(id, "selftest", selftest([[2, 0]]), 1, s);
  assert.deepEqual(s, { errno: 95, handled: 0 });
  host.invalidate(id, "selftest", selftest([[1, 0]]), 1, s);
  assert.deepEqual(host.iotlb(id), [0, 0, 0, 0]);
});

Deno.test("model: unknown target ENOENT, paging HWPT EINVAL (6.12: ENOENT), wrong format EINVAL, too many EINVAL", () => {
  const host = new ModelHost();
  const paging = host.createTarget("paging");
  const vtd = host.createTarget("vtd-s1");
  const s = { errno: 0, handled: 0 };
  host.invalidate(999, "selftest", selftest([[0, 0]]), 1, s);
  assert.equal(s.errno, 2);
  host.invalidate(paging, "selftest", selftest([[0, 0]]), 1, s);
  assert.equal(s.errno, 22);
  host.kernel612 = true;
  host.invalidate(paging, "selftest", selftest([[0, 0]]), 1, s);
  assert.equal(s.errno, 2);
  host.invalidate(vtd, "selftest", selftest([[0, 0]]), 1, s);
  assert.deepEqual(s, { errno: 22, handled: 0 });
  host.invalidate(vtd, "vtd-s1", new Uint8Array(24), 2 ** 19 + 1, s);
  assert.equal(s.errno, 22);
  host.invalidate(vtd, "vtd-s1", new Uint8Array(0), 0, s);
  assert.deepEqual(s, { errno: 0, handled: 0 }, "zero entries probe");
});

Deno.test("model: VT-d rules — unaligned addr EINVAL, U64_MAX with addr EINVAL, unknown flags EOPNOTSUPP", () => {
  const host = new ModelHost();
  const id = host.createTarget("vtd-s1");
  const entry = (addr: bigint, npages: bigint, flags = 0, reserved = 0) => {
    const b = new Uint8Array(24);
    const v = new DataView(b.buffer);
    v.setBigUint64(0, addr, true);
    v.setBigUint64(8, npages, true);
    v.setUint32(16, flags, true);
    v.setUint32(20, reserved, true);
    return b;
  };
  const s = { errno: 0, handled: 0 };
  host.invalidate(id, "vtd-s1", entry(0x1001n, 1n), 1, s);
  assert.equal(s.errno, 22);
  host.invalidate(id, "vtd-s1", entry(0x1000n, 0xffff_ffff_ffff_ffffn), 1, s);
  assert.equal(s.errno, 22);
  host.invalidate(id, "vtd-s1", entry(0x1000n, 1n, 2), 1, s);
  assert.equal(s.errno, 95);
  host.invalidate(id, "vtd-s1", entry(0x1000n, 1n, 0, 1), 1, s);
  assert.equal(s.errno, 95);
  host.invalidate(id, "vtd-s1", entry(0x5000n, 3n, 1), 1, s);
  assert.deepEqual(s, { errno: 0, handled: 1 });
  assert.deepEqual([4, 5, 6, 7, 8].map((p) => host.covered(id, p)), [false, true, true, true, false]);
  host.invalidate(id, "vtd-s1", entry(0n, 0xffff_ffff_ffff_ffffn), 1, s);
  assert.ok(host.covered(id, 2 ** 52 - 1));
  host.resetCoverage();
  assert.equal(host.covered(id, 5), false);
});

Deno.test("model: injected failures report the configured errno and count", () => {
  const host = new ModelHost();
  const id = host.createTarget("selftest");
  host.inject.push({ targetId: id, atEntry: 1, errno: 12, reportHandled: 0 });
  const s = { errno: 0, handled: 0 };
  host.invalidate(id, "selftest", selftest([[0, 0], [0, 1]]), 2, s);
  assert.deepEqual(s, { errno: 12, handled: 0 });
  host.invalidate(id, "selftest", selftest([[0, 0], [0, 1]]), 2, s);
  assert.deepEqual(s, { errno: 0, handled: 2 }, "consumed");
});
