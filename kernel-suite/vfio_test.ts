// VFIO cdev calls on a real VFIO device: QEMU's edu device behind an emulated VT-d (q35 + intel-iommu),
// bound to vfio-pci by the VM's start script. QEMU's VT-d model does not offer nesting; that is checked too.
import assert from "node:assert/strict";
import { KernelError, VfioDevice } from "../lib/kernel/mod.ts";
import { ShimRefusedError } from "../ffi/native.ts";
import { HwInfoType, HwptAllocFlags, IommuHwInfoVtd } from "../lib/uapi/mod.ts";
import { atLeast, noKernel, openIommufd, shim } from "./harness.ts";

const CDEV = "/dev/vfio/devices/vfio0";
const noCdev = noKernel ?? (shim.open(CDEV) < 0 ? `${CDEV} does not exist (no VFIO device in this VM)` : undefined);
if (noCdev) console.log(`kernel suite: ignoring VFIO tests because ${noCdev}`);

Deno.test({
  name: "vfio: bind the cdev, attach to an IOAS, query VT-d hw info, detach",
  ignore: noCdev !== undefined,
  fn() {
    using iommufd = openIommufd();
    using dev = VfioDevice.open(shim, CDEV);
    const devId = dev.bind(iommufd);
    assert.ok(devId > 0);
    using ioas = iommufd.allocIoas();
    const hwpt = dev.attach(ioas.id);
    assert.ok(hwpt > 0 && hwpt !== ioas.id, "attaching to an IOAS reports the auto-allocated paging HWPT");
    const info = iommufd.getHwInfo(devId);
    assert.equal(info.type, HwInfoType.values.IOMMU_HW_INFO_TYPE_INTEL_VTD);
    const vtd = IommuHwInfoVtd.decode(info.data.subarray(0, IommuHwInfoVtd.size));
    assert.notEqual(vtd.cap_reg, 0n);
    assert.notEqual(vtd.ecap_reg, 0n);
    console.log(
      `VT-d cap 0x${vtd.cap_reg.toString(16)} ecap 0x${vtd.ecap_reg.toString(16)}, PASID bits ${info.maxPasidLog2}`,
    );
    dev.detach();
    // Attaching again after detach works (and replaces nothing).
    dev.attach(ioas.id);
    dev.detach();
  },
});

Deno.test({
  name: "vfio: nesting is refused on QEMU's VT-d model (no ecap.NEST) with a typed error",
  ignore: noCdev !== undefined,
  fn() {
    using iommufd = openIommufd();
    using dev = VfioDevice.open(shim, CDEV);
    const devId = dev.bind(iommufd);
    using ioas = iommufd.allocIoas();
    assert.throws(
      () => iommufd.allocHwpt({ devId, ptId: ioas.id, flags: HwptAllocFlags.values.IOMMU_HWPT_ALLOC_NEST_PARENT }),
      (e) => e instanceof KernelError && e.ioctl === "IOMMU_HWPT_ALLOC" && e.errnoName === "EOPNOTSUPP",
    );
  },
});

Deno.test({
  name: "vfio: PASID attach on a device without PASID is refused (error path only: no PASID device here)",
  ignore: noCdev !== undefined,
  fn() {
    using iommufd = openIommufd();
    using dev = VfioDevice.open(shim, CDEV);
    dev.bind(iommufd);
    using ioas = iommufd.allocIoas();
    assert.throws(
      () => dev.attach(ioas.id, 1),
      (e) => e instanceof KernelError && e.ioctl === "VFIO_DEVICE_ATTACH_IOMMUFD_PT",
    );
    if (atLeast(6, 15)) {
      dev.detach(1); // detaching a PASID that was never attached is a no-op since 6.15
    } else {
      // Before 6.15 the PASID flag is unknown: EINVAL.
      assert.throws(() => dev.detach(1), (e) => e instanceof KernelError && e.errnoName === "EINVAL");
    }
  },
});

Deno.test({
  name:
    "vfio: an unbound cdev cannot attach (ENODEV/EINVAL), and binding to an fd that is no iommufd of the shim's is refused",
  ignore: noCdev !== undefined,
  fn() {
    using dev = VfioDevice.open(shim, CDEV);
    assert.throws(() => dev.attach(1), (e) => e instanceof KernelError);
    const fake = { fd: 9999 } as Parameters<VfioDevice["bind"]>[0];
    // The shim refuses it before the kernel sees it: the fd in VFIO_DEVICE_BIND_IOMMUFD must be an iommufd it opened.
    assert.throws(() => dev.bind(fake), (e) => e instanceof ShimRefusedError && e.errnoName === "EPERM");
  },
});

Deno.test({
  name:
    "vfio: auto mode shadows the edu device behind QEMU's VT-d (no nesting) and the real VT-d domain takes the maps",
  ignore: noCdev !== undefined,
  async fn() {
    const { RelayHost, relayPlugin } = await import("../lib/plugin/plugin.ts");
    const { GuestPageTables } = await import("../lib/shadow/page_tables.ts");
    using host = RelayHost.kernel(shim);
    const ram = shim.alignedBuffer(8 << 20);
    const tables = new GuestPageTables(ram, { format: "vtd-sl", levels: 4, tablesAt: 0x60_0000 });
    using edu = relayPlugin.create(host, { domain: 1, device: { kind: "vfio", path: CDEV }, shadow: { ram } });
    assert.equal(edu.telemetry.mode, "shadow", "auto: no nesting parent here, so shadow");
    edu.submit({
      op: "bind",
      domain: 1,
      pasid: "rid",
      table: { format: "vtd-sl", tableAddress: tables.config.root, addressWidth: 48 },
    });
    for (let p = 0; p < 32; p++) tables.map(0x100 + p, 0x200 + p, { read: true, write: p % 2 === 0 });
    edu.submit({ op: "invalidate", domain: 1, scope: { kind: "range", firstPage: 0x100, pages: 32 }, noPasid: true });
    edu.submit({ op: "sync" });
    const r = edu.drain();
    assert.deepEqual(r.failures, []);
    const areas = host.shadowDomain(1)!.areas.all;
    assert.equal(areas.length, 32, "alternating permissions: 32 maps, all accepted by the intel-iommu domain");
    for (let p = 0; p < 32; p++) tables.unmap(0x100 + p);
    edu.submit({
      op: "invalidate",
      domain: 1,
      scope: { kind: "range", firstPage: 0x100, pages: 32 },
      noPasid: true,
      leaf: true,
    });
    edu.submit({ op: "sync" });
    assert.deepEqual(edu.drain().failures, []);
    assert.equal(host.shadowDomain(1)!.areas.size, 0);
    assert.equal(edu.telemetry.shadow!.maps, 32);
    assert.equal(edu.telemetry.shadow!.unmaps, 32);
  },
});
