// cli/commands/broker_clients.ts: bind-pasid, invalidate and unbind-pasid, each in its own process with only the
// socket granted, against a broker (cli/main.ts serve) in another.
import assert from "node:assert/strict";
import { run } from "../run.ts";
import { startBroker } from "../../broker/process.ts";

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
