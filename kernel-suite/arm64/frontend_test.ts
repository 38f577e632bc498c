// End to end through the project's SMMUv3 front end on Linux 7.3's arm-smmu-v3 driver: a scripted guest writes
// commands into its command queue (guest RAM), rings PROD, and the command-queue model relays them — through the
// device layer's queue to the real vIOMMU — before completing each CMD_SYNC; edu's DMA shows the effect. Faults go
// the other way: edu's DMA to an unmapped address makes the SMMU record F_TRANSLATION, the driver hands it to the
// vEVENTQ with the StreamID replaced by the vSID, and the event-queue model writes it into the guest's EVTQ.
import assert from "node:assert/strict";
import { SmmuOpcode } from "../../lib/compile/smmuv3.ts";
import { SmmuCommandQueue } from "../../lib/frontends/smmuv3/cmdq.ts";
import { SMMU_EVENT, SmmuEventQueue } from "../../lib/frontends/smmuv3/evtq.ts";
import { guestMemoryOver } from "../../lib/memory/guest_memory.ts";
import { IommuVeventArmSmmuv3, VeventqConstants } from "../../lib/uapi/mod.ts";
import {
  CD_TABLE,
  CMDQ,
  dataPage,
  EVTQ,
  guestSte,
  smmuRig,
  smmuTest,
  Stage1Tables,
  staleThenFixed,
  SYNC_STATUS,
  VA_BASE,
  VSID,
  writeCd,
} from "./smmu.ts";

const O = SmmuOpcode;
const PAGE = 4096;

smmuTest(
  "guest commands → command-queue model → relay → vIOMMU: edu sees TLBI_NH_VA, TLBI_NH_ASID and CFGI_CD",
  async () => {
    await using rig = await smmuRig();
    await rig.loadPatterns();
    const memory = guestMemoryOver(rig.ram);
    // The VMM's view of the guest's CDs: the ASID of CD 0, re-read on each CFGI (the guest owns it).
    let cdAsid = rig.asid;
    const cmdq = new SmmuCommandQueue(memory, rig.guest.queue, {
      asidUsers: (asid) => (asid === cdAsid ? [{ domain: 1, pasid: "rid" }] : []),
      domains: () => [1],
      configChanged: (c) => {
        if ((c.op === "cfgi-cd" || c.op === "cfgi-cd-all") && c.sid === VSID) {
          const cd = new DataView(rig.ram.buffer, rig.ram.byteOffset + CD_TABLE, 8);
          cdAsid = Number(cd.getBigUint64(0, true) >> 48n);
          rig.dev.bind("rid", { format: "smmuv3", ste: guestSte(CD_TABLE), asid: cdAsid });
        }
      },
    });
    cmdq.writeBase((1n << 62n) | BigInt(CMDQ) | 8n);
    const ring = new DataView(rig.ram.buffer, rig.ram.byteOffset + CMDQ, 256 * 16);
    const status = new DataView(rig.ram.buffer, rig.ram.byteOffset + SYNC_STATUS, 64);
    let prod = 0;
    let syncs = 0;
    const put = (w0: bigint, w1: bigint) => {
      ring.setBigUint64((prod % 256) * 16, w0, true);
      ring.setBigUint64((prod % 256) * 16 + 8, w1, true);
      prod++;
    };
    /** Commands, a CMD_SYNC with an MSI to its own status word, PROD: as Linux's driver does it. */
    const ring_ = (commands: [bigint, bigint][], expect: number[]) => {
      rig.backend.take();
      for (const [w0, w1] of commands) put(w0, w1);
      const n = ++syncs;
      put((BigInt(0x5000 + n) << 32n) | (1n << 12n) | BigInt(O.CMD_SYNC), BigInt(SYNC_STATUS + n * 4));
      const r = cmdq.writeProd(prod % 512);
      assert.equal(r.error, undefined, JSON.stringify(r.error));
      assert.equal(r.syncsCompleted, 1);
      assert.equal(status.getUint32(n * 4, true), 0x5000 + n, "the CMD_SYNC's MSI reached guest RAM");
      assert.deepEqual(rig.backend.take(), expect, "what the relay sent to the vIOMMU");
    };
    const asidWord = () => BigInt(cdAsid) << 48n;

    const va1 = VA_BASE + 0xa0 * PAGE;
    await staleThenFixed(rig, va1, dataPage(1), dataPage(2), 0, () => {
      ring_([[asidWord() | BigInt(O.TLBI_NH_VA), (BigInt(va1 / PAGE) << 12n) | 1n]], [O.TLBI_NH_VA]);
    }, "guest TLBI_NH_VA");
    const va2 = VA_BASE + 0xb0 * PAGE;
    await staleThenFixed(rig, va2, dataPage(3), dataPage(4), 3, () => {
      ring_([[asidWord() | BigInt(O.TLBI_NH_ASID), 0n]], [O.TLBI_NH_ASID]);
    }, "guest TLBI_NH_ASID");

    // The guest rewrites CD 0 (new tables, ASID 2) and says so with CFGI_CD: the VMM rebinds, the relay sends CFGI_CD.
    const va3 = VA_BASE + 0xc0 * PAGE;
    rig.tables.map(va3, dataPage(5));
    await rig.edu.write(va3, 6 * 64, 64);
    assert.ok(rig.holds(dataPage(5), 6));
    const other = new Stage1Tables(rig.ram, 0x30_0000, 0x38_0000);
    other.map(va3, dataPage(6));
    writeCd(rig.ram, CD_TABLE, other.root, 2);
    await rig.edu.write(va3, 7 * 64, 64);
    assert.ok(rig.holds(dataPage(5), 7), "stale: the SMMU still holds the old CD");
    ring_([[(BigInt(VSID) << 32n) | BigInt(O.CFGI_CD), 1n]], [O.CFGI_CD]);
    assert.equal(cdAsid, 2);
    await rig.edu.write(va3, 8 * 64, 64);
    assert.ok(rig.holds(dataPage(6), 8), "fixed: edu's DMA goes through the new CD");
    assert.equal(cmdq.telemetry.hostFailures, 0);
  },
);

