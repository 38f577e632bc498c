// Device lifecycle on the real kernel: VFIO_DEVICE_GET_INFO / VFIO_DEVICE_RESET on the VM's VFIO cdevs (QEMU's edu
// device, which has no reset method, and its NVMe controller, which has FLR), a device reset with invalidations
// queued, selftest mock devices destroyed in the middle of a batch and removed, and a device hot-plugged into a
// running vIOMMU. Every effect is checked with the kernel's own selftest ops.
import assert from "node:assert/strict";
import { type AssignedDevice, DeviceRemovedError, GuestIommu } from "../lib/device/mod.ts";
import { KernelDeviceHost } from "../lib/host/kernel_device_host.ts";
import { MockPort, VfioPort } from "../lib/host/ports.ts";
import {
  describeHost,
  type Ioas,
  type Iommufd,
  KernelError,
  type MockDevice,
  mockIotlbHolds,
  UnsupportedError,
  VfioDevice,
} from "../lib/kernel/mod.ts";
import { IOCTL } from "../ffi/native.ts";
import { ShadowBackend } from "../lib/shadow/backend.ts";
import { KernelShadowIoas } from "../lib/shadow/kernel_ioas.ts";
import { GuestPageTables } from "../lib/shadow/page_tables.ts";
import { RelayQueue } from "../lib/relay/queue.ts";
import { MockConstants, VFIO_DEVICE_RESET } from "../lib/uapi/mod.ts";
import { kernelTest, noKernel, openIommufd, shim } from "./harness.ts";

const M = MockConstants.values;
const A = 0x1111;
const D = M.IOMMU_TEST_DEV_CACHE_DEFAULT;
const mockOf = (d: AssignedDevice) => (d.port as MockPort).device as MockDevice;

/** The VM's VFIO cdev of PCI vendor:device, if bound to vfio-pci. */
function cdevOf(vendor: string, device: string): string | undefined {
  if (noKernel) return undefined;
  return describeHost(shim).cdevs.find((c) => c.vendor === vendor && c.device === device)?.cdev;
}
const EDU = cdevOf("0x1234", "0x11e8");
const NVME = cdevOf("0x1b36", "0x0010");
const noEdu = noKernel ?? (EDU ? undefined : "no edu device on vfio-pci in this VM");
const noNvme = noKernel ?? (NVME ? undefined : "no QEMU NVMe controller on vfio-pci in this VM");
for (const why of new Set([noEdu, noNvme])) if (why) console.log(`kernel suite: ignoring reset tests because ${why}`);

Deno.test({
  name:
    "lifecycle: VFIO_DEVICE_GET_INFO — edu reports no reset method and VFIO_DEVICE_RESET is refused; reset() is typed",
  ignore: noEdu !== undefined,
  fn() {
    using iommufd = openIommufd();
    using dev = VfioDevice.open(shim, EDU!);
    dev.bind(iommufd);
    const info = dev.info();
    console.log(`edu: VFIO flags 0x${info.flags.toString(16)}, ${info.regions} regions, ${info.irqs} IRQ indexes`);
    assert.ok(info.pci, "a vfio-pci device");
    assert.equal(info.resettable, false, "edu: no FLR, no PM reset, on the root bus (no bus reset)");
    // The kernel's own answer, without the library's check in front of it: EINVAL (vdev->reset_works is false).
    assert.equal(shim[IOCTL](dev.fd, VFIO_DEVICE_RESET.request, null), -22);
    assert.throws(() => dev.reset(), (e) => e instanceof UnsupportedError && e.feature === "vfio-device-reset");
  },
});

Deno.test({
  name:
    "lifecycle: VFIO_DEVICE_RESET on QEMU's NVMe controller (FLR) succeeds while attached, and the attachment stays",
  ignore: noNvme !== undefined,
  fn() {
    using iommufd = openIommufd();
    using dev = VfioDevice.open(shim, NVME!);
    dev.bind(iommufd);
    using ioas = iommufd.allocIoas();
    const hwpt = dev.attach(ioas.id);
    const info = dev.info();
    console.log(`nvme: VFIO flags 0x${info.flags.toString(16)}, ${info.regions} regions, ${info.irqs} IRQ indexes`);
    assert.ok(info.resettable, "QEMU's NVMe controller has FLR: VFIO_DEVICE_FLAGS_RESET");
    dev.reset();
    dev.reset();
    // Still attached to the same paging domain: attaching again to the IOAS reuses it rather than allocating.
    assert.equal(dev.attach(ioas.id), hwpt, "the reset did not detach the device");
    dev.detach();
  },
});

