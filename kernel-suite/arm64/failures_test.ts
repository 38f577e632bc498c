// Failures as Linux 7.3's arm-smmu-v3 driver reports them, and what the relay makes of them. The driver converts a
// vIOMMU batch entry by entry (the vSID to the physical SID, the VMID forced) and issues it to the SMMU in blocks of
// 63 commands; a command it cannot convert ends the call with EIO and entry_num = that command's index. The
// experiments below settle what entry_num means for the commands before it (docs/kernel-suite.md, "SMMUv3 errors").
import assert from "node:assert/strict";
import { EntryWriter } from "../../lib/compile/entries.ts";
import { SmmuOpcode, SMMUV3_DATA_TYPE } from "../../lib/compile/smmuv3.ts";
import { KernelError } from "../../lib/kernel/mod.ts";
import { sendBatch } from "../../lib/relay/send.ts";
import type { RequestFailure } from "../../lib/relay/outcome.ts";
import { CERROR, GERROR_CMDQ_ERR, SmmuCommandQueue } from "../../lib/frontends/smmuv3/cmdq.ts";
import { guestMemoryOver } from "../../lib/memory/guest_memory.ts";
import { Errno } from "../../lib/uapi/errno.ts";
import {
  CD_TABLE,
  CMDQ,
  dataPage,
  guestSte,
  smmuRig,
  smmuTest,
  STE_CONFIG,
  SYNC_STATUS,
  VA_BASE,
  VSID,
} from "./smmu.ts";

const O = SmmuOpcode;
const PAGE = 4096;
const EIO = Errno.values.EIO;
const UNKNOWN_VSID = 0x99;
/** PREFETCH_CONFIG: a real SMMUv3 command the driver does not take from user space. */
const PREFETCH_CONFIG = 0x01;

type Command = (v: DataView, at: number) => void;
const tlbiVa = (asid: number, page: number): Command => (v, at) => {
  v.setUint32(at, O.TLBI_NH_VA, true);
  v.setUint32(at + 4, asid << 16, true);
  v.setUint32(at + 8, (page % 0x10_0000) * PAGE + 1, true);
  v.setUint32(at + 12, Math.floor(page / 0x10_0000), true);
};
const cfgiCd = (vsid: number): Command => (v, at) => {
  v.setUint32(at, O.CFGI_CD, true);
  v.setUint32(at + 4, vsid, true);
  v.setUint32(at + 8, 1, true);
};
const opcodeOnly = (opcode: number, sid = 0): Command => (v, at) => {
  v.setUint32(at, opcode, true);
  v.setUint32(at + 4, sid, true);
};

function batch(commands: Command[]): Uint8Array {
  const bytes = new Uint8Array(commands.length * 16);
  const v = new DataView(bytes.buffer);
  commands.forEach((c, i) => c(v, i * 16));
  return bytes;
}

smmuTest(
  "an unknown vSID mid-batch: EIO, entry_num = its index — the commands before it in its block never ran",
  async () => {
    await using rig = await smmuRig();
    await rig.loadPatterns();
    const send = (commands: Command[]) => {
      const r = rig.iommufd.invalidateRaw(rig.viommuId, SMMUV3_DATA_TYPE, batch(commands), 16, commands.length);
      return [r, rig.iommufd.invalidateHandled];
    };
    const va = VA_BASE + 0x80 * PAGE;
    rig.tables.map(va, dataPage(1));
    await rig.edu.write(va, 0, 64);
    rig.tables.map(va, dataPage(2));
    await rig.edu.write(va, 64, 64);
    assert.ok(rig.holds(dataPage(1), 1), "stale: the SMMU's TLB still maps the old page");

    assert.deepEqual(send([cfgiCd(UNKNOWN_VSID), tlbiVa(rig.asid, va / PAGE)]), [-EIO, 0], "first entry");
    assert.deepEqual(send([tlbiVa(rig.asid, va / PAGE), cfgiCd(UNKNOWN_VSID)]), [-EIO, 1], "second entry");
    await rig.edu.write(va, 2 * 64, 64);
    assert.ok(
      rig.holds(dataPage(1), 2),
      "entry_num 1, yet entry 0 (the TLBI) never reached the SMMU: the DMA still uses the old page",
    );
    // 69 good commands, then the bad one: the first 63 (one block) were issued before the driver reached it.
    const fillers = Array.from({ length: 68 }, (_, i) => tlbiVa(rig.asid, 0x7_0000 + i));
    assert.deepEqual(send([tlbiVa(rig.asid, va / PAGE), ...fillers, cfgiCd(UNKNOWN_VSID)]), [-EIO, 69]);
    await rig.edu.write(va, 3 * 64, 64);
    assert.ok(
      rig.holds(dataPage(2), 3),
      "entry 0 was in the first block of 63, which was issued: the TLBI took effect",
    );
    console.log(
      "SMMUv3 EIO: entry_num is the failing command's index; commands of its block before it were not issued, " +
        "earlier blocks were — the count says where, not what was done",
    );
  },
);

