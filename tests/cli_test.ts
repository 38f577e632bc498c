// The host CLI as a user runs it: deno subprocesses with restricted permissions.
import assert from "node:assert/strict";
import { ensureShim } from "../ffi/build.ts";
import { startBroker } from "./broker/process.ts";

const cli = new URL("../cli.ts", import.meta.url).pathname;
const shim = await ensureShim();

async function run(flags: string[], args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--no-prompt", "--quiet", ...flags, cli, ...args],
    env: { IOMMU_RELAY_SHIM: shim, NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const d = new TextDecoder();
  return { code: out.code, stdout: d.decode(out.stdout), stderr: d.decode(out.stderr) };
}

const FFI = [`--allow-ffi=${shim}`, "--allow-env=IOMMU_RELAY_SHIM"];
const CDEV = "/dev/vfio/devices/vfio0";

Deno.test("cli: --help on the tool and on each command", async () => {
  const top = await run([], ["--help"]);
  assert.equal(top.code, 0);
  assert.match(top.stdout, /commands:\n {2}info/);
  for (const c of ["info", "hw-info", "probe", "replay", "serve", "bind-pasid", "invalidate", "unbind-pasid"]) {
    const r = await run([], [c, "--help"]);
    assert.equal(r.code, 0, c);
    assert.match(r.stdout, new RegExp(`usage: cli.ts ${c}`));
  }
  assert.equal((await run([], ["frobnicate"])).code, 2);
});

Deno.test("cli: an ungranted device path is refused before the shim is even loaded", async () => {
  // No --allow-ffi at all: had the CLI reached the shim, Deno would have refused the dlopen instead.
  const r = await run([], ["hw-info", CDEV]);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /not granted: \/dev\/iommu/);
  // /dev/iommu granted, the cdev not: the grant is per exact path.
  const r2 = await run([...FFI, "--allow-read=/dev/iommu", "--allow-write=/dev/iommu"], ["hw-info", CDEV]);
  assert.equal(r2.code, 2);
  assert.match(r2.stderr, new RegExp(`not granted: ${CDEV}`));
  // A read-only grant is not enough.
  const r3 = await run([...FFI, `--allow-read=/dev/iommu,${CDEV}`], ["hw-info", CDEV]);
  assert.match(r3.stderr, /not granted/);
});

Deno.test("cli: granted paths go to the shim (here: no /dev/iommu, so a typed ENOENT)", async () => {
  const hasIommu = (() => {
    try {
      Deno.statSync("/dev/iommu");
      return true;
    } catch {
      return false;
    }
  })();
  const grant = [...FFI, `--allow-read=/dev/iommu,${CDEV}`, `--allow-write=/dev/iommu,${CDEV}`];
  const r = await run(grant, ["hw-info", CDEV]);
  if (!hasIommu) {
    assert.equal(r.code, 1);
    assert.match(r.stderr, /open \/dev\/iommu: open failed with ENOENT \(2\)/);
  }
  const info = await run(grant, ["info", "--cdev", CDEV, "--json"]);
  assert.equal(info.code, 0, info.stderr);
  const report = JSON.parse(info.stdout);
  assert.ok(CDEV in report && "/dev/iommu" in report);
});

Deno.test("cli: replay runs a trace through the relay on the in-process host", async () => {
  const dir = await Deno.makeTempDir();
  const trace = `${dir}/trace.jsonl`;
  const lines = [];
  for (let i = 0; i < 10; i++) {
    lines.push(
      JSON.stringify({ op: "invalidate", domain: 1, scope: { kind: "range", firstPage: 16, pages: 4 }, noPasid: true }),
    );
    lines.push(JSON.stringify({ op: "sync" }));
  }
  await Deno.writeTextFile(trace, lines.join("\n"));
  const r = await run([`--allow-read=${dir}`], ["replay", trace, "--domain-binding", "1:rid:vtd-s1", "--json"]);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(JSON.parse(r.stdout), {
    requests: 20,
    invalidations: 10,
    waits: 10,
    failedWaits: 0,
    ioctls: 10,
    entries: 10,
  });
  await Deno.writeTextFile(trace, '{"op":"invalidate","domain":1,"scope":{"kind":"pasid","pasid":2000000}}');
  const bad = await run([`--allow-read=${dir}`], ["replay", trace]);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /trace.jsonl:1: scope.pasid: pasid-out-of-range/);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("cli: bind-pasid, invalidate and unbind-pasid act on the broker's named devices across processes", async () => {
  const dir = await Deno.makeTempDir();
  const sock = `${dir}/relay.sock`;
  const broker = await startBroker({
    sock,
    dir,
    serve: ["--in-process", "--device", "nic=1:model", "--device", "gpu=2:model"],
    until: "devices: nic, gpu",
  });
  // Each command is its own process with only the socket granted: no FFI, no device nodes.
  const client = [`--allow-read=${dir}`, `--allow-write=${sock}`, `--allow-net=unix:${sock}`];
  const call = async (...args: string[]) => {
    const r = await run(client, [...args, "--socket", sock, "--json"]);
    return { ...r, json: r.code === 0 ? JSON.parse(r.stdout) : undefined };
  };
  try {
    let r = await call("invalidate", "--device", "nic", "--pasid", "5");
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual([r.json.ok, r.json.hostIoctls], [true, 0], "nothing bound to PASID 5 yet: nothing to send");
    r = await call("bind-pasid", "--device", "nic", "--pasid", "5", "--table", "vtd-s1:0x100000");
    assert.equal(r.code, 0, r.stderr);
    r = await call("invalidate", "--device", "nic", "--pasid", "5", "--range", "0x7f000123+0x2000", "--leaf");
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(r.json.scope, { kind: "pasid-range", pasid: 5, firstPage: 0x7f000, pages: 3 }, "widened to pages");
    assert.deepEqual([r.json.ok, r.json.hostIoctls], [true, 1], "the bind made by another process is still there");
    r = await call("invalidate", "--device", "gpu", "--pasid", "5");
    assert.deepEqual([r.json.ok, r.json.hostIoctls], [true, 0], "gpu's domain 2 has no PASID 5: nic's is not reached");
    r = await call("unbind-pasid", "--device", "nic", "--pasid", "5");
    assert.equal(r.code, 0, r.stderr);
    r = await call("invalidate", "--device", "nic", "--pasid", "5");
    assert.deepEqual([r.json.ok, r.json.hostIoctls], [true, 0]);
    // Refusals: an unknown name (ENOENT from the broker), a bad table (typed, before sending), missing --pasid.
    r = await call("invalidate", "--device", "nope");
    assert.equal(r.code, 1);
    assert.match(r.stderr, /no device named 'nope' \(known: nic, gpu\) \(ENOENT, errno 2\)/);
    r = await call("bind-pasid", "--device", "nic", "--pasid", "5", "--table", "vtd-s1:0x100001");
    assert.equal(r.code, 1);
    assert.match(r.stderr, /misaligned/);
    r = await call("unbind-pasid", "--device", "nic");
    assert.equal(r.code, 2);
    // A process not granted the socket cannot reach the broker at all.
    const denied = await run([], ["invalidate", "--device", "nic", "--socket", sock]);
    assert.notEqual(denied.code, 0);
    assert.match(denied.stderr, /NotCapable|Requires (read|write|net) access/);
  } finally {
    await broker.stop();
    await Deno.remove(dir, { recursive: true });
  }
});
