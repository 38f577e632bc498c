// The fuzz targets: every guest-facing decoder and every uAPI decoder, with a corpus of valid inputs each. Shared by
// tests/testing/fuzz_test.ts (bounded, per CI run) and tools/fuzz.ts (`deno task fuzz`, long).
import type { FuzzTarget } from "../lib/testing/fuzz.ts";
import { decodeVtdDescriptor, VtdDescriptorError } from "../lib/frontends/vtd/descriptors.ts";
import { vtdIotlb, vtdPasidCache, vtdPasidIotlb, vtdWait, writeVtdDescriptor } from "../lib/frontends/vtd/encode.ts";
import { decodeVtdPasidEntry, encodeVtdPasidEntry, VtdPasidEntryError } from "../lib/frontends/vtd/pasid.ts";
import { decodeSmmuCommand, SmmuCommandError } from "../lib/frontends/smmuv3/commands.ts";
import { decodeVirtioIommuRequest, handleVirtioIommuRequest } from "../lib/frontends/virtio/iommu.ts";
import {
  decodeSvmBind2017,
  decodeTlbInvalidate2017,
  encodeSvmBind2017,
  encodeTlbInvalidate2017,
} from "../lib/compile/wire2017.ts";
import { RequestError } from "../lib/request/request.ts";
import { UAPI, UapiError } from "../lib/uapi/mod.ts";

const vtdCorpus = (size: 16 | 32) =>
  [
    vtdIotlb(1, { page: 0x40, am: 5 }),
    vtdIotlb(2, "domain"),
    vtdPasidIotlb(1, 5, { page: 0x7f000, am: 9, leaf: true }),
    vtdPasidIotlb(3, 7),
    vtdPasidCache(2, 5),
    vtdWait(0x3000, 0xcafe, { fence: true }),
  ].map((w) => {
    const b = new Uint8Array(size);
    writeVtdDescriptor(b, 0, size, w);
    return b;
  });

function smmuCorpus(): Uint8Array[] {
  // TLBI_NH_VA (0x12), TLBI_NH_ASID (0x11), CMD_SYNC (0x46), CFGI_CD (0x05), ATC_INV (0x40): opcode in byte 0.
  return [0x12, 0x11, 0x46, 0x05, 0x40, 0x30].map((op) => {
    const b = new Uint8Array(16);
    b[0] = op;
    new DataView(b.buffer).setUint32(8, 0x7f000 << 12 >>> 0, true);
    return b;
  });
}

function virtioCorpus(): Uint8Array[] {
  const sized = (type: number, size: number) => {
    const b = new Uint8Array(size);
    b[0] = type;
    new DataView(b.buffer).setUint32(4, 7, true);
    return b;
  };
  return [sized(1, 24), sized(2, 24), sized(3, 40), sized(4, 32), sized(5, 24), sized(6, 48)];
}

const noHooks = { map: () => 0, unmap: () => 0, attach: () => 0, detach: () => 0 };
const relay = { submit: () => 0 };

/** Every target, with its share of a budget (weights sum to 1). */
export function fuzzTargets(): { target: FuzzTarget; weight: number }[] {
  const list: { target: FuzzTarget; weight: number }[] = [
    {
      weight: 0.15,
      target: {
        name: "VT-d descriptors, 128-bit",
        sizes: [16],
        corpus: vtdCorpus(16),
        run: (b) => void decodeVtdDescriptor(b, 0, 16),
        typed: (e) => e instanceof VtdDescriptorError,
      },
    },
    {
      weight: 0.15,
      target: {
        name: "VT-d descriptors, 256-bit",
        sizes: [32],
        corpus: vtdCorpus(32),
        run: (b) => void decodeVtdDescriptor(b, 0, 32),
        typed: (e) => e instanceof VtdDescriptorError,
      },
    },
    {
      weight: 0.2,
      target: {
        name: "SMMUv3 commands",
        sizes: [16],
        corpus: smmuCorpus(),
        run: (b) => void decodeSmmuCommand(b, 0),
        typed: (e) => e instanceof SmmuCommandError,
      },
    },
    {
      weight: 0.15,
      target: {
        name: "virtio-iommu requests (decode + handle)",
        sizes: [4, 24, 32, 40, 48, 64],
        corpus: virtioCorpus(),
        run: (b) => {
          decodeVirtioIommuRequest(b);
          handleVirtioIommuRequest(b.slice(), noHooks, relay); // statuses only: nothing may throw
        },
        typed: () => false,
      },
    },
    {
      weight: 0.08,
      target: {
        name: "VT-d PASID table entries",
        sizes: [64],
        corpus: [
          encodeVtdPasidEntry({ did: 2, firstStagePage: 0x300 }),
          encodeVtdPasidEntry({ did: 1, firstStagePage: 1, addressWidth: 57, nested: true }),
        ],
        run: (b) => void decodeVtdPasidEntry(b, 0),
        typed: (e) => e instanceof VtdPasidEntryError,
      },
    },
    {
      weight: 0.07,
      target: {
        name: "2017 vfio_iommu_tlb_invalidate",
        sizes: [32, 48],
        corpus: [
          encodeTlbInvalidate2017({
            op: "invalidate",
            domain: 1,
            scope: { kind: "pasid-range", pasid: 5, firstPage: 0x7f000, pages: 512 },
            leaf: true,
          }),
          encodeTlbInvalidate2017({ op: "invalidate", domain: 1, scope: { kind: "all" } }),
        ],
        run: (b) => void decodeTlbInvalidate2017(b, 1),
        typed: (e) => e instanceof UapiError || e instanceof RequestError,
      },
    },
    {
      weight: 0.05,
      target: {
        name: "2017 vfio_device_svm bind",
        sizes: [40, 48, 64],
        corpus: [
          encodeSvmBind2017({
            op: "bind",
            domain: 1,
            pasid: 5,
            table: { format: "vtd-s1", tableAddress: 0x1000, addressWidth: 48 },
          }),
        ],
        run: (b) => void decodeSvmBind2017(b, 1),
        typed: (e) => e instanceof UapiError || e instanceof RequestError,
      },
    },
  ];
  // Every uAPI struct the kernel writes back or the broker reads: its validating decoder.
  const structs = UAPI.structs;
  for (const s of structs) {
    list.push({
      weight: 0.15 / structs.length,
      target: {
        name: `uAPI ${s.name}`,
        sizes: [s.size, s.minSize ?? s.size, Math.max(0, s.size - 1), s.size + 8],
        corpus: [new Uint8Array(s.size)],
        run: (b) => void s.decode(b),
        typed: (e) => e instanceof UapiError,
      },
    });
  }
  return list;
}
