// End to end against the real kernel: guest bytes in a VT-d invalidation queue → decode → relay requests →
// coalescing queue → selftest entries → IOMMU_HWPT_INVALIDATE on the mock's nested HWPTs, checked with
// MD_CHECK_IOTLB, and the wait status written back to "guest memory".
import assert from "node:assert/strict";
import { GuestIommu } from "../lib/device/mod.ts";
import { MockPort } from "../lib/host/ports.ts";
import { KernelDeviceHost } from "../lib/host/kernel_device_host.ts";
import { VtdInvalidationQueue } from "../lib/frontends/vtd/queue.ts";
import { mockIotlbHolds } from "../lib/kernel/mod.ts";
import { MockConstants } from "../lib/uapi/mod.ts";
import { kernelTest, openIommufd } from "./harness.ts";

const M = MockConstants.values;

kernelTest("frontend: a VT-d queue of PASID-IOTLB + wait descriptors reaches the kernel's mock IOTLB in one ioctl", [
  "selftest-pasid",
], () => {
  using iommufd = openIommufd();
  using ioas = iommufd.allocIoas();
  using guest = new GuestIommu(new KernelDeviceHost(iommufd, ioas));
  const dev = guest.assign(MockPort.create(iommufd, ioas.id, M.MOCK_FLAGS_DEVICE_PASID), { domain: 1 });
  dev.bind(6, { format: "selftest", iotlb: 0x77 });
  const hwpt = dev.boundTo(6)!;
  const ram = new Uint8Array(1 << 16);
  const memory = {
    read: (a: number, n: number) => ram.slice(a, a + n),
    write: (a: number, b: Uint8Array) => ram.set(b, a),
  };
  const qi = new VtdInvalidationQueue(memory, guest.queue);
  qi.writeIqa(0x1000 | (1 << 11)); // 256-bit descriptors, as a scalable-mode Linux guest uses
  const v = new DataView(ram.buffer);
  for (let i = 0; i < 4; i++) {
    v.setBigUint64(0x1000 + i * 64, (6n << 32n) | (1n << 16n) | (3n << 4n) | 6n, true); // PASID-IOTLB page, PASID 6, DID 1
    v.setBigUint64(0x1000 + i * 64 + 8, BigInt(0x100 + i) << 12n, true);
    v.setBigUint64(0x1000 + i * 64 + 32, (BigInt(0xd00 + i) << 32n) | (1n << 5n) | 5n, true); // wait, status write
    v.setBigUint64(0x1000 + i * 64 + 40, BigInt(0x8000 + i * 4), true);
  }
  const before = guest.queue.telemetry.ioctls;
  const r = qi.writeIqt(8 * 32);
  assert.deepEqual(r, { processed: 8, waitsCompleted: 4 });
  assert.equal(guest.queue.telemetry.ioctls - before, 1);
  assert.ok(mockIotlbHolds(iommufd, hwpt, 6 % 4, 0), "slot pasid mod 4 invalidated by the real kernel");
  assert.ok(mockIotlbHolds(iommufd, hwpt, 0, 0x77) && mockIotlbHolds(iommufd, hwpt, 1, 0x77));
  assert.deepEqual([0, 1, 2, 3].map((i) => v.getUint32(0x8000 + i * 4, true)), [0xd00, 0xd01, 0xd02, 0xd03]);
});
