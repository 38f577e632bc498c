// The shim stays mapped after its last NativeShim closes: a vCPU Worker that registered as a kick target (a
// thread-exit destructor in the shim) and then closed its shim must not crash the process when its thread exits.
// Before `-z nodelete` this ended in SIGSEGV, which killed the whole kernel suite mid-run.
import assert from "node:assert/strict";

Deno.test("shim: a Worker that registered for kicks, closed its shim and exited leaves the process alive", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const native = new URL("../../ffi/native.ts", import.meta.url).href;
    await Deno.writeTextFile(
      `${dir}/worker.ts`,
      `import { NativeShim } from ${JSON.stringify(native)};
const shim = await NativeShim.load();
shim.registerKickTarget();
shim[Symbol.dispose]();
postMessage("closed");
`,
    );
    await Deno.writeTextFile(
      `${dir}/main.ts`,
      `for (let i = 0; i < 3; i++) {
  const w = new Worker(new URL("./worker.ts", import.meta.url), { type: "module" });
  await new Promise((r) => w.onmessage = r);
  w.terminate();
  await new Promise((r) => setTimeout(r, 200));
}
console.log("alive");
`,
    );
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--no-check", `${dir}/main.ts`],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stdout = new TextDecoder().decode(out.stdout);
    assert.equal(out.signal, null, `killed by ${out.signal}: ${new TextDecoder().decode(out.stderr)}`);
    assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
    assert.match(stdout, /alive/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
