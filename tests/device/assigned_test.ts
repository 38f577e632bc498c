// The device layer's SMMUv3 path (no kernel here can run SMMUv3 nesting): a GuestIommu in vIOMMU mode over a
// recording stand-in for the iommufd objects and a recording device port, with the in-process host behind the
// queue. The selftest vIOMMU path of the same code runs against the real kernel in kernel-suite/device_test.ts.
import assert from "node:assert/strict";
import { RelayQueue } from "../../lib/relay/queue.ts";
import { DeviceRemovedError, GuestIommu } from "../../lib/device/assigned.ts";
import { ModelDeviceHost } from "../../lib/host/model_device_host.ts";
import { KernelDeviceHost } from "../../lib/host/kernel_device_host.ts";
import type { DevicePort } from "../../lib/host/device_host.ts";
import type { Iommufd } from "../../lib/kernel/iommufd.ts";
import { UnsupportedError } from "../../lib/kernel/errors.ts";
import { ModelHost } from "../../lib/host/model.ts";
import { HwCapabilities, HwInfoType, HwptDataType, ViommuType } from "../../lib/uapi/mod.ts";
import { RequestError } from "../../lib/request/request.ts";

function fakes(host: ModelHost, opts: { ssidBits?: number; ats?: boolean; capabilities?: bigint } = {}) {
  const log: string[] = [];
  let nextId = 100;
  /**
   * As Linux 7.3's arm-smmu-v3: vIOMMUs take invalidations but refuse an empty batch (EINVAL); nested HWPTs take none
   * (EOPNOTSUPP).
   */
  const viommus = new Set<number>();
  const probes: string[] = [];
  const object = (kind: string, id = nextId++, extra: Record<string, unknown> = {}) => ({
    id,
    ...extra,
    invalidateRaw: () => 0,
    handled: 0,
    [Symbol.dispose]: () => log.push(`destroy ${kind} ${id}`),
  });
  const idr = new Uint8Array(40);
  const v = new DataView(idr.buffer);
  v.setUint32(8, 0b11 | (opts.ats === false ? 0 : 1 << 10), true); // IDR0: S1P, S2P, ATS
  v.setUint32(12, (opts.ssidBits ?? 20) << 6, true); // IDR1: SSIDSIZE
  v.setUint32(20, 1 << 10, true); // IDR3: RIL
  const iommufd = {
    invalidateRaw: (id: number, _type: number, _entries: Uint8Array, _len: number, count: number) => {
      probes.push(`${viommus.has(id) ? "viommu" : "nested"} ${count}`);
      return viommus.has(id) ? (count === 0 ? -22 : 0) : -95;
    },
    getHwInfo: () => ({
      type: HwInfoType.values.IOMMU_HW_INFO_TYPE_ARM_SMMUV3,
      data: idr,
      maxPasidLog2: 20,
      capabilities: opts.capabilities ?? 0n,
    }),
    allocHwpt: (o: { ptId: number; flags?: number; data?: { type: number; bytes: Uint8Array } }) => {
      const h = object(o.data ? "nested" : "parent");
      log.push(
        `alloc ${
          o.data
            ? `nested on ${o.ptId} type ${o.data.type} ste ${new DataView(o.data.bytes.buffer).getBigUint64(0, true)}`
            : `parent ${h.id}`
        }`,
      );
      return h;
    },
    allocViommu: (o: { type: number }) => {
      const id = host.createTarget("smmuv3");
      viommus.add(id);
      log.push(`alloc viommu ${id} type ${o.type}`);
      return object("viommu", id);
    },
    allocVdevice: (_v: number, _d: number, virtId: number) => object("vdevice", nextId++, { virtId }),
  } as unknown as Iommufd;
  const port: DevicePort = {
    devId: 1,
    label: "fake device",
    attachRid: (pt) => (log.push(`attach rid ${pt}`), pt),
    attachPasid: (p, pt) => void log.push(`attach pasid ${p} ${pt}`),
    replacePasid: (p, pt) => void log.push(`replace pasid ${p} ${pt}`),
    detachPasid: (p) => void log.push(`detach pasid ${p}`),
    [Symbol.dispose]: () => void log.push("port disposed"),
  };
  return { iommufd, port, log, probes };
}

