// The emulated VT-d unit without KVM: programmed as Linux's intel-iommu driver programs it, on the in-process host.
import assert from "node:assert/strict";
import {
  definePlugin,
  encodeVtdPasidDirectoryEntry,
  encodeVtdPasidEntry,
  type PluginDefinition,
  RelayHost,
  type RelayPlugin,
  relayPlugin,
  vtdPasidCache,
  vtdPasidIotlb,
  vtdWait,
  writeVtdDescriptor,
} from "../../mod.ts";
import { hostCallsCover, VTD, VTD_CAP, VTD_ECAP, VtdUnit, watchHostCalls } from "./vtd.ts";
import { MockConstants } from "../../lib/uapi/mod.ts";

const RID = 0x08; // 00:01.0
const DID = 7;
const QUEUE = 0x10000, STATUS = 0x11000, PT = 0x8000;

function setup(plugin: PluginDefinition = relayPlugin) {
  const ram = new Uint8Array(1 << 20);
  const v = new DataView(ram.buffer);
  const memory = {
    read: (a: number, n: number) => {
      if (a < 0 || a + n > ram.length) throw new RangeError(`GPA ${a}`);
      return ram.slice(a, a + n);
    },
    write: (a: number, b: Uint8Array) => ram.set(b, a),
  };
  v.setUint32(0x1000, 0x2000 | 1, true); // root entry, bus 0, devfn < 128: context table at 0x2000
  v.setUint32(0x2000 + RID * 32, 0x3000 | 1, true); // scalable-mode context entry: PASID directory at 0x3000
  ram.set(encodeVtdPasidDirectoryEntry(0x4000), 0x3000);
  ram.set(encodeVtdPasidEntry({ did: DID, firstStagePage: 5 }), 0x4000); // PASID 0 (RID_PASID), FL root 0x5000
  v.setUint32(0x5000, 0x6000 | 3, true);
  v.setUint32(0x6000, 0x7000 | 3, true);
  v.setUint32(0x7000, PT | 3, true);
  v.setUint32(PT + 8, 0x20000 | 3, true); // IOVA 0x1000 → 0x20000, RW
  const host = RelayHost.inProcess();
  const msis: [number, number][] = [];
  const unit = new VtdUnit(memory, ram.length, RID, {
    pluginFor: (did) => plugin.create(host, { domain: did, device: { kind: "model" } }),
    hostCalls: watchHostCalls(host),
  }, (a, d) => void msis.push([a, d]));
  let tail = 0;
  /** Queue descriptors and a wait, ring the doorbell; returns the wait's status word. */
  const submit = (...descriptors: (readonly [bigint, bigint])[]) => {
    for (const d of [...descriptors, vtdWait(STATUS, 0xc0de)]) {
      writeVtdDescriptor(ram, QUEUE + tail, 16, d);
      tail = (tail + 16) % 4096;
    }
    v.setUint32(STATUS, 0, true);
    unit.write(VTD.IQT, 4, tail, 0);
    return v.getUint32(STATUS, true);
  };
  // The driver's order: queue on, root table, translation on.
  unit.write(VTD.IQA, 8, QUEUE, 0);
  unit.write(VTD.GCMD, 4, 1 << 26, 0);
  unit.write(VTD.RTADDR, 8, 0x1000 | (1 << 10), 0);
  unit.write(VTD.GCMD, 4, (1 << 26) | (1 << 30), 0);
  unit.write(VTD.GCMD, 4, (1 << 26) | (1 << 31), 0);
  return { ram, v, unit, host, submit, msis };
}

