// Handed-in fds (issue 16 item 4): a parent opens the device and passes the fd, as QEMU takes `-object iommufd,fd=N`;
// the shim checks it with fstat before it joins the table. Deno.Command cannot pass extra fds, so a shell opens them.
import assert from "node:assert/strict";
import { ensureShim } from "../../ffi/build.ts";
import { NativeShim } from "../../ffi/native.ts";

const kvm = await (async () => {
  using shim = await NativeShim.load();
  const fd = shim.open("/dev/kvm");
  if (fd >= 0) shim.close(fd);
  return fd;
})();

Deno.test({
  name: "shim: an fd handed in by the parent is taken after fstat (KVM), refused when it is not a relay's device",
  ignore: kvm < 0,
  async fn() {
    const shim = await ensureShim();
    const script = new URL("../sandbox/adopt_fds.ts", import.meta.url).pathname;
    const run =
      `exec 3<>/dev/kvm 4</dev/null; exec "$0" run --quiet --no-prompt --allow-ffi=${shim} --allow-env=IOMMU_RELAY_SHIM ${script}`;
    const out = await new Deno.Command("sh", {
      args: ["-c", run, Deno.execPath()],
      env: { IOMMU_RELAY_SHIM: shim },
      stdout: "piped",
      stderr: "piped",
    })
      .output();
    const d = new TextDecoder();
    assert.ok(out.success, d.decode(out.stderr));
    assert.deepEqual(JSON.parse(d.decode(out.stdout)), {
      beforeAdopt: "ShimRefusedError EBADF", // inherited is not enough: not in the table until checked
      adoptKvm: 3, // FD_KIND.KVM
      apiVersion: 12,
      adoptTwice: "ShimRefusedError EACCES",
      adoptNull: "ShimRefusedError EACCES", // a character device, but not one a relay uses (and read-only)
    });
  },
});
if (kvm < 0) console.log(`adopt test skipped: /dev/kvm does not open here (errno ${-kvm})`);