Deno.test("device (SMMUv3): STE on the RID, PASIDs as CFGI_CD, TLBIs with the CD's ASID, ATC_INV for ATS", () => {
  const host = new ModelHost();
  const { iommufd, port, log, probes } = fakes(host);
  const viommuMode = { type: ViommuType.values.IOMMU_VIOMMU_TYPE_ARM_SMMUV3, format: "smmuv3" as const };
  {
    using guest = new GuestIommu(new KernelDeviceHost(iommufd, { id: 1 } as never), {
      queue: new RelayQueue(host, { smmuRil: true }),
      viommu: viommuMode,
    });
    const dev = guest.assign(port, { domain: 1, virtId: 0x42, ats: true });
    assert.ok(dev.capabilities.iommu.kind === "smmuv3" && dev.capabilities.iommu.ril && dev.capabilities.iommu.ats);
    const viommu = host.createTarget("smmuv3") - 1; // the one the fake allocated just before
    assert.throws(
      () => dev.bind(5, { format: "smmuv3", ste: [0n, 0n], asid: 77 }),
      (e) => e instanceof UnsupportedError && e.feature === "smmuv3-pasid",
    );

    dev.bind("rid", { format: "smmuv3", ste: [0x1234n, 5n], asid: 0 });
    // The probe went to the vIOMMU, where the invalidations go (a nested SMMUv3 HWPT refuses it), with one command
    // (the driver refuses an empty batch).
    assert.deepEqual(probes, ["viommu 1"]);
    assert.deepEqual(guest.probedFormats, ["smmuv3"]);
    assert.ok(
      log.includes(`alloc nested on ${viommu} type ${HwptDataType.values.IOMMU_HWPT_DATA_ARM_SMMUV3} ste 4660`),
    );
    dev.bind(5, { format: "smmuv3", ste: [0x1234n, 5n], asid: 77 });
    assert.deepEqual(host.configInvalidations, [{ targetId: viommu, vsid: 0x42, ssid: 5 }]);

    dev.handle({
      op: "invalidate",
      domain: 1,
      scope: { kind: "pasid-range", pasid: 5, firstPage: 0x100, pages: 64 },
      leaf: true,
    });
    const r = guest.queue.drain();
    assert.deepEqual([r.ioctls, r.failures.length], [2, 0], "TLBIs, then ATC_INV in a second call");
    assert.ok(host.covered(viommu, 0x100, 77) && host.covered(viommu, 0x13f, 77));
    assert.equal(host.covered(viommu, 0x100, 78), false, "another ASID is untouched");
    assert.ok(host.atcCovered(viommu, 0x42, 5, 0x100) && host.atcCovered(viommu, 0x42, 5, 0x13f));
    host.resetCoverage();

    dev.bind(5, { format: "smmuv3", ste: [0x1234n, 5n], asid: 78 }); // the guest rewrote the CD
    assert.equal(host.configInvalidations.length, 2);
    dev.handle({ op: "invalidate", domain: 1, scope: { kind: "pasid", pasid: 5 } });
    guest.queue.drain();
    assert.ok(host.covered(viommu, 12345, 78) && !host.covered(viommu, 12345, 77));
    assert.deepEqual(dev.telemetry, { requestsIn: 2, binds: 3, replaces: 1, unbinds: 0, refused: 1 });
    log.length = 0;
  }
  // Disposal: the PASID (CFGI_CD), the RID back to the parent, the nested HWPT, the vDEVICE, the port, the vIOMMU
  // and the parent — each after what depends on it.
  assert.deepEqual(log.map((l) => l.replace(/\d+/g, "N")), [
    "attach rid N",
    "destroy nested N",
    "destroy vdevice N",
    "port disposed",
    "destroy viommu N",
    "destroy parent N",
  ]);
  assert.equal(host.configInvalidations.length, 3, "unbinding PASID 5 cleared its CD");
});

