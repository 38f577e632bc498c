// The CLI's grants (cli/grants.ts) are exact paths: a grant on a folder is not a grant on the node in it, a granted
// symlink's target is not opened, and a granted path the shim does not open is refused by the shim.
import assert from "node:assert/strict";
import { ensureShim } from "../../ffi/build.ts";

const cli = new URL("../../cli/main.ts", import.meta.url).pathname;
const shim = await ensureShim();

async function info(grants: string[], path: string): Promise<Record<string, unknown>> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--no-prompt",
      "--quiet",
      `--allow-ffi=${shim}`,
      "--allow-env=IOMMU_RELAY_SHIM",
      ...grants,
      cli,
      "info",
      "--iommu",
      path,
      "--json",
    ],
    env: { IOMMU_RELAY_SHIM: shim, NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const d = new TextDecoder();
  assert.equal(out.code, 0, d.decode(out.stderr));
  return JSON.parse(d.decode(out.stdout));
}

const both = (p: string) => [`--allow-read=${p}`, `--allow-write=${p}`];

Deno.test("cli grants: a grant on /dev is not a grant on /dev/null or /dev/iommu; nor is a bare --allow-read", async () => {
  for (const path of ["/dev/null", "/dev/iommu"]) {
    assert.equal((await info(both("/dev"), path))[path], "not granted");
    assert.equal((await info(["--allow-read", "--allow-write"], path))[path], "not granted");
  }
});

Deno.test("cli grants: a granted symlink is not followed, even to a node the shim would open", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const link = `${dir}/iommu`;
    await Deno.symlink("/dev/kvm", link);
    assert.equal((await info(both(link), link))[link], "not granted");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("cli grants: an exact grant on a path the shim does not open is refused by the shim", async () => {
  const path = "/dev/null";
  assert.match(String((await info(both(path), path))[path]), /^refused \(EACCES/);
  // The exact grant on /dev/iommu passes the CLI; the shim answers (ENOENT on a host without iommufd).
  const iommu = (await info(both("/dev/iommu"), "/dev/iommu"))["/dev/iommu"];
  assert.ok(iommu === "present" || iommu === "unavailable (ENOENT)", String(iommu));
});
