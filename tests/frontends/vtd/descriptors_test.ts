// Descriptor layouts as the Linux VT-d driver writes them (drivers/iommu/intel/iommu.h QI_* macros, 7.3).
import assert from "node:assert/strict";
import {
  decodeVtdDescriptor,
  VtdDescriptorError,
  VtdDescriptorScratch,
} from "../../../lib/frontends/vtd/descriptors.ts";

function desc(qw0: bigint, qw1: bigint, size: 16 | 32 = 16, qw2 = 0n, qw3 = 0n): Uint8Array {
  const b = new Uint8Array(size);
  const v = new DataView(b.buffer);
  v.setBigUint64(0, qw0, true);
  v.setBigUint64(8, qw1, true);
  if (size === 32) {
    v.setBigUint64(16, qw2, true);
    v.setBigUint64(24, qw3, true);
  }
  return b;
}

Deno.test("vtd descriptors: each type decodes from the driver's encoding", () => {
  // qi_flush_piotlb: QI_EIOTLB_PASID | QI_EIOTLB_DID | QI_EIOTLB_GRAN(QI_GRAN_PSI_PASID) | QI_EIOTLB_TYPE; addr | IH | AM
  assert.deepEqual(
    decodeVtdDescriptor(desc((5n << 32n) | (7n << 16n) | (3n << 4n) | 6n, 0x7f000000n | (1n << 6n) | 9n), 0, 16),
    {
      type: "pasid-iotlb",
      granularity: "page",
      did: 7,
      pasid: 5,
      page: 0x7f000,
      am: 9,
      ih: true,
    },
  );
  // qi_flush_iotlb: DID | DR | DW | GRAN(DMA_TLB_PSI_FLUSH) | type; addr | IH | AM
  const iotlb = decodeVtdDescriptor(
    desc((3n << 16n) | (1n << 7n) | (1n << 6n) | ((3n << 60n) >> 56n) | 2n, 0xffff_ffff_ffff_f000n),
    0,
    16,
  );
  assert.deepEqual(iotlb, {
    type: "iotlb",
    granularity: "page",
    did: 3,
    drainReads: true,
    drainWrites: true,
    page: 2 ** 52 - 1,
    am: 0,
    ih: false,
  });
  // qi_flush_context: FM | SID | DID | GRAN(DMA_CCMD_DEVICE_INVL) | type
  assert.deepEqual(
    decodeVtdDescriptor(desc((1n << 48n) | (0x10n << 32n) | (2n << 16n) | ((3n << 61n) >> 57n) | 1n, 0n), 0, 16),
    {
      type: "context-cache",
      granularity: "device",
      did: 2,
      sid: 0x10,
      fm: 1,
    },
  );
  // wait: STATUS_DATA | STATUS_WRITE | FENCE | type; status address
  assert.deepEqual(decodeVtdDescriptor(desc((0x1234n << 32n) | (1n << 6n) | (1n << 5n) | 5n, 0xabc0n), 0, 16), {
    type: "wait",
    interrupt: false,
    statusWrite: true,
    fence: true,
    pageRequestDrain: false,
    statusData: 0x1234,
    statusAddress: 0xabc0,
  });
  // pasid cache: PASID | DID | GRAN(QI_PC_PASID_SEL) | type
  assert.deepEqual(decodeVtdDescriptor(desc((9n << 32n) | (1n << 16n) | (1n << 4n) | 7n, 0n), 0, 16), {
    type: "pasid-cache",
    granularity: "pasid",
    did: 1,
    pasid: 9,
  });
  // device TLB and PASID device TLB: PFSID split over [15:12] and [63:52]
  const pfsid = 0x123;
  const dev = decodeVtdDescriptor(
    desc((BigInt(pfsid >> 4) << 52n) | (0x42n << 32n) | (31n << 16n) | (BigInt(pfsid & 0xf) << 12n) | 3n, 0x5000n | 1n),
    0,
    16,
  );
  assert.deepEqual(dev, { type: "device-tlb", sid: 0x42, pfsid, qdep: 31, page: 5, size: true });
  const pdev = decodeVtdDescriptor(
    desc(
      (7n << 32n) | (0x42n << 16n) | (BigInt(pfsid & 0xf) << 12n) | (31n << 4n) | (BigInt(pfsid >> 4) << 52n) | 8n,
      (1n << 11n) | 0x6000n,
    ),
    0,
    16,
  );
  assert.deepEqual(pdev, {
    type: "pasid-device-tlb",
    sid: 0x42,
    pfsid,
    qdep: 31,
    pasid: 7,
    global: false,
    page: 6,
    size: true,
  });
  assert.equal(decodeVtdDescriptor(desc((5n << 32n) | (1n << 4n) | 4n, 0n), 0, 16).type, "interrupt-entry-cache");
  assert.equal(
    decodeVtdDescriptor(desc((3n << 32n) | (0x10n << 16n) | (1n << 4n) | 9n, 1n << 2n), 0, 16).type,
    "page-group-response",
  );
});

Deno.test("vtd descriptors: 256-bit descriptors need zero upper halves; reserved bits and granularities are errors", () => {
  const ok = desc((2n << 4n) | 6n, 0n, 32);
  assert.equal(decodeVtdDescriptor(ok, 0, 32).type, "pasid-iotlb");
  const reason = (r: string) => (e: unknown) => e instanceof VtdDescriptorError && e.reason === r;
  assert.throws(() => decodeVtdDescriptor(desc((2n << 4n) | 6n, 0n, 32, 1n), 0, 32), reason("reserved-bits"));
  assert.throws(() => decodeVtdDescriptor(desc((2n << 4n) | 6n | (1n << 60n), 0n), 0, 16), reason("reserved-bits"));
  assert.throws(() => decodeVtdDescriptor(desc((1n << 4n) | 6n, 0n), 0, 16), reason("reserved-granularity"));
  assert.throws(() => decodeVtdDescriptor(desc(2n, 0n), 0, 16), reason("reserved-granularity"));
  assert.throws(() => decodeVtdDescriptor(desc(0n, 0n), 0, 16), reason("unknown-type"));
  assert.throws(() => decodeVtdDescriptor(desc(0xfn, 0n), 0, 16), reason("unknown-type"));
  assert.throws(
    () => decodeVtdDescriptor(desc(5n, 1n), 0, 16),
    reason("reserved-bits"),
    "status address must be dword aligned",
  );
});

Deno.test("vtd descriptors: random bytes yield a descriptor or a VtdDescriptorError, the same into a reused scratch", () => {
  let seed = 99;
  const rnd = () => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0);
  let decoded = 0;
  const scratch = new VtdDescriptorScratch();
  for (let i = 0; i < 200_000; i++) {
    const size = i % 2 ? 16 : 32;
    const b = new Uint8Array(size);
    if (rnd() % 3) b[0] = rnd() % 10; // mostly known types
    for (let k = rnd() % 6; k > 0; k--) b[rnd() % size] = rnd() & 0xff;
    let fresh;
    try {
      fresh = decodeVtdDescriptor(b, 0, size);
      decoded++;
    } catch (e) {
      if (!(e instanceof VtdDescriptorError)) throw new Error(`seed 99 input ${i}: ${e}`);
      assert.throws(() => decodeVtdDescriptor(b, 0, size, scratch), { message: (e as Error).message });
      continue;
    }
    // Into the reused scratch: the same fields, and the scratch's own object of that type.
    const reused = decodeVtdDescriptor(b, 0, size, scratch);
    assert.deepEqual(reused, fresh, `input ${i}`);
    assert.equal(reused, scratch[fresh.type]);
  }
  assert.ok(decoded > 1000);
});
