// The device layer against the real kernel: a GuestIommu with mock devices binds, replaces and unbinds PASIDs and
// relays invalidations through its queue; every effect is checked with the kernel's own selftest ops.
import assert from "node:assert/strict";
import { GuestIommu } from "../lib/device/mod.ts";
import { MockPort } from "../lib/host/ports.ts";
import { KernelDeviceHost } from "../lib/host/kernel_device_host.ts";
import { KernelError, type MockDevice, mockIotlbHolds, UnsupportedError } from "../lib/kernel/mod.ts";
import { MockConstants } from "../lib/uapi/mod.ts";
import { atLeast, kernelTest, openIommufd } from "./harness.ts";

const M = MockConstants.values;
const A = 0x1111, B = 0x2222;

function slots(iommufd: ReturnType<typeof openIommufd>, hwpt: number, expected: number[]): void {
  expected.forEach((v, slot) =>
    assert.ok(mockIotlbHolds(iommufd, hwpt, slot, v), `HWPT ${hwpt} slot ${slot} should hold ${v}`)
  );
}

const mockOf = (port: unknown) => (port as MockPort).device as MockDevice;

kernelTest("device: bind a PASID, invalidate through the queue, replace in place, unbind — as the kernel sees it", [
  "selftest-pasid",
], () => {
  using iommufd = openIommufd();
  using ioas = iommufd.allocIoas();
  using guest = new GuestIommu(new KernelDeviceHost(iommufd, ioas));
  const dev = guest.assign(MockPort.create(iommufd, ioas.id, M.MOCK_FLAGS_DEVICE_PASID), { domain: 1 });
  assert.equal(dev.capabilities.iommu.kind, "selftest");
  dev.bind(100, { format: "selftest", iotlb: A });
  const first = dev.boundTo(100)!;
  assert.ok(mockOf(dev.port).pasidAttachedTo(100, first));
  slots(iommufd, first, [A, A, A, A]);

  dev.handle({
    op: "invalidate",
    domain: 1,
    scope: { kind: "pasid-range", pasid: 100, firstPage: 0x7f000, pages: 512 },
  });
  dev.handle({ op: "sync" });
  const report = guest.queue.drain();
  assert.deepEqual([report.ioctls, report.entries, report.waits[0].ok], [1, 1, true]);
  slots(iommufd, first, [0, A, A, A]); // the documented rule: PASID 100 → slot 100 mod 4

  dev.handle({ op: "invalidate", domain: 2, scope: { kind: "all" } }); // another domain: reaches nothing
  assert.equal(guest.queue.drain().ioctls, 0);
  dev.handle({ op: "invalidate", domain: 1, scope: { kind: "all" } });
  guest.queue.drain();
  slots(iommufd, first, [0, 0, 0, 0]);

  dev.bind(100, { format: "selftest", iotlb: B }); // replace in place
  const second = dev.boundTo(100)!;
  assert.notEqual(second, first);
  assert.ok(mockOf(dev.port).pasidAttachedTo(100, second));
  assert.throws(
    () => iommufd.destroy(first),
    (e) => e instanceof KernelError && e.errnoName === "ENOENT",
    "old HWPT destroyed after the replace",
  );
  slots(iommufd, second, [B, B, B, B]);

  dev.unbind(100);
  assert.ok(mockOf(dev.port).pasidAttachedTo(100, 0));
  assert.equal(guest.nestedCount, 0);
  assert.deepEqual(guest.probedFormats, ["selftest"], "the zero-entry probe ran once");
  assert.deepEqual(dev.telemetry, { requestsIn: 4, binds: 2, replaces: 1, unbinds: 1, refused: 0 });
});

kernelTest("device: two devices of one domain with the same table share one nested HWPT and one ioctl", [
  "selftest-pasid",
], () => {
  using iommufd = openIommufd();
  using ioas = iommufd.allocIoas();
  using guest = new GuestIommu(new KernelDeviceHost(iommufd, ioas));
  const a = guest.assign(MockPort.create(iommufd, ioas.id, M.MOCK_FLAGS_DEVICE_PASID), { domain: 3 });
  const b = guest.assign(MockPort.create(iommufd, ioas.id, M.MOCK_FLAGS_DEVICE_PASID), { domain: 3 });
  assert.equal(a.parentHwptId, b.parentHwptId, "one nesting parent for the one (mock) IOMMU");
  a.bind(7, { format: "selftest", iotlb: A });
  b.bind(7, { format: "selftest", iotlb: A });
  assert.equal(a.boundTo(7), b.boundTo(7));
  assert.equal(guest.nestedCount, 1);
  a.handle({ op: "invalidate", domain: 3, scope: { kind: "range", firstPage: 1, pages: 1 } });
  const report = guest.queue.drain();
  assert.equal(report.ioctls, 1, "no fan-out");
  slots(iommufd, a.boundTo(7)!, [A, A, A, 0]);
  a.unbind(7);
  assert.equal(guest.nestedCount, 1, "still used by the other device");
  assert.ok(mockOf(b.port).pasidAttachedTo(7, b.boundTo(7)!));
});