Deno.test("device: a reset sends what was queued first, keeps the binds, and is typed when the device cannot", () => {
  const host = new ModelDeviceHost(new ModelHost());
  using guest = new GuestIommu(host);
  const port = host.port({ label: "nic" });
  const dev = guest.assign(port, { domain: 1 });
  dev.bind(4, { format: "vtd-s1", tableAddress: 0x3000, addressWidth: 48 });
  const target = dev.boundTo(4)!;
  dev.handle({ op: "invalidate", domain: 1, scope: { kind: "pasid-range", pasid: 4, firstPage: 0x40, pages: 2 } });
  dev.handle({ op: "sync" });
  const reset = port.reset.bind(port);
  let coveredAtReset = false;
  port.reset = () => {
    coveredAtReset = host.model.covered(target, 0x41);
    reset();
  };
  dev.reset();
  assert.ok(coveredAtReset, "the invalidation reached the host before the device reset");
  assert.equal(port.resets, 1);
  assert.equal(dev.boundTo(4), target, "binds stay");
  assert.deepEqual(dev.drain().waits.map((w) => w.ok), [true], "the wait is still the device's to collect");
  const stiff = guest.assign(host.port({ resettable: false }), { domain: 2 });
  assert.throws(() => stiff.reset(), (e) => e instanceof UnsupportedError && e.feature === "vfio-device-reset");
});

Deno.test("device: removal with a table already gone on the host — the owner's wait fails, typed; the other device's completes", () => {
  const host = new ModelDeviceHost(new ModelHost());
  using guest = new GuestIommu(host);
  const a = guest.assign(host.port({ label: "a" }), { domain: 1 });
  const b = guest.assign(host.port({ label: "b" }), { domain: 2 });
  a.bind("rid", { format: "vtd-s1", tableAddress: 0x1000, addressWidth: 48 });
  b.bind("rid", { format: "vtd-s1", tableAddress: 0x2000, addressWidth: 48 });
  const inv = a.handle({
    op: "invalidate",
    domain: 1,
    scope: { kind: "range", firstPage: 1, pages: 1 },
    noPasid: true,
  })!;
  const wait = a.handle({ op: "sync" })!;
  b.handle({ op: "invalidate", domain: 2, scope: { kind: "range", firstPage: 1, pages: 1 }, noPasid: true });
  b.handle({ op: "sync" });
  host.model.destroyTarget(a.boundTo("rid")!); // the host lost a's table (the device went first)
  assert.deepEqual(b.drain().waits.map((w) => w.ok), [true], "b is not held back by a's failure");
  const report = a.remove();
  assert.equal(report.device, "a");
  assert.deepEqual(report.outcome.waits, [{ seq: wait, ok: false, firstFailed: inv }], "never a silent ok");
  assert.equal(report.outcome.failures[0].errnoName, "ENOENT");
  assert.deepEqual(report.unbound, ["rid"]);
  assert.throws(() => a.bind(1, { format: "selftest", iotlb: 1 }), DeviceRemovedError);
  assert.throws(() => a.remove(), DeviceRemovedError);
  assert.deepEqual(guest.devices, [b]);
  assert.deepEqual(guest.queue.bindings(1, "rid"), [], "a's route is gone");
  // Hot-plug into the same running vIOMMU, in a's old domain.
  const c = guest.assign(host.port({ label: "c" }), { domain: 1 });
  c.bind("rid", { format: "vtd-s1", tableAddress: 0x1000, addressWidth: 48 });
  c.handle({ op: "invalidate", domain: 1, scope: { kind: "all" }, noPasid: true });
  c.handle({ op: "sync" });
  assert.deepEqual(c.drain().waits.map((w) => w.ok), [true]);
  assert.ok(host.model.coverage(c.boundTo("rid")!).wholeSpace);
});