Deno.test({
  name:
    "lifecycle: a shadowed VFIO device resets with an invalidation queued — it reaches the host first, the binding stays",
  ignore: noNvme !== undefined,
  fn() {
    using iommufd = openIommufd();
    using ioas = iommufd.allocIoas();
    const host = new KernelDeviceHost(iommufd, ioas);
    const ram = shim.alignedBuffer(8 << 20);
    const tables = new GuestPageTables(ram, { format: "vtd-sl", levels: 4, tablesAt: 0x60_0000 });
    using guest = new GuestIommu(host, {
      queue: new RelayQueue(new ShadowBackend(host.backend)),
      shadow: {
        ram,
        newSpace: () => {
          const space = iommufd.allocIoas();
          return { port: new KernelShadowIoas(space, ram), release: space, ioasId: space.id };
        },
      },
    });
    const nvme = guest.assign(VfioPort.open(shim, iommufd, NVME!), { domain: 1, mode: "shadow", key: "nvme" });
    nvme.bind("rid", { format: "vtd-sl", tableAddress: tables.config.root, addressWidth: 48 });
    // Alternating permissions: eight host mappings rather than one merged area.
    for (let p = 0; p < 8; p++) tables.map(0x100 + p, 0x200 + p, { read: true, write: p % 2 === 0 });
    nvme.handle({ op: "invalidate", domain: 1, scope: { kind: "range", firstPage: 0x100, pages: 8 }, noPasid: true });
    nvme.handle({ op: "sync" });
    nvme.reset();
    const domain = guest.shadow!.domain(1)!;
    assert.equal(domain.areas.size, 8, "the invalidation queued before the reset reached the host before it");
    const r = nvme.drain();
    assert.deepEqual([r.failures, r.waits.map((w) => w.ok)], [[], [true]]);
    assert.ok(nvme.boundTo("rid") !== undefined, "binds stay across a reset");
  },
});

kernelTest(
  "lifecycle: a reset on the selftest mock (no reset method) is a typed unsupported",
  ["selftest-pasid"],
  () => {
    using iommufd = openIommufd();
    using ioas = iommufd.allocIoas();
    using guest = new GuestIommu(new KernelDeviceHost(iommufd, ioas));
    const dev = guest.assign(MockPort.create(iommufd, ioas.id, M.MOCK_FLAGS_DEVICE_PASID), { domain: 1 });
    assert.throws(() => dev.reset(), (e) => e instanceof UnsupportedError && e.feature === "device-reset");
  },
);

function viommuGuest(iommufd: Iommufd, ioas: Ioas): GuestIommu {
  return new GuestIommu(new KernelDeviceHost(iommufd, ioas), {
    viommu: { type: M.IOMMU_VIOMMU_TYPE_SELFTEST, format: "selftest-viommu" },
  });
}

const cache = (d: AssignedDevice) =>
  [0, 1, 2, 3].map((s) => mockOf(d).cacheHolds(s, 0) ? 0 : mockOf(d).cacheHolds(s, D) ? D : -1);

kernelTest(
  "lifecycle: a mock device destroyed mid-batch — its invalidations fail to its owner, the other device's complete; removal reports and releases",
  ["viommu", "vdevice", "selftest-dev-cache"],
  () => {
    using iommufd = openIommufd();
    using ioas = iommufd.allocIoas();
    using guest = viommuGuest(iommufd, ioas);
    const a = guest.assign(MockPort.create(iommufd, ioas.id), { domain: 1, virtId: 0x10 });
    const b = guest.assign(MockPort.create(iommufd, ioas.id), { domain: 2, virtId: 0x11 });
    a.bind("rid", { format: "selftest", iotlb: A });
    b.bind("rid", { format: "selftest", iotlb: A });
    const viommu = guest.queue.bindings(1, "rid")[0].targetId;
    assert.equal(guest.queue.bindings(2, "rid")[0].targetId, viommu, "both devices behind one vIOMMU");
    // A batch in flight: both devices' invalidations queued for the one vIOMMU.
    const aInv = a.handle({
      op: "invalidate",
      domain: 1,
      scope: { kind: "range", firstPage: 1, pages: 1 },
      noPasid: true,
    })!;
    const aWait = a.handle({ op: "sync" })!;
    const bInv = b.handle({
      op: "invalidate",
      domain: 2,
      scope: { kind: "range", firstPage: 1, pages: 1 },
      noPasid: true,
    })!;
    b.handle({ op: "sync" });
    // The device goes away underneath the relay (surprise removal): the kernel destroys its vDEVICE with it.
    mockOf(a)[Symbol.dispose]();
    const bReport = b.drain(); // sends the whole batch: a's entry fails, b's is resent and completes
    assert.deepEqual(bReport.failures, [], "b's outcome holds none of a's failures");
    assert.ok(bReport.waits[0].ok);
    assert.deepEqual(cache(b), [0, D, D, D], "b's device cache was invalidated (the RID's slot, 0)");
    const removal = a.remove();
    assert.equal(removal.outcome.waits.length, 1);
    assert.deepEqual(removal.outcome.waits[0], { seq: aWait, ok: false, firstFailed: aInv });
    assert.equal(removal.outcome.failures[0].seq, aInv);
    assert.equal(removal.outcome.failures[0].errnoName, "EINVAL", "the vIOMMU no longer knows virtual id 0x10");
    assert.deepEqual(removal.unbound, ["rid"]);
    assert.ok(removal.teardownErrors.every((e) => e instanceof KernelError), "host refusals, typed, collected");
    assert.throws(() => a.handle({ op: "sync" }), DeviceRemovedError);
    assert.throws(() => a.drain(), DeviceRemovedError);
    assert.deepEqual(guest.devices, [b]);
    assert.ok(bInv > aInv);
    // b keeps working on the same vIOMMU.
    b.handle({ op: "invalidate", domain: 2, scope: { kind: "all" } });
    b.handle({ op: "sync" });
    const again = b.drain();
    assert.deepEqual([again.failures, again.waits[0].ok], [[], true]);
    assert.deepEqual(cache(b), [0, 0, 0, 0]);
    assert.equal(guest.queue.bindings(2, "rid")[0].targetId, viommu, "the vIOMMU stayed");
  },
);