smmuTest("a disallowed opcode: EIO with entry_num at it (PREFETCH_CONFIG first, CMD_SYNC second)", async () => {
  await using rig = await smmuRig();
  const send = (commands: Command[]) => {
    const r = rig.iommufd.invalidateRaw(rig.viommuId, SMMUV3_DATA_TYPE, batch(commands), 16, commands.length);
    return [r, rig.iommufd.invalidateHandled];
  };
  assert.deepEqual(send([opcodeOnly(PREFETCH_CONFIG, VSID), tlbiVa(rig.asid, 1)]), [-EIO, 0]);
  assert.deepEqual(send([tlbiVa(rig.asid, 1), opcodeOnly(O.CMD_SYNC)]), [-EIO, 1]);
  assert.deepEqual(send([tlbiVa(rig.asid, 1), cfgiCd(VSID)]), [0, 2], "the same batch with allowed commands");
  // ATC_INV is refused on an SMMU without ATS (QEMU's), whatever the vSID.
  assert.deepEqual(send([tlbiVa(rig.asid, 1), opcodeOnly(O.ATC_INV, VSID)]), [-EIO, 1]);
});

smmuTest(
  "the relay on an SMMUv3 EIO: the whole batch resent once, then every request failed, position unknown",
  async () => {
    {
      await using rig = await smmuRig();
      const w = new EntryWriter(16, 4);
      for (
        const [seq, command] of [[1, tlbiVa(rig.asid, 5)], [2, cfgiCd(UNKNOWN_VSID)], [3, tlbiVa(rig.asid, 6)]] as const
      ) {
        command(w.view, w.append([seq]));
      }
      const failures: RequestFailure[] = [];
      const counters = { resends: 0 };
      const calls = sendBatch(
        rig.backend.inner,
        rig.viommuId,
        "smmuv3",
        w,
        { maxEntriesPerCall: 64, transientRetries: 3 },
        { errno: 0, handled: 0 },
        failures,
        counters,
      );
      assert.equal(calls, 2, "sent, then resent whole once (the count is not trusted)");
      assert.equal(counters.resends, 1);
      assert.deepEqual(
        failures.map((f) => [f.seq, f.errnoName, f.positionUnknown, f.retrySafe]).sort(),
        [[1, "EIO", true, true], [2, "EIO", true, true], [3, "EIO", true, true]],
        "every request of the batch is reported failed: none is lost silently, the good TLBIs included",
      );
    }
  },
);

smmuTest("an invalid STE: EIO at IOMMU_HWPT_ALLOC; the device keeps its nested HWPT and translation", async () => {
  await using rig = await smmuRig();
  await rig.loadPatterns();
  const before = rig.dev.boundTo("rid");
  for (const ste of [guestSte(CD_TABLE, STE_CONFIG.s2), [guestSte(CD_TABLE)[0], guestSte(CD_TABLE)[1] | (1n << 8n)]]) {
    assert.throws(
      () => rig.dev.bind("rid", { format: "smmuv3", ste: ste as [bigint, bigint], asid: rig.asid }),
      (e) => e instanceof KernelError && e.errnoName === "EIO" && e.ioctl === "IOMMU_HWPT_ALLOC",
    );
  }
  assert.equal(rig.dev.boundTo("rid"), before);
  assert.equal(rig.guest.nestedCount, 1);
  assert.equal(rig.dev.telemetry.refused, 2);
  const va = VA_BASE + 0x90 * PAGE;
  rig.tables.map(va, dataPage(3));
  await rig.edu.write(va, 4 * 64, 64);
  assert.ok(rig.holds(dataPage(3), 4), "edu still translates through the STE it had");
});

