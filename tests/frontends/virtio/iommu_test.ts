import assert from "node:assert/strict";
import {
  decodeVirtioIommuRequest,
  handleVirtioIommuRequest,
  VirtioIommuStatus as S,
} from "../../../lib/frontends/virtio/iommu.ts";
import { RelayQueue } from "../../../lib/relay/queue.ts";
import { ModelHost } from "../../../lib/host/model.ts";

function req(size: number, fill: (v: DataView, b: Uint8Array) => void): Uint8Array {
  const b = new Uint8Array(size);
  fill(new DataView(b.buffer), b);
  return b;
}

Deno.test("virtio-iommu: spec layouts of ATTACH, DETACH, MAP, UNMAP, PROBE decode; the status lands in the tail", () => {
  const map = req(40, (v, b) => {
    b[0] = 3;
    v.setUint32(4, 2, true);
    v.setBigUint64(8, 0x1000n, true);
    v.setBigUint64(16, 0x1fffn, true);
    v.setBigUint64(24, 0x8000_0000n, true);
    v.setUint32(32, 3, true);
  });
  assert.deepEqual(decodeVirtioIommuRequest(map), {
    type: "map",
    domain: 2,
    virtStart: 0x1000n,
    virtEnd: 0x1fffn,
    physStart: 0x8000_0000n,
    flags: 3,
  });
  const seen: string[] = [];
  const status = handleVirtioIommuRequest(map, { map: (r) => (seen.push(`map ${r.domain}`), S.OK) }, {
    submit: () => 0,
  });
  assert.equal(status, S.OK);
  assert.deepEqual(seen, ["map 2"]);
  assert.equal(map[36], S.OK);
  const unmap = req(32, (v, b) => {
    b[0] = 4;
    v.setUint32(4, 2, true);
    v.setBigUint64(8, 0x1000n, true);
    v.setBigUint64(16, 0x1fffn, true);
  });
  assert.deepEqual(decodeVirtioIommuRequest(unmap), { type: "unmap", domain: 2, virtStart: 0x1000n, virtEnd: 0x1fffn });
  assert.equal(handleVirtioIommuRequest(unmap, {}, { submit: () => 0 }), S.UNSUPP, "no shadow layer given: UNSUPP");
  const probe = req(4 + 4 + 64 + 32 + 4, (v, b) => {
    b[0] = 5;
    v.setUint32(4, 0x10, true);
  });
  assert.deepEqual(decodeVirtioIommuRequest(probe), { type: "probe", endpoint: 0x10, propertyBytes: 32 });
});

Deno.test("virtio-iommu: the drafted INVALIDATE becomes a relay invalidation", () => {
  const host = new ModelHost();
  const t = host.createTarget("vtd-s1");
  const q = new RelayQueue(host);
  q.bind(3, 9, { targetId: t, format: "vtd-s1" });
  const inv = req(48, (v, b) => {
    b[0] = 6;
    v.setUint32(4, 1 | 2 | 4, true); // domain + PASID + VA
    v.setUint32(8, 2, true); // leaf
    v.setUint32(12, 3, true);
    v.setUint32(16, 9, true);
    v.setBigUint64(24, 0x7f00_0000n, true);
    v.setBigUint64(32, 512n, true);
    b[40] = 12;
  });
  assert.equal(handleVirtioIommuRequest(inv, {}, q), S.OK);
  assert.ok(
    host.covered(t, 0x7f000) && host.covered(t, 0x7f1ff) && !host.covered(t, 0x7f200),
    "done before the status",
  );
});

Deno.test("virtio-iommu: an INVALIDATE's status is the host's answer: a host EIO is that request's IOERR", () => {
  const host = new ModelHost();
  const t = host.createTarget("vtd-s1");
  const q = new RelayQueue(host);
  q.bind(3, 9, { targetId: t, format: "vtd-s1" });
  const inv = () =>
    req(48, (v, b) => {
      b[0] = 6;
      v.setUint32(4, 1 | 2, true); // domain + PASID
      v.setUint32(12, 3, true);
      v.setUint32(16, 9, true);
    });
  host.inject.push({ targetId: t, atEntry: 0, errno: 5, times: 10 });
  const failed = inv();
  assert.equal(handleVirtioIommuRequest(failed, {}, q), S.IOERR);
  assert.equal(failed[44], S.IOERR, "written into this request's tail");
  host.inject.length = 0;
  assert.equal(handleVirtioIommuRequest(inv(), {}, q), S.OK, "the next request is not blamed for it");
});

