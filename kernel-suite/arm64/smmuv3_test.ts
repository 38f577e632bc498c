// The project's SMMUv3 paths against Linux 7.3's arm-smmu-v3 driver (QEMU's nested SMMUv3, arm64 VM): hardware info,
// the iommufd objects the device layer makes, and every invalidation command the relay emits — each shown effective
// by edu's DMA: a stage-1 change without invalidation still reaches the old page, after the relay's commands the new
// one. Run with `deno task test:kernel --kernels arm64-7.3`.
import assert from "node:assert/strict";
import { KernelError } from "../../lib/kernel/mod.ts";
import { EntryWriter } from "../../lib/compile/entries.ts";
import { decodeSmmuTlbi, SmmuOpcode, writeCfgiCd } from "../../lib/compile/smmuv3.ts";
import { RequestError } from "../../lib/request/request.ts";
import { Errno } from "../../lib/uapi/errno.ts";
import { HwCapabilities, VeventqConstants } from "../../lib/uapi/mod.ts";
import {
  CD_TABLE,
  dataPage,
  guestSte,
  smmuRig,
  smmuTest,
  Stage1Tables,
  staleThenFixed,
  VA_BASE,
  VSID,
  writeCd,
} from "./smmu.ts";

const O = SmmuOpcode;
const PAGE = 4096;

smmuTest(
  "GET_HW_INFO decoded; nesting parent, vIOMMU, vDEVICE, vEVENTQ, nested HWPT; DMA through both stages",
  async () => {
    await using rig = await smmuRig();
    const caps = rig.dev.capabilities;
    assert.equal(caps.iommu.kind, "smmuv3");
    if (caps.iommu.kind !== "smmuv3") return;
    console.log(
      `SMMUv3 IDR0..5 ${caps.iommu.idr.map((r) => `0x${r.toString(16)}`).join(" ")}, ` +
        `capabilities 0x${caps.hwCapabilities.toString(16)}, PASID bits ${caps.maxPasidLog2}`,
    );
    assert.ok(caps.iommu.s1p && caps.iommu.s2p, "QEMU 10's SMMUv3 on virt: stage 1 and stage 2 (nesting)");
    assert.ok(caps.iommu.ril, "IDR3.RIL: range invalidation");
    assert.equal(caps.iommu.ats, false, "QEMU's SMMU has no ATS (IDR0.ATS)");
    assert.ok(
      (caps.hwCapabilities & BigInt(HwCapabilities.values.IOMMU_HW_CAP_PCI_ATS_NOT_SUPPORTED)) !== 0n,
      "edu has no ATS: the kernel says PCI_ATS_NOT_SUPPORTED",
    );
    // The objects: the device is on a nested HWPT of the vIOMMU, over a nesting parent.
    const nested = rig.dev.boundTo("rid")!;
    assert.ok(nested > 0 && nested !== rig.dev.parentHwptId && rig.viommuId !== rig.dev.parentHwptId);
    assert.equal(rig.dev.vdevice?.virtId, VSID);
    assert.deepEqual(rig.guest.probedFormats, ["smmuv3"], "the zero-entry probe went to the vIOMMU and was accepted");
    using veventq = rig.iommufd.allocVeventq(rig.viommuId, VeventqConstants.values.IOMMU_VEVENTQ_TYPE_ARM_SMMUV3, 64);
    assert.ok(veventq.id > 0);
    // DMA through stage 1 (the guest's tables) and stage 2 (the IOAS): edu writes and reads the pages the CD maps.
    await rig.loadPatterns();
    rig.tables.map(VA_BASE, dataPage(0));
    await rig.edu.write(VA_BASE, 5 * 64, 64);
    assert.ok(rig.holds(dataPage(0), 5), "edu's write landed where stage 1 + stage 2 put it");
    rig.ram.set(rig.pattern(9), dataPage(0) + 128);
    await rig.edu.read(VA_BASE + 128, 0, 64);
    await rig.edu.write(VA_BASE + 192, 0, 64);
    assert.ok(rig.holds(dataPage(0) + 192, 9), "edu's read through both stages brought back what the guest wrote");
  },
);

/** One relay request, drained: no failure, and the opcodes it sent. */
function relay(rig: Awaited<ReturnType<typeof smmuRig>>, request: Parameters<typeof rig.dev.handle>[0]): number[] {
  rig.backend.take();
  rig.dev.handle(request);
  rig.dev.handle({ op: "sync" });
  const report = rig.dev.drain();
  assert.deepEqual(report.failures, [], JSON.stringify(report.failures));
  assert.ok(report.waits[0]?.ok, "the guest's wait completes");
  return rig.backend.take();
}

