// lib/kernel/sysfs.ts on a fake /dev + sysfs tree (kernel-suite/cli_test.ts reads the real one in the test VM). The shim reads only fixed places, so the fake tree is mounted there,
// in a private mount namespace (tests/sandbox/fake_host.sh).
import assert from "node:assert/strict";
import { ensureShim } from "../../ffi/build.ts";

const unshare = await new Deno.Command("unshare", { args: ["-m", "true"], stderr: "null" }).output()
  .then((r) => r.success ? undefined : "unshare -m failed (needs root)")
  .catch(() => "no unshare(1)");

Deno.test({
  name: "sysfs: cdevs, their PCI function, driver, group and IOMMU, groups and IOMMUs from a sysfs-shaped tree",
  ignore: unshare !== undefined,
  async fn() {
    const shim = await ensureShim();
    const out = await new Deno.Command("unshare", {
      args: [
        "-m",
        "sh",
        new URL("../sandbox/fake_host.sh", import.meta.url).pathname,
        Deno.execPath(),
        "run",
        "--quiet",
        `--allow-ffi=${shim}`,
        "--allow-env=IOMMU_RELAY_SHIM",
        new URL("../sandbox/describe_host.ts", import.meta.url).pathname,
      ],
      env: { IOMMU_RELAY_SHIM: shim },
      stdout: "piped",
      stderr: "piped",
    }).output();
    const d = new TextDecoder();
    assert.ok(out.success, d.decode(out.stderr));
    const host = JSON.parse(d.decode(out.stdout));
    assert.equal(host.iommufd, true);
    assert.deepEqual(host.groups, [7, 12]); // not "vfio" (the container node)
    assert.deepEqual(host.iommus, ["dmar0"]);
    // vfio0..2 are cdev names (whatever their nodes are: the shim's open checks those); not-a-cdev is not.
    assert.deepEqual(host.cdevs.map((c: { cdev: string }) => c.cdev), [
      "/dev/vfio/devices/vfio0",
      "/dev/vfio/devices/vfio1",
      "/dev/vfio/devices/vfio2",
    ]);
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
  },
});
if (unshare) console.log(`sysfs test skipped: ${unshare}`);
