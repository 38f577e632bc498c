// Host errata the relay must honour (issue 15 item 7), with injected hardware information: SMMUv3's "issue
// TLBI/CFGI+SYNC twice" (Tegra264) and VT-d 772415 (no read-only mapping under a nesting parent).
import assert from "node:assert/strict";
import { GuestIommu } from "../../lib/device/assigned.ts";
import { ModelHost } from "../../lib/host/model.ts";
import { ModelDeviceHost } from "../../lib/host/model_device_host.ts";
import { KernelDeviceHost } from "../../lib/host/kernel_device_host.ts";
import type { DevicePort } from "../../lib/host/device_host.ts";
import { Ioas, type Iommufd } from "../../lib/kernel/iommufd.ts";
import { UnsupportedError } from "../../lib/kernel/errors.ts";
import { HwInfoType, IommuHwInfoArmSmmuv3, IommuHwInfoVtd, ViommuType } from "../../lib/uapi/mod.ts";

function smmuInfo(repeat: boolean) {
  const b = IommuHwInfoArmSmmuv3.buffer().set("flags", repeat ? 1 : 0)
    .setAt("idr", 0, 0b11 | (1 << 10)) // S1P, S2P, ATS
    .setAt("idr", 1, 20 << 6)
    .setAt("idr", 3, 1 << 10); // RIL
  return { type: HwInfoType.values.IOMMU_HW_INFO_TYPE_ARM_SMMUV3, data: b.bytes, maxPasidLog2: 20, capabilities: 0n };
}

function smmuRun(repeat: boolean) {
  const model = new ModelHost();
  const host = new ModelDeviceHost(model);
  using guest = new GuestIommu(host, {
    viommu: { type: ViommuType.values.IOMMU_VIOMMU_TYPE_ARM_SMMUV3, format: "smmuv3" },
  });
  using dev = guest.assign(host.port({ hwInfo: smmuInfo(repeat) }), { domain: 1, virtId: 7, ats: true });
  assert.equal(dev.capabilities.iommu.kind === "smmuv3" && dev.capabilities.iommu.repeatTlbiCfgi, repeat);
  dev.bind("rid", { format: "smmuv3", ste: [1n, 0n], asid: 3 });
  const viommu = guest.queue.bindings(1, "rid")[0].targetId;
  const before = model.callCount;
  dev.bind(5, { format: "smmuv3", ste: [1n, 0n], asid: 9 }); // a CFGI_CD
  const cfgi = model.callCount - before;
  const mark = model.callCount;
  dev.handle({ op: "invalidate", domain: 1, scope: { kind: "pasid-range", pasid: 5, firstPage: 0x10, pages: 2 } });
  dev.handle({ op: "sync" });
  const report = dev.drain();
  assert.ok(report.waits[0].ok);
  const calls = model.calls.slice(-(model.callCount - mark));
  return { cfgi, calls, viommu, repeats: guest.queue.telemetry.errataRepeats, model };
}

Deno.test("errata: SMMUv3 REPEAT_TLBI_CFGI — every TLBI and CFGI batch is sent twice; ATC_INV once", () => {
  const plain = smmuRun(false);
  assert.equal(plain.cfgi, 1);
  assert.equal(plain.calls.length, 2, "one TLBI batch, then one ATC_INV batch");
  const [tlbi, atc] = plain.calls.map((c) => c.count);
  assert.equal(plain.repeats, 0);

  const repeat = smmuRun(true);
  assert.equal(repeat.cfgi, 2, "the CFGI_CD went twice");
  assert.deepEqual(repeat.calls.map((c) => c.count), [tlbi, tlbi, atc], "TLBI, TLBI again, then ATC_INV once");
  assert.ok(repeat.calls.every((c) => c.targetId === repeat.viommu && c.errno === 0));
  assert.equal(repeat.repeats, 2);
  assert.ok(repeat.model.covered(repeat.viommu, 0x11, 9));
});

function vtdFake(erratum: boolean) {
  const info = IommuHwInfoVtd.buffer().set("flags", erratum ? 1 : 0)
    .setU64("cap_reg", 0n).setU64("ecap_reg", 1n << 26n); // NEST
  let nextId = 10;
  const maps: number[] = [];
  const iommufd = {
    getHwInfo: () => ({
      type: HwInfoType.values.IOMMU_HW_INFO_TYPE_INTEL_VTD,
      data: info.bytes,
      maxPasidLog2: 0,
      capabilities: 0n,
    }),
    allocHwpt: () => ({ id: nextId++, [Symbol.dispose]() {} }),
    callWithPointer: (_i: unknown, args: { view: DataView }) => {
      maps.push(args.view.getUint32(4, true)); // flags
      return 0;
    },
    invalidateRaw: () => 0,
  } as unknown as Iommufd;
  const ioas = new Ioas(iommufd, 1);
  const port: DevicePort = {
    devId: 1,
    label: "fake VT-d device",
    attachRid: (pt) => pt,
    attachPasid: () => {},
    replacePasid: () => {},
    detachPasid: () => {},
    [Symbol.dispose]() {},
  };
  return { iommufd, ioas, port, maps };
}

Deno.test("errata: VT-d 772415 — no read-only mapping reaches an IOAS under a nesting parent", () => {
  const page = new Uint8Array(4096);
  {
    const f = vtdFake(true);
    using guest = new GuestIommu(new KernelDeviceHost(f.iommufd, f.ioas));
    using dev = guest.assign(f.port, { domain: 1 });
    assert.ok(dev.capabilities.iommu.kind === "vtd" && dev.capabilities.iommu.erratum772415);
    f.ioas.map(page, { iova: 0 }); // read-write: fine
    assert.throws(
      () => f.ioas.map(page, { iova: 0x1000, writable: false }),
      (e) => e instanceof UnsupportedError && e.feature === "read-only-mapping",
    );
    assert.equal(f.maps.length, 1, "the refused mapping never reached the kernel");
  }
  {
    // A read-only mapping made before the device came: its nesting parent is refused, typed.
    const f = vtdFake(true);
    f.ioas.map(page, { iova: 0, writable: false });
    using guest = new GuestIommu(new KernelDeviceHost(f.iommufd, f.ioas));
    assert.throws(() => guest.assign(f.port, { domain: 1 }), UnsupportedError);
  }
  {
    const f = vtdFake(false);
    using guest = new GuestIommu(new KernelDeviceHost(f.iommufd, f.ioas));
    using _dev = guest.assign(f.port, { domain: 1 });
    f.ioas.map(page, { iova: 0x1000, writable: false }); // no erratum: allowed
    assert.equal(f.maps.length, 1);
  }
});
