// The policy comparison's deterministic part: host ioctl and entry counts of QEMU's, OpenVMM's and iommu-relay's
// policies on the recorded shapes (timing is a benchmark's, never a test's).
import assert from "node:assert/strict";
import { comparePolicies } from "../../lib/testing/policies.ts";
import {
  cachingWorkload,
  lazyWorkload,
  smmuWorkload,
  strictWorkload,
  svaWorkload,
} from "../../lib/testing/workloads.ts";

const rid = [{ domain: 1, pasid: "rid" as const, format: "vtd-s1" as const }];

Deno.test("policies: iommu-relay never sends more ioctls than either policy, and never under-invalidates", () => {
  const cases = [
    { w: strictWorkload({ doorbells: 2000, seed: 1 }), s: { bindings: rid } },
    { w: strictWorkload({ doorbells: 4000, vcpus: 4, gapNs: 5000, seed: 2 }), s: { bindings: rid } },
    { w: lazyWorkload({ flushes: 200, seed: 3 }), s: { bindings: rid } },
    { w: cachingWorkload({ pairs: 1000, seed: 7 }), s: { bindings: rid } },
    { w: strictWorkload({ doorbells: 1000, seed: 4 }), s: { bindings: rid, devicesPerTarget: 2 } },
    {
      w: smmuWorkload({ syncs: 100, seed: 5, pasid: 3 }),
      s: { bindings: [{ domain: 1, pasid: 3, format: "smmuv3" as const, asid: 9 }], smmuRil: true },
    },
    {
      w: svaWorkload({ munmaps: 200, seed: 6, pasid: 5 }),
      s: { bindings: [{ domain: 1, pasid: 5, format: "vtd-s1" as const }] },
    },
  ];
  for (const { w, s } of cases) {
    const [qemu, openvmm, ours] = comparePolicies(w, s);
    for (const r of [qemu, openvmm, ours]) {
      assert.equal(r.underInvalidated, 0, `${r.policy} on ${w.name}`);
      // Merging adjacent and overlapping ranges is exact: the recorded shapes need no page beyond what was asked.
      assert.deepEqual([r.overInvalidatedPages, r.escalations], [0, 0], `${r.policy} on ${w.name}`);
    }
    assert.ok(
      ours.ioctls <= qemu.ioctls && ours.ioctls <= openvmm.ioctls,
      `${w.name}: ${ours.ioctls} vs ${qemu.ioctls}/${openvmm.ioctls}`,
    );
    console.log(
      `${w.name.padEnd(36)} ioctls/1000 desc: QEMU ${qemu.ioctlsPer1000}, OpenVMM ${openvmm.ioctlsPer1000}, ` +
        `iommu-relay ${ours.ioctlsPer1000}; entries/1000: ${qemu.entriesPer1000} / ${openvmm.entriesPer1000} / ${ours.entriesPer1000}`,
    );
  }
});

Deno.test("policies: the SMMUv3 64-TLBI stream with RIL needs at least 10x fewer host entries than batch-to-sync", () => {
  const w = smmuWorkload({ syncs: 100, seed: 6, pasid: 3 });
  const [, openvmm, ours] = comparePolicies(w, {
    bindings: [{ domain: 1, pasid: 3, format: "smmuv3", asid: 9 }],
    smmuRil: true,
  });
  assert.ok(openvmm.entries >= 10 * ours.entries, `${openvmm.entries} vs ${ours.entries}`);
});

Deno.test("policies: two devices sharing a domain — QEMU fans out per device, iommu-relay does not", () => {
  const w = strictWorkload({ doorbells: 500, seed: 7 });
  const [qemu, , ours] = comparePolicies(w, { bindings: rid, devicesPerTarget: 2 });
  assert.equal(qemu.ioctls, 2 * ours.ioctls);
});

Deno.test("policies: over-invalidation is counted — an escalation to whole-space, and ranges that overshoot", () => {
  // SMMUv3 without RIL: 65 contiguous pages are past the 64-command escalation threshold, so iommu-relay sends one
  // TLBI_NH_ASID where the others send 65 TLBI_NH_VA: an escalation, counted, never an under-invalidation.
  const requests = [
    {
      op: "invalidate" as const,
      domain: 1,
      scope: { kind: "pasid-range" as const, pasid: 3, firstPage: 0x100, pages: 65 },
    },
    { op: "sync" as const },
  ];
  const w = {
    name: "65 pages",
    descriptors: 2 * 10,
    doorbells: [...Array(10).keys()].map((i) => ({ at: i * 1e6, vcpu: 0, requests })),
  };
  const [qemu, openvmm, ours] = comparePolicies(w, { bindings: [{ domain: 1, pasid: 3, format: "smmuv3", asid: 9 }] });
  assert.deepEqual([qemu.escalations, openvmm.escalations, ours.escalations], [0, 0, 10]);
  for (const r of [qemu, openvmm, ours]) assert.equal(r.underInvalidated, 0);
  assert.equal(ours.entries, 10);
  assert.equal(qemu.entries, 650);
});
