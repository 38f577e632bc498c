import assert from "node:assert/strict";
import { ScriptedGuest } from "../../lib/testing/guest.ts";

const table = (addr: number) => ({ format: "vtd-s1" as const, tableAddress: addr, addressWidth: 48 as const });

Deno.test("scripted guest: a VT-d descriptor stream through a plugin, checked on the host", () => {
  using guest = ScriptedGuest.inProcess();
  const nic = guest.device({ domain: 1 });
  nic.submit({ op: "bind", domain: 1, pasid: 5, table: table(0x1000) });
  nic.submit({ op: "bind", domain: 1, pasid: "rid", table: table(0x2000) });
  const r = guest.vtd()
    .pasidIotlb(1, 5, { page: 0x7f000, am: 9, leaf: true }).wait()
    .iotlb(1, { page: 0x40, am: 0 }).wait()
    .ring();
  assert.deepEqual([r.processed, r.waitsCompleted, r.statuses], [4, 2, [true, true]]);
  assert.ok(guest.invalidated(1, 5, 0x7f000) && guest.invalidated(1, 5, 0x7f1ff));
  assert.ok(guest.invalidated(1, "rid", 0x40));
  assert.equal(guest.invalidated(1, "rid", 0x7f000), false);
  guest.resetHost();
  guest.vtd().iotlb(0, "global").wait().ring();
  assert.ok(guest.invalidated(1, "rid", 12345), "a global IOTLB flush reaches every assigned domain");
});

Deno.test("scripted guest: hostile descriptors give IQE, never an exception", () => {
  using guest = ScriptedGuest.inProcess();
  guest.device({ domain: 1 });
  const r = guest.vtd().wait().raw(0xffff_ffff_ffff_ffffn, 0xffff_ffff_ffff_ffffn).wait().ring();
  assert.equal(r.error?.index, 1);
  assert.deepEqual(r.statuses, [true, false]);
});

Deno.test("scripted guest: an SMMUv3 command stream, ASIDs tied to PASIDs by the VMM", () => {
  using guest = ScriptedGuest.inProcess();
  const dev = guest.device({ domain: 2 });
  dev.submit({ op: "bind", domain: 2, pasid: 3, table: table(0x3000) });
  const smmu = guest.smmu({ asidUsers: (asid) => asid === 9 ? [{ domain: 2, pasid: 3 }] : [], domains: () => [2] });
  for (let p = 0; p < 64; p++) smmu.tlbiVa(9, 0x800 + p);
  const r = smmu.sync().ring();
  assert.deepEqual(r, { processed: 65, syncsCompleted: 1 });
  assert.ok(guest.invalidated(2, 3, 0x800) && guest.invalidated(2, 3, 0x83f));
  assert.equal(dev.telemetry.queue.ioctls, 1);
});