smmuTest("F_TRANSLATION from edu's DMA → vEVENTQ (vSID) → the guest's event queue model", async () => {
  await using rig = await smmuRig();
  await rig.loadPatterns();
  using veventq = rig.iommufd.allocVeventq(rig.viommuId, VeventqConstants.values.IOMMU_VEVENTQ_TYPE_ARM_SMMUV3, 64);
  const evtq = new SmmuEventQueue(guestMemoryOver(rig.ram));
  evtq.writeBase((1n << 62n) | BigInt(EVTQ) | 6n); // 64 records
  const va = VA_BASE + 0xd0 * PAGE; // never mapped
  await rig.edu.write(va + 0x40, 0, 64);
  assert.ok(veventq.pollIn(5000), "the driver reported the fault on the vEVENTQ");
  const records = veventq.readEvents(new Uint8Array(64 * (IommuVeventArmSmmuv3.size + 16)), IommuVeventArmSmmuv3.size);
  assert.ok(records.length > 0);
  for (const r of records) evtq.post(r.payload);
  assert.equal(evtq.telemetry.posted, records.length);
  assert.equal(evtq.prod & 0x3f, records.length % 64);
  const v = new DataView(rig.ram.buffer, rig.ram.byteOffset + EVTQ, 32 * records.length);
  for (let i = 0; i < records.length; i++) {
    assert.equal(v.getUint32(i * 32, true) & 0xff, SMMU_EVENT.F_TRANSLATION, `record ${i}: F_TRANSLATION`);
    assert.equal(v.getUint32(i * 32 + 4, true), VSID, `record ${i}: the StreamID is the guest's vSID`);
    const input = v.getUint32(i * 32 + 16, true) + v.getUint32(i * 32 + 20, true) * 2 ** 32;
    assert.equal(Math.floor(input / PAGE), va / PAGE, `record ${i}: the faulting address is edu's`);
  }
  console.log(`edu's DMA to an unmapped page: ${records.length} F_TRANSLATION record(s), vSID 0x${VSID.toString(16)}`);
});