Deno.test("linux-vmm vtd: CAP/ECAP say scalable mode, first stage only, QI, caching mode; GSTS follows GCMD", () => {
  const { unit } = setup();
  const [capLo, capHi] = unit.read(VTD.CAP, 8), [ecapLo, ecapHi] = unit.read(VTD.ECAP, 8);
  assert.equal(capLo + capHi * 2 ** 32, VTD_CAP);
  assert.equal(ecapLo + ecapHi * 2 ** 32, VTD_ECAP);
  const ecap = BigInt(VTD_ECAP), cap = BigInt(VTD_CAP);
  const bit = (x: bigint, b: number) => (x >> BigInt(b)) & 1n;
  assert.deepEqual([bit(ecap, 1), bit(ecap, 3), bit(ecap, 43), bit(ecap, 46), bit(ecap, 47)], [1n, 0n, 1n, 0n, 1n]);
  assert.equal(bit(cap, 7), 1n, "caching mode");
  assert.equal(unit.read(VTD.GSTS, 4)[0] >>> 0, ((1 << 31) | (1 << 30) | (1 << 26)) >>> 0, "TES, RTPS, QIES");
});

Deno.test("linux-vmm vtd: the PASID-cache invalidation binds; a translation stays cached until its invalidation", () => {
  const { v, unit, submit } = setup();
  assert.equal(submit(vtdPasidCache(DID, 0)), 0xc0de);
  assert.equal(unit.binder.telemetry.binds, 1);
  assert.equal(unit.binder.telemetry.ridBinds, 1);
  assert.equal(unit.translate(0x1234, true), 0x20234);
  v.setUint32(PT + 8, 0x21000 | 3, true); // the guest remaps without invalidating: the device's IOTLB still holds it
  assert.equal(unit.translate(0x1234, false), 0x20234);
  assert.equal(submit(vtdPasidIotlb(DID, 0, { page: 1, am: 0 })), 0xc0de);
  assert.equal(unit.translate(0x1234, false), 0x21234, "dropped once the relay sent the invalidation");
  assert.equal(unit.stats.relayed, 1);
  assert.deepEqual(unit.stats.uncovered, []);
  assert.deepEqual(unit.stats.faults, []);
});

Deno.test("linux-vmm vtd: an unmapped IOVA is a recorded fault (FSTS.PPF, FRCD.F, the fault event MSI)", () => {
  const { unit, submit, msis } = setup();
  submit(vtdPasidCache(DID, 0));
  unit.write(VTD.FEADDR, 4, 0xfee00000, 0);
  unit.write(VTD.FEDATA, 4, 0x41, 0);
  unit.write(VTD.FECTL, 4, 0, 0);
  assert.equal(unit.translate(0x5000, false), undefined);
  assert.equal(unit.read(VTD.FSTS, 4)[0] & 2, 2);
  assert.equal(unit.read(VTD.FRCD + 12, 4)[0] >>> 31, 1);
  assert.equal(unit.read(VTD.FRCD + 8, 4)[0] & 0xffff, RID);
  assert.deepEqual(msis, [[0xfee00000, 0x41]]);
  assert.equal(unit.stats.faults.length, 1);
});

Deno.test("linux-vmm vtd: a plugin that loses ranged invalidations leaves the translation stale and is caught", () => {
  const lossy = definePlugin({
    name: "lossy",
    version: "0",
    create(device) {
      const inner = device; // the device handle the host made: wrapped, not replaced
      const p: RelayPlugin = {
        name: "lossy",
        get state() {
          return inner.state;
        },
        config: inner.config,
        get telemetry() {
          return inner.telemetry;
        },
        submit: (r) => r.op === "invalidate" && r.scope.kind === "range" ? 1 << 30 : inner.submit(r),
        drain: () => inner.drain(),
        on: (l) => inner.on(l),
        [Symbol.dispose]: () => inner[Symbol.dispose](),
      };
      return p;
    },
  });
  const { v, unit, submit } = setup(lossy);
  submit(vtdPasidCache(DID, 0));
  assert.equal(unit.translate(0x1000, true), 0x20000);
  v.setUint32(PT + 8, 0x21000 | 3, true);
  submit(vtdPasidIotlb(DID, 0, { page: 1, am: 0 }));
  assert.equal(unit.translate(0x1000, true), 0x20000, "stale: the invalidation never reached the host");
  assert.equal(unit.stats.unsent, 1);
  assert.deepEqual(unit.stats.uncovered, [`DID ${DID} pages 1+1`]);
});

