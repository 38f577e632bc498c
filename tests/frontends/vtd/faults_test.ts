import assert from "node:assert/strict";
import { FSTS_FAULT, VTD_FAULT_REASON, vtdFaultFromWalk, VtdFaultRecorder } from "../../../lib/frontends/vtd/faults.ts";
import { SnapshotError } from "../../../lib/device/snapshot.ts";
import { RelayHost, relayPlugin } from "../../../lib/plugin/plugin.ts";
import { GuestPageTables } from "../../../lib/shadow/page_tables.ts";

Deno.test("vtd faults: FRCD fields where dmar_fault reads them; FRI advances; W1C of F and PFO", () => {
  let interrupts = 0;
  const rec = new VtdFaultRecorder(2, { interrupt: () => interrupts++ });
  assert.ok(
    rec.record({
      sid: 0x18,
      pasid: 0x12345,
      address: 0x1_2345_6789,
      read: true,
      reason: VTD_FAULT_REASON.READ_NOT_READABLE,
    }),
  );
  const lo = rec.readFrcd(0, 0) + rec.readFrcd(0, 1) * 2 ** 32;
  assert.equal(lo, 0x1_2345_6000, "FI: the page address");
  assert.equal(rec.readFrcd(0, 2) & 0xffff, 0x18, "SID 79:64");
  assert.equal(rec.readFrcd(0, 2) >>> 31, 1, "PP 95");
  const d3 = rec.readFrcd(0, 3);
  assert.deepEqual(
    [d3 & 0xff, (d3 >>> 8) & 0xfffff, (d3 >>> 30) & 1, d3 >>> 31],
    [6, 0x12345, 1, 1],
    "FR, PASID, T, F",
  );
  assert.equal(rec.fsts, FSTS_FAULT.PPF, "PPF, FRI = 0: the oldest pending record, where Linux's dmar_fault starts");
  assert.ok(rec.record({ sid: 0x19, address: 0, read: false, reason: 5 }));
  assert.equal(rec.record({ sid: 0x1a, address: 0, read: false, reason: 5 }), false, "record 0 still full: lost");
  assert.equal(rec.fsts & FSTS_FAULT.PFO, FSTS_FAULT.PFO);
  rec.writeFrcd(0, 3, 1 << 31); // the guest clears record 0
  rec.writeFsts(FSTS_FAULT.PFO);
  assert.ok(rec.record({ sid: 0x1b, address: 0, read: false, reason: 5 }));
  assert.equal(rec.readFrcd(0, 2) & 0xffff, 0x1b);
  assert.deepEqual(rec.telemetry, { recorded: 3, lost: 1 });
  assert.equal(interrupts, 4);
  assert.equal(rec.readFrcd(9, 0), 0, "outside the registers: 0");
});

Deno.test("vtd faults: a shadowed guest's unusable table entries become primary faults with the right reasons", () => {
  using host = RelayHost.inProcess();
  const ram = new Uint8Array(1 << 23);
  const tables = new GuestPageTables(ram, { format: "vtd-sl", levels: 4, tablesAt: 0x60_0000 });
  using dev = relayPlugin.create(host, { domain: 1, device: { kind: "model" }, mode: "shadow", shadow: { ram } });
  const rec = new VtdFaultRecorder(8);
  dev.on((e) => e.type === "shadow-fault" && rec.record(vtdFaultFromWalk(e.fault, 0x18)));
  dev.submit({
    op: "bind",
    domain: 1,
    pasid: "rid",
    table: { format: "vtd-sl", tableAddress: tables.config.root, addressWidth: 48 },
  });
  tables.map(0x10, (1 << 23) / 4096 + 1, { read: true, write: true }); // outside guest RAM
  tables.raw(0x200, 2, 0x80 | 3 | (0x401 * 4096), 0); // a misaligned 2 MiB page
  dev.submit({ op: "invalidate", domain: 1, scope: { kind: "range", firstPage: 0, pages: 0x400 }, noPasid: true });
  dev.submit({ op: "sync" });
  assert.ok(dev.drain().waits[0].ok);
  assert.equal(rec.telemetry.recorded, 2);
  const reasons = [0, 1].map((i) => rec.readFrcd(i, 3) & 0xff).toSorted((a, b) => a - b);
  assert.deepEqual(reasons, [VTD_FAULT_REASON.PAGING_ENTRY_ACCESS, VTD_FAULT_REASON.RESERVED_IN_PAGING_ENTRY]);
});

Deno.test("vtd faults: Linux's dmar_fault, reading from FRI until a clear record, sees every fault, across the wrap", () => {
  const rec = new VtdFaultRecorder(4);
  /** drivers/iommu/intel/dmar.c dmar_fault: start at FSTS.FRI, handle and clear records while F is set. */
  const linuxHandler = (): number[] => {
    const seen: number[] = [];
    if (!(rec.fsts & FSTS_FAULT.PPF)) return seen;
    let index = (rec.fsts >>> 8) & 0xff;
    while (rec.readFrcd(index, 3) >>> 31) {
      seen.push(rec.readFrcd(index, 2) & 0xffff);
      rec.writeFrcd(index, 3, 1 << 31);
      index = (index + 1) % rec.count;
    }
    return seen;
  };
  const fault = (sid: number) => assert.ok(rec.record({ sid, address: 0, read: true, reason: 6 }));
  fault(1), fault(2), fault(3);
  assert.deepEqual(linuxHandler(), [1, 2, 3]);
  fault(4), fault(5); // records 3 and 0: the hardware pointer wraps
  assert.deepEqual(linuxHandler(), [4, 5], "FRI names record 3, the first pending one");
  assert.equal(rec.fsts & FSTS_FAULT.PPF, 0);
});

Deno.test("vtd faults: the recording registers survive a snapshot; a state that does not fit is refused, nothing set", () => {
  const a = new VtdFaultRecorder(4);
  a.record({ sid: 0x10, address: 0x5000, read: false, reason: VTD_FAULT_REASON.WRITE_NOT_WRITABLE });
  a.record({ sid: 0x10, pasid: 3, address: 0x7000, read: true, reason: VTD_FAULT_REASON.PAGING_ENTRY_ACCESS });
  const saved = JSON.parse(JSON.stringify(a.saveState()));
  const b = new VtdFaultRecorder(4);
  b.prepareRestore(saved)();
  for (let i = 0; i < 4; i++) for (let d = 0; d < 4; d++) assert.equal(b.readFrcd(i, d), a.readFrcd(i, d));
  assert.equal(b.fsts, a.fsts);
  // The next fault goes where the old unit's would have: record 2.
  b.record({ sid: 0x10, address: 0x9000, read: true, reason: VTD_FAULT_REASON.READ_NOT_READABLE });
  assert.equal(b.readFrcd(2, 3) >>> 31, 1);
  const hostile = [
    { ...saved, count: 8 },
    { ...saved, words: saved.words.slice(1) },
    { ...saved, words: [...saved.words.slice(1), 2 ** 32] },
    { ...saved, next: 4 },
    { ...saved, fri: -1 },
    { ...saved, pfo: "yes" },
    null,
  ];
  const c = new VtdFaultRecorder(4);
  for (const h of hostile) {
    assert.throws(() => c.prepareRestore(h), (e) => e instanceof SnapshotError, JSON.stringify(h)?.slice(0, 60));
  }
  assert.deepEqual(c.saveState(), new VtdFaultRecorder(4).saveState(), "nothing was set");
});
