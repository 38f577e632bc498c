// Handed-in fds (issue 16 item 4): `cli/main.ts serve --iommufd-fd N` takes an fd its parent opened, checked by the
// shim with fstat, and opens no device path. This host has no /dev/iommu, so the plumbing is shown with what it has: a
// parent shell hands in /dev/kvm (a device the shim knows, but not an iommufd) and /dev/null (one it refuses), and the
// broker refuses each with a typed error naming what it got. kernel-suite/broker_test.ts hands in /dev/iommu.
import assert from "node:assert/strict";
import { ensureShim } from "../../ffi/build.ts";
import { NativeShim } from "../../ffi/native.ts";

const kvm = await (async () => {
  using shim = await NativeShim.load();
  const fd = shim.open("/dev/kvm");
  if (fd >= 0) shim.close(fd);
  return fd;
})();
const cli = new URL("../../cli/main.ts", import.meta.url).pathname;

/** `cli/main.ts serve` with fds 3 (/dev/kvm) and 4 (/dev/null) opened by a parent shell, granted the shim only. */
async function serveWithFds(serveArgs: string[]): Promise<{ code: number; stderr: string }> {
  const shim = await ensureShim();
  const dir = await Deno.makeTempDir();
  const sock = `${dir}/relay.sock`;
  try {
    const out = await new Deno.Command("sh", {
      args: [
        "-c",
        `exec 3<>/dev/kvm 4</dev/null; exec "$0" "$@"`,
        Deno.execPath(),
        "run",
        "--quiet",
        "--no-prompt",
        `--allow-ffi=${shim}`,
        "--allow-env=IOMMU_RELAY_SHIM",
        `--allow-read=${dir}`,
        `--allow-write=${dir}`,
        `--allow-net=unix:${sock}`,
        cli,
        "serve",
        "--socket",
        sock,
        ...serveArgs,
      ],
      env: { IOMMU_RELAY_SHIM: shim, NO_COLOR: "1" },
      stdout: "piped",
      stderr: "piped",
    }).output();
    return { code: out.code, stderr: new TextDecoder().decode(out.stderr) };
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test({
  name: "serve --iommufd-fd: a handed-in fd is checked by the shim; not an iommufd, or not a device, is refused typed",
  ignore: kvm < 0,
  async fn() {
    const asKvm = await serveWithFds(["--iommufd-fd", "3"]);
    assert.equal(asKvm.code, 1, asKvm.stderr);
    assert.match(asKvm.stderr, /adopt fd 3 as an iommufd \(it is KVM\)/);
    const asNull = await serveWithFds(["--iommufd-fd", "4"]);
    assert.equal(asNull.code, 1, asNull.stderr);
    assert.match(asNull.stderr, /adopt fd 4: refused by the shim \(EACCES/);
    const notOpen = await serveWithFds(["--iommufd-fd", "9"]);
    assert.equal(notOpen.code, 1, notOpen.stderr);
    assert.doesNotMatch(notOpen.stderr, /NotCapable|Requires/, "no path was opened, so no permission was asked for");
  },
});
if (kvm < 0) console.log(`handed-fd test skipped: /dev/kvm does not open here (errno ${-kvm})`);