kernelTest("device: the RID can be bound on every kernel; PASID binds are a typed unsupported before 6.15", [
  "selftest",
], () => {
  using iommufd = openIommufd();
  using ioas = iommufd.allocIoas();
  using guest = new GuestIommu(new KernelDeviceHost(iommufd, ioas));
  const dev = guest.assign(MockPort.create(iommufd, ioas.id), { domain: 1 });
  dev.bind("rid", { format: "selftest", iotlb: A });
  const hwpt = dev.boundTo("rid")!;
  dev.handle({ op: "invalidate", domain: 1, scope: { kind: "range", firstPage: 5, pages: 2 }, noPasid: true });
  const report = guest.queue.drain();
  assert.equal(report.failures.length, 0);
  slots(iommufd, hwpt, [0, A, A, A]);
  dev.unbind("rid");
  assert.throws(() => iommufd.destroy(hwpt), (e) => e instanceof KernelError && e.errnoName === "ENOENT");
  // A PASID bind: before 6.15 the kernel has no PASID-capable HWPTs (a typed unsupported); from 6.15 this mock
  // device without MOCK_FLAGS_DEVICE_PASID refuses the attach itself (EINVAL).
  assert.throws(
    () => dev.bind(9, { format: "selftest", iotlb: A }),
    (e) =>
      atLeast(6, 15)
        ? e instanceof KernelError && e.errnoName === "EINVAL"
        : e instanceof UnsupportedError && e.feature === "pasid-attach",
  );
  assert.equal(guest.nestedCount, 0, "a failed bind leaves no HWPT behind");
});

kernelTest("device: a failed attach rolls back the HWPT allocated for it", ["selftest-pasid"], () => {
  using iommufd = openIommufd();
  using ioas = iommufd.allocIoas();
  using guest = new GuestIommu(new KernelDeviceHost(iommufd, ioas));
  const dev = guest.assign(MockPort.create(iommufd, ioas.id), { domain: 1 }); // no MOCK_FLAGS_DEVICE_PASID
  assert.throws(
    () => dev.bind(5, { format: "selftest", iotlb: A }),
    (e) => e instanceof KernelError && e.errnoName === "EINVAL",
  );
  assert.equal(guest.nestedCount, 0);
  assert.equal(dev.boundTo(5), undefined);
});

kernelTest("device: disposal releases PASIDs, the device, nested HWPTs and the parent, in that order", [
  "selftest-pasid",
], () => {
  using iommufd = openIommufd();
  using ioas = iommufd.allocIoas();
  let parent: number, nested: number;
  {
    using guest = new GuestIommu(new KernelDeviceHost(iommufd, ioas));
    const dev = guest.assign(MockPort.create(iommufd, ioas.id, M.MOCK_FLAGS_DEVICE_PASID), { domain: 1 });
    dev.bind(3, { format: "selftest", iotlb: A });
    dev.bind("rid", { format: "selftest", iotlb: B });
    parent = dev.parentHwptId;
    nested = dev.boundTo(3)!;
  }
  for (const id of [parent, nested]) {
    assert.throws(
      () => iommufd.destroy(id),
      (e) => e instanceof KernelError && e.errnoName === "ENOENT",
      `object ${id} left behind`,
    );
  }
});

kernelTest("device: vIOMMU mode — nested HWPTs on a vIOMMU, one ioctl naming each device's virtual id", [
  "viommu",
  "vdevice",
  "selftest-dev-cache",
], () => {
  using iommufd = openIommufd();
  using ioas = iommufd.allocIoas();
  const D = M.IOMMU_TEST_DEV_CACHE_DEFAULT;
  let viommu = 0;
  {
    using guest = new GuestIommu(new KernelDeviceHost(iommufd, ioas), {
      viommu: { type: M.IOMMU_VIOMMU_TYPE_SELFTEST, format: "selftest-viommu" },
    });
    const a = guest.assign(MockPort.create(iommufd, ioas.id), { domain: 1, virtId: 0x10 });
    const b = guest.assign(MockPort.create(iommufd, ioas.id), { domain: 1, virtId: 0x11 });
    assert.throws(
      () => guest.assign(MockPort.create(iommufd, ioas.id), { domain: 1 }),
      TypeError,
      "virtId is required",
    );
    a.bind("rid", { format: "selftest", iotlb: A });
    b.bind("rid", { format: "selftest", iotlb: A });
    assert.equal(guest.nestedCount, 1, "one nested HWPT on the vIOMMU for both");
    const cache = (d: typeof a) =>
      [0, 1, 2, 3].map((s) => mockOf(d.port).cacheHolds(s, 0) ? 0 : mockOf(d.port).cacheHolds(s, D) ? D : -1);
    assert.deepEqual(cache(a), [D, D, D, D]);
    a.handle({ op: "invalidate", domain: 1, scope: { kind: "range", firstPage: 10, pages: 4 }, noPasid: true });
    const r1 = guest.queue.drain();
    assert.deepEqual(
      [r1.ioctls, r1.entries, r1.failures.length],
      [1, 2, 0],
      "one ioctl to the vIOMMU, one entry per device",
    );
    assert.deepEqual(cache(a), [0, D, D, D]);
    assert.deepEqual(cache(b), [0, D, D, D]);
    b.handle({ op: "invalidate", domain: 1, scope: { kind: "all" } });
    guest.queue.drain();
    assert.deepEqual([cache(a), cache(b)], [[0, 0, 0, 0], [0, 0, 0, 0]]);
    viommu = guest.queue.bindings(1, "rid")[0].targetId;
  }
  assert.throws(
    () => iommufd.destroy(viommu),
    (e) => e instanceof KernelError && e.errnoName === "ENOENT",
    "vIOMMU destroyed with the guest",
  );
});
