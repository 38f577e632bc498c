// Broker mode end to end: the broker (cli/main.ts serve) in one subprocess, a VMM-side client with no FFI permission in
// another, plus misbehaving raw clients — a malformed record, an oversized frame, a disconnect mid-batch.
import assert from "node:assert/strict";
import { encodeFrame } from "../../lib/broker/protocol.ts";
import { startBroker } from "./process.ts";

const client = new URL("./remote_client.ts", import.meta.url).pathname;

async function runClient(sock: string, dir: string, domain: number) {
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--quiet",
      "--no-prompt",
      // Only the socket: reading and writing it, and connecting to it. No FFI, no devices.
      `--allow-read=${dir}`,
      `--allow-write=${sock}`,
      `--allow-net=unix:${sock}`,
      client,
      sock,
      String(domain),
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const d = new TextDecoder();
  if (!out.success) throw new Error(d.decode(out.stderr));
  return JSON.parse(d.decode(out.stdout));
}

Deno.test("broker: a VMM plugin with no FFI permission relays through the broker; bad clients do not hurt good ones", async () => {
  const dir = await Deno.makeTempDir();
  const sock = `${dir}/relay.sock`;
  const { child, reader } = await startBroker({ sock, dir, serve: ["--in-process"] });
  let rest = "";
  try {
    const first = await runClient(sock, dir, 1);
    assert.equal(first.ffi, "prompt", "the client ran without FFI permission");
    assert.deepEqual(
      first.sync,
      { ok: true, firstFailedRequest: 0, failures: 0, hostIoctls: 1, firstErrno: 0 },
      "eight invalidations, one ioctl",
    );
    assert.match(first.malformed, /^errno 7: |^errno 22: /, "a malformed record is refused, typed");
    assert.equal(first.foreignDevice, 2, "another connection's device handles are not reachable");
    assert.deepEqual(first.syncAfter.ok, true, "the connection keeps working after the refusal");

    // A client that disconnects in the middle of a frame, and one that sends an oversized frame.
    const half = await Deno.connect({ transport: "unix", path: sock });
    const frame = encodeFrame({ op: 1, device: 0, request: 1, payload: new Uint8Array(8) });
    await half.write(frame.subarray(0, 10));
    half.close();
    const big = await Deno.connect({ transport: "unix", path: sock });
    const header = encodeFrame({ op: 2, device: 1, request: 7, payload: new Uint8Array(0) });
    new DataView(header.buffer).setUint32(4, 1 << 20, true);
    await big.write(header);
    // Read everything until the broker closes the connection: one E2BIG error frame for request 7, then EOF.
    const chunks: number[] = [];
    const buf = new Uint8Array(256);
    for (let n = await big.read(buf); n !== null; n = await big.read(buf)) chunks.push(...buf.subarray(0, n));
    const answer = new Uint8Array(chunks);
    const v = new DataView(answer.buffer);
    assert.equal(answer[1], 0xff, "an error frame");
    assert.equal(v.getUint32(16, true), 7, "E2BIG");
    assert.equal(answer.length, 16 + v.getUint32(4, true), "and nothing after it: the connection was closed");
    big.close();

    // The broker still serves everyone else.
    const again = await runClient(sock, dir, 2);
    assert.deepEqual(again.sync, { ok: true, firstFailedRequest: 0, failures: 0, hostIoctls: 1, firstErrno: 0 });
  } finally {
    child.kill("SIGTERM");
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      rest += value;
    }
    await child.status;
    await child.stderr.cancel();
    await Deno.remove(dir, { recursive: true });
  }
  assert.match(rest, /broker: 4 connections, \d+ frames, [1-9]\d* refused/);
});
