import assert from "node:assert/strict";
import { io, ioc, ior, iow, iowr, UAPI } from "../../lib/uapi/mod.ts";

Deno.test("ioctl: asm-generic encoding, including requests above 2^31", () => {
  assert.equal(io(0x3b, 0x80), 0x3b80);
  assert.equal(iowr(0xae, 0x02, 4), 0xc004ae02);
  assert.equal(ior(0xae, 0x02, 4), 0x8004ae02);
  assert.equal(iow(0xae, 0x46, 32), 0x4020ae46);
  assert.ok(ior(0xae, 0x02, 4) > 2 ** 31);
  assert.throws(() => ioc(0, 0x100, 0, 0), RangeError);
  assert.throws(() => ioc(0, 0x3b, 0, 0x4000), RangeError);
});

Deno.test("ioctl: every registered ioctl is unique and consistent with its struct", () => {
  const seen = new Set<number>();
  for (const i of UAPI.ioctls) {
    assert.ok(!seen.has(i.request), `${i.name} duplicates a request number`);
    seen.add(i.request);
    const type = i.request >>> 8 & 0xff;
    if (type === 0xae) {
      // KVM: classic _IOR/_IOW, the struct size is in the request (bits 29:16), not in the struct.
      assert.equal((i.request >>> 16) & 0x3fff, i.struct?.size ?? 0, `${i.name}'s encoded size`);
      continue;
    }
    // iommufd and VFIO: _IO on ';', the struct carries its own size (extensible structs).
    assert.equal(type, 0x3b, `${i.name} is not on ';'`);
    assert.ok(i.struct === undefined || i.struct.sizeField !== undefined, `${i.name}'s struct has no size field`);
  }
});
