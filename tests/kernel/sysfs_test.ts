// lib/kernel/sysfs.ts on a fake /dev + sysfs tree (kernel-suite/cli_test.ts reads the real one in the test VM).
import assert from "node:assert/strict";
import { NativeShim } from "../../ffi/native.ts";
import { describeHost } from "../../lib/kernel/sysfs.ts";

Deno.test("sysfs: cdevs, their PCI function, driver, group and IOMMU, groups and IOMMUs from a sysfs-shaped tree", async () => {
  using shim = await NativeShim.load();
  const root = await Deno.makeTempDir();
  try {
    const mk = (p: string) => Deno.mkdir(root + p, { recursive: true });
    await mk("/dev/vfio/devices");
    await Deno.writeTextFile(`${root}/dev/iommu`, "");
    for (const n of ["vfio0", "vfio1", "not-a-cdev"]) await Deno.writeTextFile(`${root}/dev/vfio/devices/${n}`, "");
    for (const n of ["7", "12", "vfio"]) await Deno.writeTextFile(`${root}/dev/vfio/${n}`, "");
    await mk("/sys/class/iommu/dmar0");
    await mk("/sys/class/vfio-dev/vfio0");
    await mk("/sys/class/vfio-dev/vfio1");
    const pci = "/sys/bus/pci/devices/0000:00:03.0";
    await mk(pci);
    await Deno.symlink("../../../0000:00:03.0", `${root}/sys/class/vfio-dev/vfio0/device`);
    await Deno.symlink("../../../bus/pci/drivers/vfio-pci", `${root}${pci}/driver`);
    await Deno.symlink("../../../kernel/iommu_groups/7", `${root}${pci}/iommu_group`);
    await Deno.symlink("../../virtual/iommu/dmar0", `${root}${pci}/iommu`);
    await Deno.writeTextFile(`${root}${pci}/vendor`, "0x1234\n");
    await Deno.writeTextFile(`${root}${pci}/device`, "0x11e8\n");
    const host = describeHost(shim, root);
    assert.equal(host.iommufd, true);
    assert.deepEqual(host.groups, [7, 12]);
    assert.deepEqual(host.iommus, ["dmar0"]);
    assert.equal(host.cdevs.length, 2);
    assert.deepEqual(host.cdevs[0], {
      cdev: "/dev/vfio/devices/vfio0",
      pci: "0000:00:03.0",
      driver: "vfio-pci",
      iommuGroup: 7,
      iommu: "dmar0",
      vendor: "0x1234",
      device: "0x11e8",
      unreadable: [],
    });
    // vfio1 has no device link: reported, not thrown.
    assert.equal(host.cdevs[1].pci, undefined);
    assert.deepEqual(host.cdevs[1].unreadable, ["/sys/class/vfio-dev/vfio1/device: errno 2"]);
    // An empty root: nothing, no error.
    assert.deepEqual(describeHost(shim, `${root}/nothing`), { iommufd: false, cdevs: [], groups: [], iommus: [] });
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