Deno.test("device (SMMUv3): rebinding the RID to the STE it has is the guest's CD 0 change — relayed as CFGI_CD(SSID 0)", () => {
  const host = new ModelHost();
  const { iommufd, port, log } = fakes(host);
  using guest = new GuestIommu(new KernelDeviceHost(iommufd, { id: 1 } as never), {
    queue: new RelayQueue(host),
    viommu: { type: ViommuType.values.IOMMU_VIOMMU_TYPE_ARM_SMMUV3, format: "smmuv3" },
  });
  const dev = guest.assign(port, { domain: 1, virtId: 0x42 });
  const viommu = host.createTarget("smmuv3") - 1;
  dev.bind("rid", { format: "smmuv3", ste: [0x1234n, 5n], asid: 1 });
  assert.deepEqual(host.configInvalidations, [], "a new STE is attached: the kernel installs it, no CFGI needed");
  const attaches = log.filter((l) => l.startsWith("attach rid")).length;
  // The guest rewrote CD 0 with a new ASID (and tables), then its CFGI_CD: the VMM rebinds the same STE.
  dev.bind("rid", { format: "smmuv3", ste: [0x1234n, 5n], asid: 2 });
  assert.deepEqual(host.configInvalidations, [{ targetId: viommu, vsid: 0x42, ssid: 0 }]);
  assert.equal(guest.nestedCount, 1, "the nested HWPT is kept");
  assert.equal(log.filter((l) => l.startsWith("attach rid")).length, attaches, "and not attached again");
  // The same ASID with new tables looks the same to the device layer: still a CD 0 change, still relayed.
  dev.bind("rid", { format: "smmuv3", ste: [0x1234n, 5n], asid: 2 });
  assert.equal(host.configInvalidations.length, 2);
  // The RID's invalidations now carry the new ASID.
  dev.handle({ op: "invalidate", domain: 1, scope: { kind: "all" }, noPasid: true });
  guest.queue.drain();
  assert.ok(host.covered(viommu, 7, 2) && !host.covered(viommu, 7, 1));
});

Deno.test("device (SMMUv3): no substreams (SSIDSIZE 0, as QEMU's SMMU) means no PASID binds; ATS only where there is ATS", () => {
  const host = new ModelHost();
  const viommu = { type: ViommuType.values.IOMMU_VIOMMU_TYPE_ARM_SMMUV3, format: "smmuv3" as const };
  {
    const { iommufd, port } = fakes(host, { ssidBits: 0 });
    using guest = new GuestIommu(new KernelDeviceHost(iommufd, { id: 1 } as never), {
      queue: new RelayQueue(host),
      viommu,
    });
    const dev = guest.assign(port, { domain: 1, virtId: 0x42 });
    assert.equal(dev.pasidBits, 0);
    dev.bind("rid", { format: "smmuv3", ste: [0x1234n, 5n], asid: 1 });
    assert.throws(
      () => dev.bind(5, { format: "smmuv3", ste: [0x1234n, 5n], asid: 7 }),
      (e) => e instanceof RequestError && e.reason === "pasid-out-of-range",
    );
    assert.deepEqual(host.configInvalidations, [], "no CFGI_CD naming a substream the SMMU does not have");
  }
  for (
    const o of [{ ats: false }, { capabilities: BigInt(HwCapabilities.values.IOMMU_HW_CAP_PCI_ATS_NOT_SUPPORTED) }]
  ) {
    const { iommufd, port, log } = fakes(host, o);
    using guest = new GuestIommu(new KernelDeviceHost(iommufd, { id: 1 } as never), {
      queue: new RelayQueue(host),
      viommu,
    });
    assert.throws(
      () => guest.assign(port, { domain: 1, virtId: 0x42, ats: true }),
      (e) => e instanceof UnsupportedError && e.feature === "ats",
      "ats" in o ? "IDR0.ATS clear" : "PCI_ATS_NOT_SUPPORTED",
    );
    assert.deepEqual(log, ["port disposed"], "refused before anything was allocated; the port is released");
  }
});