/** The guest's command queue over guest RAM, feeding the rig's relay queue. */
function commandQueue(rig: Awaited<ReturnType<typeof smmuRig>>, configChanged?: () => void) {
  const memory = guestMemoryOver(rig.ram);
  const cmdq = new SmmuCommandQueue(memory, rig.guest.queue, {
    asidUsers: (asid) =>
      asid === rig.asid ? [{ domain: 1, pasid: "rid" }] : asid === 9 ? [{ domain: 2, pasid: "rid" }] : [],
    domains: () => [1, 2],
    configChanged,
  });
  cmdq.writeBase((1n << 62n) | BigInt(CMDQ) | 8n);
  const v = new DataView(rig.ram.buffer, rig.ram.byteOffset + CMDQ, 256 * 16);
  const put = (slot: number, w0: bigint, w1: bigint) => {
    v.setBigUint64(slot * 16, w0, true);
    v.setBigUint64(slot * 16 + 8, w1, true);
  };
  const sync = (slot: number, n: number) =>
    put(slot, (BigInt(0xa0 + n) << 32n) | (1n << 12n) | BigInt(O.CMD_SYNC), BigInt(SYNC_STATUS + n * 4));
  const status = (n: number) => new DataView(rig.ram.buffer, rig.ram.byteOffset + SYNC_STATUS).getUint32(n * 4, true);
  return { cmdq, put, sync, status };
}

smmuTest("through the guest's command queue: a relay failure stops it with CERROR_ABT at that command", async () => {
  await using rig = await smmuRig();
  // A route the driver refuses: ATS claimed (past the device layer, which refuses that claim here) on an SMMU without
  // ATS, so its TLBIs bring ATC_INVs, each EIO; and a vSID the kernel does not know.
  rig.guest.queue.bind(2, "rid", {
    targetId: rig.viommuId,
    format: "smmuv3",
    vdevId: UNKNOWN_VSID,
    asid: 9,
    ats: true,
  });
  const { cmdq, put, sync, status } = commandQueue(rig);
  put(0, (BigInt(rig.asid) << 48n) | BigInt(O.TLBI_NH_VA), (0x123n << 12n) | 1n);
  sync(1, 1);
  put(2, (9n << 48n) | BigInt(O.TLBI_NH_VA), (0x456n << 12n) | 1n);
  sync(3, 2);
  const r = cmdq.writeProd(4);
  assert.equal(status(1), 0xa1, "the first CMD_SYNC completed: its commands reached the SMMU");
  assert.equal(r.error?.index, 2, JSON.stringify(r));
  assert.equal(r.error?.cerror, CERROR.ABT, "a host failure is CERROR_ABT: Linux retries the command");
  assert.equal(cmdq.cons, (CERROR.ABT << 24) | 2, "CONS stays at the failing command, CONS.ERR = ABT");
  assert.equal(cmdq.gerror & GERROR_CMDQ_ERR, GERROR_CMDQ_ERR);
  assert.equal(status(2), 0, "the CMD_SYNC after it did not complete");
  const report = rig.guest.queue.drain();
  assert.deepEqual(report.failures, [], "the failure went to the command queue, not left for a later drain");
  // Linux acknowledges (GERRORN) and the SMMU retries from CONS: the same route fails again, and again is reported.
  const again = cmdq.writeGerrorn(cmdq.gerror);
  assert.equal(again?.error?.index, 2);
  assert.equal(cmdq.telemetry.hostFailures, 2);
});

smmuTest("through the guest's command queue: an invalid STE on CFGI_STE is CERROR_ABT at the CFGI_STE", async () => {
  await using rig = await smmuRig();
  const { cmdq, put, sync, status } = commandQueue(rig, () => {
    rig.dev.bind("rid", { format: "smmuv3", ste: guestSte(CD_TABLE, STE_CONFIG.s2), asid: rig.asid });
  });
  put(0, (BigInt(VSID) << 32n) | 0x03n, 1n); // CFGI_STE(SID, leaf)
  sync(1, 3);
  const r = cmdq.writeProd(2);
  assert.equal(r.error?.index, 0);
  assert.equal(r.error?.cerror, CERROR.ABT);
  assert.match(r.error?.reason ?? "", /IOMMU_HWPT_ALLOC|EIO/);
  assert.equal(status(3), 0);
  assert.equal(cmdq.telemetry.sinkExceptions, 1);
});