Deno.test("virtio-iommu: hostile buffers get a status, never an exception", () => {
  assert.equal(decodeVirtioIommuRequest(new Uint8Array(3)), S.INVAL);
  assert.equal(decodeVirtioIommuRequest(req(24, (_, b) => (b[0] = 0x7f))), S.UNSUPP);
  assert.equal(decodeVirtioIommuRequest(req(24, (_, b) => ((b[0] = 1), (b[2] = 1)))), S.INVAL, "head reserved");
  assert.equal(
    decodeVirtioIommuRequest(req(40, (v, b) => ((b[0] = 3), v.setBigUint64(8, 2n, true)))),
    S.INVAL,
    "virt_end < virt_start",
  );
  let seed = 3;
  const rnd = () => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0);
  const host = new ModelHost();
  const q = new RelayQueue(host);
  for (let i = 0; i < 100_000; i++) {
    const b = new Uint8Array(rnd() % 120);
    for (let k = 0; k < b.length; k++) b[k] = rnd() % 4 === 0 ? rnd() & 0xff : 0;
    if (b.length) b[0] = 1 + (rnd() % 7);
    const status = handleVirtioIommuRequest(b, {
      attach: () => S.OK,
      detach: () => S.OK,
      map: () => S.OK,
      unmap: () => S.OK,
    }, q);
    assert.ok(status >= 0 && status <= 8, `seed 3 input ${i}: status ${status}`);
  }
  q.drain();
});

/**
 * Every request layout as Linux's include/uapi/linux/virtio_iommu.h (and virtio 1.2 §5.13.6) declares it — offsets
 * written from the header's structs, not from the decoder: each field set to a distinct value must come back as that
 * field, each reserved byte set alone must make the request INVAL, and the status must land at the tail's first byte.
 */
const HEADER_LAYOUTS: {
  type: number;
  name: string;
  size: number;
  fields: { name: string; at: number; bytes: 4 | 8 }[];
  reserved: number[];
}[] = [
  {
    type: 1, // struct virtio_iommu_req_attach
    name: "attach",
    size: 24,
    fields: [{ name: "domain", at: 4, bytes: 4 }, { name: "endpoint", at: 8, bytes: 4 }],
    reserved: [16, 17, 18, 19],
  },
  {
    type: 2, // struct virtio_iommu_req_detach
    name: "detach",
    size: 24,
    fields: [{ name: "domain", at: 4, bytes: 4 }, { name: "endpoint", at: 8, bytes: 4 }],
    reserved: [12, 13, 14, 15, 16, 17, 18, 19],
  },
  {
    type: 3, // struct virtio_iommu_req_map
    name: "map",
    size: 40,
    fields: [
      { name: "domain", at: 4, bytes: 4 },
      { name: "virtStart", at: 8, bytes: 8 },
      { name: "virtEnd", at: 16, bytes: 8 },
      { name: "physStart", at: 24, bytes: 8 },
    ],
    reserved: [],
  },
  {
    type: 4, // struct virtio_iommu_req_unmap
    name: "unmap",
    size: 32,
    fields: [
      { name: "domain", at: 4, bytes: 4 },
      { name: "virtStart", at: 8, bytes: 8 },
      { name: "virtEnd", at: 16, bytes: 8 },
    ],
    reserved: [24, 25, 26, 27],
  },
  {
    type: 5, // struct virtio_iommu_req_probe (+ 8 bytes of properties)
    name: "probe",
    size: 4 + 4 + 64 + 8 + 4,
    fields: [{ name: "endpoint", at: 4, bytes: 4 }],
    reserved: Array.from({ length: 64 }, (_, i) => 8 + i),
  },
];

Deno.test("virtio-iommu: every request decodes at the offsets of Linux's virtio_iommu.h; reserved bytes are INVAL", () => {
  for (const layout of HEADER_LAYOUTS) {
    const b = new Uint8Array(layout.size);
    const v = new DataView(b.buffer);
    b[0] = layout.type;
    const expected: Record<string, number | bigint> = {};
    layout.fields.forEach((f, i) => {
      if (f.bytes === 4) v.setUint32(f.at, expected[f.name] = 0x100 * (i + 1) + 7, true);
      else {v.setBigUint64(
          f.at,
          expected[f.name] = 0x1000n * BigInt(i + 1) + (f.name === "virtEnd" ? 0xfffn : 0n),
          true,
        );}
    });
    if (layout.type === 3) v.setUint32(32, 3, true); // flags READ | WRITE
    const d = decodeVirtioIommuRequest(b) as unknown as Record<string, unknown>;
    assert.equal(typeof d, "object", `${layout.name}: decoded`);
    assert.equal(d.type, layout.name);
    for (const f of layout.fields) {
      assert.equal(d[f.name], expected[f.name], `${layout.name}.${f.name} at byte ${f.at}`);
    }
    for (const at of layout.reserved) {
      const bad = b.slice();
      bad[at] = 1;
      assert.equal(decodeVirtioIommuRequest(bad), S.INVAL, `${layout.name}: reserved byte ${at}`);
    }
    const status = handleVirtioIommuRequest(b.slice(), {}, { submit: () => 0 });
    const withStatus = b.slice();
    handleVirtioIommuRequest(withStatus, {}, { submit: () => 0 });
    assert.equal(withStatus[layout.size - 4], status, `${layout.name}: status in the tail's first byte`);
    if (layout.type !== 5) { // PROBE's size varies with the properties the driver leaves room for
      assert.equal(decodeVirtioIommuRequest(b.subarray(0, layout.size - 1)), S.INVAL, `${layout.name}: one byte short`);
    }
  }
});