smmuTest("TLBI_NH_VA per page (no RIL): stale before, fixed after, one command per page", async () => {
  await using rig = await smmuRig({ ril: false });
  await rig.loadPatterns();
  const va = VA_BASE + 0x10 * PAGE;
  await staleThenFixed(rig, va, dataPage(1), dataPage(2), 0, () => {
    const ops = relay(rig, {
      op: "invalidate",
      domain: 1,
      scope: { kind: "range", firstPage: va / PAGE - 1, pages: 3 },
      noPasid: true,
      leaf: true,
    });
    assert.deepEqual(ops, [O.TLBI_NH_VA, O.TLBI_NH_VA, O.TLBI_NH_VA], "three pages, three TLBI_NH_VA");
  }, "TLBI_NH_VA");
});

smmuTest("TLBI_NH_VA as a range command (RIL: TG/NUM/SCALE): stale before, fixed after", async () => {
  await using rig = await smmuRig({ ril: true });
  await rig.loadPatterns();
  const va = VA_BASE + 0x20 * PAGE;
  await staleThenFixed(rig, va, dataPage(3), dataPage(4), 3, () => {
    rig.backend.take();
    rig.dev.handle({
      op: "invalidate",
      domain: 1,
      scope: { kind: "range", firstPage: va / PAGE - 1, pages: 3 },
      noPasid: true,
      leaf: true,
    });
    assert.deepEqual(rig.dev.drain().failures, []);
    const [batch] = rig.backend.batches;
    assert.deepEqual(batch.opcodes, [O.TLBI_NH_VA], "one range command for three pages");
    const tlbi = decodeSmmuTlbi(batch.entries);
    assert.deepEqual([tlbi.page, tlbi.pages, tlbi.asid, tlbi.leaf], [va / PAGE - 1, 3, rig.asid, true]);
  }, "TLBI_NH_VA range");
});

smmuTest("TLBI_NH_ASID (the RID's whole space): stale before, fixed after", async () => {
  await using rig = await smmuRig();
  await rig.loadPatterns();
  await staleThenFixed(rig, VA_BASE + 0x30 * PAGE, dataPage(5), dataPage(6), 6, () => {
    assert.deepEqual(relay(rig, { op: "invalidate", domain: 1, scope: { kind: "all" }, noPasid: true }), [
      O.TLBI_NH_ASID,
    ]);
  }, "TLBI_NH_ASID");
});

smmuTest("TLBI_NH_VAA (a range on every ASID of the domain): stale before, fixed after", async () => {
  await using rig = await smmuRig();
  await rig.loadPatterns();
  const va = VA_BASE + 0x40 * PAGE;
  await staleThenFixed(rig, va, dataPage(7), dataPage(8), 9, () => {
    assert.deepEqual(
      relay(rig, { op: "invalidate", domain: 1, scope: { kind: "range", firstPage: va / PAGE, pages: 1 } }),
      [O.TLBI_NH_VAA],
    );
  }, "TLBI_NH_VAA");
});

smmuTest("TLBI_NH_ALL (every ASID, whole space): stale before, fixed after", async () => {
  await using rig = await smmuRig();
  await rig.loadPatterns();
  await staleThenFixed(rig, VA_BASE + 0x50 * PAGE, dataPage(9), dataPage(10), 12, () => {
    assert.deepEqual(relay(rig, { op: "invalidate", domain: 1, scope: { kind: "all" } }), [O.TLBI_NH_ALL]);
  }, "TLBI_NH_ALL");
});

/**
 * The guest rewrites CD 0 in place — new tables, new ASID — which the SMMU has cached: edu still translates with the
 * old CD until `fix()` relays the CFGI.
 */
async function cdChange(
  rig: Awaited<ReturnType<typeof smmuRig>>,
  slot: number,
  fix: (newAsid: number) => void,
  what: string,
): Promise<void> {
  await rig.loadPatterns();
  const va = VA_BASE + 0x60 * PAGE;
  rig.tables.map(va, dataPage(11));
  await rig.edu.write(va, slot * 64, 64);
  assert.ok(rig.holds(dataPage(11), slot), `${what}: the first DMA goes through CD 0's tables`);
  const other = new Stage1Tables(rig.ram, 0x30_0000, 0x38_0000);
  other.map(va, dataPage(12));
  const newAsid = rig.asid + 1;
  writeCd(rig.ram, CD_TABLE, other.root, newAsid);
  await rig.edu.write(va, (slot + 1) * 64, 64);
  assert.ok(rig.holds(dataPage(11), slot + 1), `${what}: without a CFGI the SMMU keeps the cached CD`);
  fix(newAsid);
  await rig.edu.write(va, (slot + 2) * 64, 64);
  assert.ok(rig.holds(dataPage(12), slot + 2), `${what}: after the CFGI edu's DMA goes through the new CD`);
}