kernelTest(
  "lifecycle: orderly unplug with invalidations queued — sent before the tables go, waits ok, shared tables kept for the other device",
  ["selftest-pasid"],
  () => {
    using iommufd = openIommufd();
    using ioas = iommufd.allocIoas();
    using guest = new GuestIommu(new KernelDeviceHost(iommufd, ioas));
    const a = guest.assign(MockPort.create(iommufd, ioas.id, M.MOCK_FLAGS_DEVICE_PASID), { domain: 3 });
    const b = guest.assign(MockPort.create(iommufd, ioas.id, M.MOCK_FLAGS_DEVICE_PASID), { domain: 3 });
    a.bind(6, { format: "selftest", iotlb: A });
    b.bind(6, { format: "selftest", iotlb: A });
    const hwpt = a.boundTo(6)!;
    assert.equal(b.boundTo(6), hwpt, "one shared nested HWPT");
    a.handle({ op: "invalidate", domain: 3, scope: { kind: "pasid-range", pasid: 6, firstPage: 0, pages: 1 } });
    a.handle({ op: "sync" });
    const removal = a.remove();
    assert.deepEqual(removal.outcome.waits.map((w) => w.ok), [true]);
    assert.deepEqual(removal.teardownErrors, [], "an orderly removal: every host step succeeded");
    assert.ok(mockIotlbHolds(iommufd, hwpt, 2, 0), "PASID 6 → slot 2 invalidated before the removal");
    assert.ok(mockIotlbHolds(iommufd, hwpt, 0, A));
    assert.ok(mockOf(b).pasidAttachedTo(6, hwpt), "b still on the shared table");
    assert.equal(guest.nestedCount, 1);
    b.remove();
    assert.equal(guest.nestedCount, 0);
    assert.throws(() => iommufd.destroy(hwpt), (e) => e instanceof KernelError && e.errnoName === "ENOENT");
  },
);

kernelTest(
  "lifecycle: a device hot-plugged into a running vIOMMU gets a vDEVICE there and its invalidations; the first keeps working",
  ["viommu", "vdevice", "selftest-dev-cache"],
  () => {
    using iommufd = openIommufd();
    using ioas = iommufd.allocIoas();
    using guest = viommuGuest(iommufd, ioas);
    const a = guest.assign(MockPort.create(iommufd, ioas.id), { domain: 1, virtId: 0x20 });
    a.bind("rid", { format: "selftest", iotlb: A });
    const viommu = guest.queue.bindings(1, "rid")[0].targetId;
    // a has work queued when the new device arrives.
    a.handle({ op: "invalidate", domain: 1, scope: { kind: "range", firstPage: 2, pages: 1 }, noPasid: true });
    a.handle({ op: "sync" }); // the RID's slot (0) of every device of the domain
    const c = guest.assign(MockPort.create(iommufd, ioas.id), { domain: 1, virtId: 0x21 });
    c.bind("rid", { format: "selftest", iotlb: A }); // a barrier: a's invalidation goes out first
    assert.deepEqual(cache(a), [0, D, D, D]);
    assert.deepEqual(cache(c), [D, D, D, D], "queued before c existed: not sent to c");
    assert.equal(guest.queue.bindings(1, "rid").length, 2);
    assert.ok(guest.queue.bindings(1, "rid").every((b) => b.targetId === viommu), "one vIOMMU for both");
    assert.equal(guest.nestedCount, 1, "c shares a's nested table (same domain, same table)");
    c.handle({ op: "invalidate", domain: 1, scope: { kind: "all" } });
    c.handle({ op: "sync" });
    assert.deepEqual(c.drain().waits.map((w) => w.ok), [true]);
    assert.deepEqual(a.drain().waits.map((w) => w.ok), [true], "a's wait, kept for a across c's bind");
    assert.deepEqual(cache(c), [0, 0, 0, 0]);
    assert.deepEqual(cache(a), [0, 0, 0, 0], "the domain's invalidation reaches both devices");
  },
);