Deno.test("linux-vmm vtd: hostile tables end in faults, never in an exception", () => {
  const { v, unit, submit } = setup();
  v.setUint32(0x2000 + RID * 32, 0xfff000 | 1, true); // PASID directory beyond RAM
  submit(vtdPasidCache(DID, 0));
  assert.equal(unit.translate(0x1000, false), undefined);
  v.setUint32(0x1000, 0x7fff0000 | 1, true); // context table beyond RAM
  unit.write(VTD.GCMD, 4, (1 << 26) | (1 << 31) | (1 << 30), 0);
  assert.equal(unit.translate(0x1000, false), undefined);
  assert.ok(unit.stats.faults.length >= 2);
});

Deno.test("linux-vmm vtd: the independent check reads entries as they left for the host — target, range, slot, handled", () => {
  const vtdS1 = (entries: [number, bigint][], errno = 0, handled = entries.length, objectId = 9) => {
    const bytes = new Uint8Array(24 * entries.length), v = new DataView(bytes.buffer);
    entries.forEach(([addr, npages], i) => {
      v.setBigUint64(i * 24, BigInt(addr), true);
      v.setBigUint64(i * 24 + 8, npages, true);
    });
    return { objectId, dataType: 0, entryLen: 24, count: entries.length, entries: bytes, errno, handled };
  };
  const range = (firstPage: number, pages: number) => ({
    op: "invalidate" as const,
    domain: 1,
    scope: { kind: "range" as const, firstPage, pages },
  });
  assert.ok(hostCallsCover([vtdS1([[0x10000, 4n]])], 9, 0, range(0x11, 2)));
  assert.ok(!hostCallsCover([vtdS1([[0x10000, 4n]])], 9, 0, range(0x13, 2)), "one page past the entry's range");
  assert.ok(!hostCallsCover([vtdS1([[0x10000, 4n]], 0, 1, 8)], 9, 0, range(0x11, 1)), "another target's entry");
  assert.ok(hostCallsCover([vtdS1([[0, 0xffff_ffff_ffff_ffffn]])], 9, 0, range(0x123456, 9)), "the whole space");
  // A failed call: the kernel handled the first entry only; the second never happened.
  const failed = vtdS1([[0x10000, 1n], [0x20000, 1n]], 22, 1);
  assert.ok(hostCallsCover([failed], 9, 0, range(0x10, 1)));
  assert.ok(!hostCallsCover([failed], 9, 0, range(0x20, 1)));
  // Selftest entries carry no address: the binding's slot (or all) covers every page; another slot does not.
  const mock = (flags: number, slot: number) => {
    const bytes = new Uint8Array(8), v = new DataView(bytes.buffer);
    v.setUint32(0, flags, true);
    v.setUint32(4, slot, true);
    return { objectId: 9, dataType: 0xdead51, entryLen: 8, count: 1, entries: bytes, errno: 0, handled: 1 };
  };
  const SELFTEST = MockConstants.values.IOMMU_HWPT_INVALIDATE_DATA_SELFTEST;
  assert.ok(hostCallsCover([{ ...mock(0, 0), dataType: SELFTEST }], 9, 0, range(0x11, 2)));
  assert.ok(!hostCallsCover([{ ...mock(0, 2), dataType: SELFTEST }], 9, 0, range(0x11, 2)));
  assert.ok(hostCallsCover([{ ...mock(1, 2), dataType: SELFTEST }], 9, 0, range(0x11, 2)));
  assert.ok(!hostCallsCover([mock(1, 0)], 9, 0, range(0x11, 2)), "an unknown data type covers nothing");
});