smmuTest("CFGI_CD: the guest rewrites the RID's CD (rebinding the same STE): stale before, fixed after", async () => {
  await using rig = await smmuRig();
  await cdChange(rig, 15, (asid) => {
    rig.backend.take();
    rig.dev.bind("rid", { format: "smmuv3", ste: guestSte(CD_TABLE), asid });
    assert.deepEqual(rig.backend.take(), [O.CFGI_CD], "the rebind is relayed as CFGI_CD (SSID 0)");
    assert.equal(rig.guest.nestedCount, 1, "same STE: the nested HWPT is kept");
  }, "CFGI_CD");
  // From now on the RID's invalidations carry the new ASID.
  const ops = relay(rig, { op: "invalidate", domain: 1, scope: { kind: "all" }, noPasid: true });
  assert.deepEqual(ops, [O.TLBI_NH_ASID]);
});

smmuTest("CFGI_CD_ALL on the vIOMMU (the stream's every CD): stale before, fixed after", async () => {
  await using rig = await smmuRig();
  await cdChange(rig, 18, () => {
    const w = new EntryWriter(16, 1);
    const at = w.append([]);
    w.view.setUint32(at, O.CFGI_CD_ALL, true);
    w.view.setUint32(at + 4, VSID, true);
    const status = rig.guest.queue.command(rig.viommuId, "smmuv3", w);
    assert.deepEqual([status.errno, status.handled], [0, 1]);
  }, "CFGI_CD_ALL");
});

smmuTest(
  "replace: the RID bound to a new STE (another CD) gets a new nested HWPT, attached over the old one",
  async () => {
    await using rig = await smmuRig();
    await rig.loadPatterns();
    const va = VA_BASE + 0x70 * PAGE;
    rig.tables.map(va, dataPage(13));
    await rig.edu.write(va, 21 * 64, 64);
    assert.ok(rig.holds(dataPage(13), 21));
    const before = rig.dev.boundTo("rid")!;
    const other = new Stage1Tables(rig.ram, 0x30_0000, 0x38_0000);
    other.map(va, dataPage(14));
    writeCd(rig.ram, CD_TABLE + 0x1000, other.root, 5);
    rig.dev.bind("rid", { format: "smmuv3", ste: guestSte(CD_TABLE + 0x1000), asid: 5 });
    const after = rig.dev.boundTo("rid")!;
    assert.notEqual(after, before);
    assert.equal(rig.guest.nestedCount, 1);
    assert.throws(() => rig.iommufd.destroy(before), (e) => e instanceof KernelError && e.errnoName === "ENOENT");
    await rig.edu.write(va, 22 * 64, 64);
    assert.ok(rig.holds(dataPage(14), 22), "the attach installed the new STE: edu translates through the new CD");
    assert.equal(rig.dev.telemetry.replaces, 1);
  },
);

smmuTest(
  "no substreams here (SSIDSIZE 0): a PASID bind is refused before any command; the driver refuses one too",
  async () => {
    await using rig = await smmuRig();
    const caps = rig.dev.capabilities;
    assert.ok(caps.iommu.kind === "smmuv3" && caps.iommu.ssidBits === 0, "QEMU's SMMUv3 has no substreams");
    assert.equal(rig.dev.pasidBits, 0);
    rig.backend.take();
    assert.throws(
      () => rig.dev.bind(5, { format: "smmuv3", ste: guestSte(CD_TABLE), asid: 77 }),
      (e) => e instanceof RequestError && e.reason === "pasid-out-of-range",
    );
    assert.deepEqual(rig.backend.take(), [], "nothing sent");
    // Why: the driver takes CFGI_CD's SSID field only from an SMMU with substreams.
    const cfgiCd = (ssid: number) => {
      const w = new EntryWriter(16, 1);
      writeCfgiCd(w, [], VSID, ssid);
      return rig.guest.queue.command(rig.viommuId, "smmuv3", w);
    };
    assert.deepEqual(cfgiCd(5), { errno: Errno.values.EIO, handled: 0 }, "CFGI_CD(SSID 5): EIO");
    assert.deepEqual(cfgiCd(0), { errno: 0, handled: 1 }, "CFGI_CD(SSID 0): taken");
  },
);
