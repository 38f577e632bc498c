// PASID attach / replace / detach on a PASID-capable mock device, checked with IOMMU_TEST_OP_PASID_CHECK_HWPT.
import assert from "node:assert/strict";
import { KernelError, MockDevice } from "../lib/kernel/mod.ts";
import { HwptAllocFlags, MockConstants, selftestHwptData } from "../lib/uapi/mod.ts";
import { kernelTest, openIommufd } from "./harness.ts";

const M = MockConstants.values;
const F = HwptAllocFlags.values;
const PASID = 100;

kernelTest(
  "pasid: attach, replace and detach one PASID; the kernel reports the attached HWPT",
  ["selftest-pasid"],
  () => {
    using iommufd = openIommufd();
    using ioas = iommufd.allocIoas();
    using dev = MockDevice.create(iommufd, ioas.id, M.MOCK_FLAGS_DEVICE_PASID);
    using parent = iommufd.allocHwpt({ devId: dev.devId, ptId: ioas.id, flags: F.IOMMU_HWPT_ALLOC_NEST_PARENT });
    const nested = (n: number) =>
      iommufd.allocHwpt({
        devId: dev.devId,
        ptId: parent.id,
        flags: F.IOMMU_HWPT_ALLOC_PASID,
        data: selftestHwptData(M.IOMMU_TEST_IOTLB_DEFAULT),
      }) ?? n;
    using a = nested(0);
    using b = nested(1);
    using s2 = iommufd.allocHwpt({ devId: dev.devId, ptId: ioas.id, flags: F.IOMMU_HWPT_ALLOC_PASID });
    // The RID must sit on a PASID-compatible domain before a PASID can attach.
    dev.replace(s2.id);

    assert.ok(dev.pasidAttachedTo(PASID, 0), "detached at start");
    dev.attachPasid(PASID, a.id);
    assert.ok(dev.pasidAttachedTo(PASID, a.id));
    assert.equal(dev.pasidAttachedTo(PASID, b.id), false);
    // Attaching again to an attached PASID is refused; replace is the way.
    assert.throws(() => dev.attachPasid(PASID, b.id), (e) => e instanceof KernelError);
    dev.replacePasid(PASID, b.id);
    assert.ok(dev.pasidAttachedTo(PASID, b.id));
    dev.detachPasid(PASID);
    assert.ok(dev.pasidAttachedTo(PASID, 0));
    dev.replace(ioas.id);
  },
);

kernelTest("pasid: a HWPT without the PASID flag cannot be attached to a PASID", ["selftest-pasid"], () => {
  using iommufd = openIommufd();
  using ioas = iommufd.allocIoas();
  using dev = MockDevice.create(iommufd, ioas.id, M.MOCK_FLAGS_DEVICE_PASID);
  using parent = iommufd.allocHwpt({ devId: dev.devId, ptId: ioas.id, flags: F.IOMMU_HWPT_ALLOC_NEST_PARENT });
  using s2 = iommufd.allocHwpt({ devId: dev.devId, ptId: ioas.id, flags: F.IOMMU_HWPT_ALLOC_PASID });
  dev.replace(s2.id);
  assert.throws(
    () => dev.attachPasid(PASID, parent.id),
    (e) => e instanceof KernelError && e.errnoName === "EINVAL" && e.ioctl === "IOMMU_TEST_CMD",
  );
  assert.ok(dev.pasidAttachedTo(PASID, 0));
  dev.replace(ioas.id);
});

kernelTest("pasid: a device without PASID support refuses PASID attach", ["selftest-pasid"], () => {
  using iommufd = openIommufd();
  using ioas = iommufd.allocIoas();
  using dev = MockDevice.create(iommufd, ioas.id);
  using s2 = iommufd.allocHwpt({ devId: dev.devId, ptId: ioas.id, flags: F.IOMMU_HWPT_ALLOC_PASID });
  assert.throws(() => dev.attachPasid(PASID, s2.id), (e) => e instanceof KernelError && e.errnoName === "EINVAL");
});
