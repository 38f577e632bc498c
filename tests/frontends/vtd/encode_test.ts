import assert from "node:assert/strict";
import { decodeVtdDescriptor } from "../../../lib/frontends/vtd/descriptors.ts";
import {
  vtdIotlb,
  vtdPasidCache,
  vtdPasidIotlb,
  vtdWait,
  writeVtdDescriptor,
} from "../../../lib/frontends/vtd/encode.ts";

const decode = (words: readonly [bigint, bigint], size: 16 | 32 = 32) => {
  const b = new Uint8Array(size).fill(0xee); // the upper half must be zeroed by the writer
  writeVtdDescriptor(b, 0, size, words);
  return decodeVtdDescriptor(b, 0, size);
};

Deno.test("vtd encode: every encoder round-trips through the decoder, 128- and 256-bit", () => {
  for (const size of [16, 32] as const) {
    const p = decode(vtdPasidIotlb(7, 0xfffff, { page: 0x7f000, am: 9, leaf: true }), size);
    assert.ok(p.type === "pasid-iotlb" && p.granularity === "page" && p.did === 7 && p.pasid === 0xfffff);
    assert.ok(p.type === "pasid-iotlb" && p.page === 0x7f000 && p.am === 9 && p.ih);
    const whole = decode(vtdPasidIotlb(1, 5), size);
    assert.ok(whole.type === "pasid-iotlb" && whole.granularity === "pasid");
    const io = decode(vtdIotlb(3, { page: 0x40, am: 5 }), size);
    assert.ok(io.type === "iotlb" && io.granularity === "page" && io.did === 3 && io.page === 0x40 && io.am === 5);
    assert.equal((decode(vtdIotlb(3, "domain"), size) as { granularity: string }).granularity, "domain");
    assert.equal((decode(vtdIotlb(3, "global"), size) as { granularity: string }).granularity, "global");
    const pc = decode(vtdPasidCache(2, 5), size);
    assert.ok(pc.type === "pasid-cache" && pc.granularity === "pasid" && pc.did === 2 && pc.pasid === 5);
    const w = decode(vtdWait(0x3000, 0xcafef00d, { fence: true, interrupt: true }), size);
    assert.ok(w.type === "wait" && w.statusWrite && w.fence && w.interrupt);
    assert.ok(w.type === "wait" && w.statusAddress === 0x3000 && w.statusData === 0xcafef00d);
  }
});
