// The broker soak: `cli/main.ts serve --in-process` as a subprocess under a lowered RLIMIT_NOFILE (a shell's
// `ulimit -n`), put through idle connections past its fd limit (accept() fails with EMFILE), connect/close churn,
// ATTACH and INVALIDATE floods, a client that never reads, and invalidate+sync rounds. It must end up: still serving a
// good client, its fd count back at the baseline and its heap after a GC within 1 MiB of the baseline.
//
// CI-sized by default; IOMMU_RELAY_BROKER_SOAK=full runs the figures RELIABILITY.md records (200,000 invalidate+sync,
// 10,000 connect/close).
import assert from "node:assert/strict";
import { BrokerClient, BrokerLimitError } from "../../lib/broker/client.ts";
import { BrokerOp, encodeFrame, takeFrames, u32s } from "../../lib/broker/protocol.ts";
import { encodeTlbInvalidate2017 } from "../../lib/compile/wire2017.ts";

const FULL = Deno.env.get("IOMMU_RELAY_BROKER_SOAK") === "full";
const FIGURES = FULL
  ? { invalidateSyncs: 200_000, churn: 10_000, idle: 200, nofile: 128 }
  : { invalidateSyncs: 10_000, churn: 500, idle: 80, nofile: 64 };
const cli = new URL("../../cli/main.ts", import.meta.url).pathname;

interface BrokerReport {
  heapUsed: number;
  live: number;
  acceptErrors: number;
  timedOut: number;
  refusedConnections: number;
}

/** The broker under `ulimit -n`, with a line reader over its stdout. */
function spawnBroker(dir: string, sock: string) {
  const args = [
    "run",
    "--quiet",
    "--no-prompt",
    "--v8-flags=--expose-gc",
    `--allow-read=${dir}`,
    `--allow-write=${dir}`,
    `--allow-net=unix:${sock}`,
    cli,
    "serve",
    "--in-process",
    "--socket",
    sock,
    "--device",
    "named=100:model",
    // Over the fd limit on purpose, so that accept() is what fails; short timeouts, so the test does not wait long.
    "--max-connections",
    "1000",
    "--handshake-ms",
    "60000",
    "--stall-ms",
    "300",
  ];
  const child = new Deno.Command("sh", {
    args: ["-c", `ulimit -n ${FIGURES.nofile} && exec "$0" "$@"`, Deno.execPath(), ...args],
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let buffered = "";
  const nextLine = async (prefix: string): Promise<string> => {
    for (;;) {
      const nl = buffered.indexOf("\n");
      if (nl >= 0) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        if (line.startsWith(prefix)) return line;
        continue;
      }
      const { value, done } = await reader.read();
      if (done) throw new Error(`the broker exited (${buffered})`);
      buffered += value;
    }
  };
  const report = async (): Promise<BrokerReport> => {
    child.kill("SIGUSR1");
    return JSON.parse((await nextLine("stats ")).slice("stats ".length));
  };
  // Deno reads /proc only with -A; `ls` needs no more than the suite's --allow-run.
  const fds = async () => {
    const out = await new Deno.Command("ls", { args: [`/proc/${child.pid}/fd`], stdout: "piped" }).output();
    return new TextDecoder().decode(out.stdout).split("\n").filter((l) => l.trim()).length;
  };
  return { child, reader, nextLine, report, fds };
}

const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** `count` INVALIDATE+SYNC pairs on device 1 of a raw connection, pipelined `batch` pairs at a time. */
async function invalidateSyncs(conn: Deno.Conn, count: number, batch = 250): Promise<{ failed: number }> {
  const record = encodeTlbInvalidate2017({ op: "invalidate", domain: 1, scope: { kind: "pasid", pasid: 1 } });
  let buffered: Uint8Array = new Uint8Array(0), failed = 0;
  const chunk = new Uint8Array(65536);
  for (let done = 0; done < count; done += batch) {
    const n = Math.min(batch, count - done);
    const frames: Uint8Array[] = [];
    for (let i = 0; i < n; i++) {
      frames.push(encodeFrame({ op: BrokerOp.INVALIDATE, device: 1, request: 2 * i + 1, payload: record }));
      frames.push(encodeFrame({ op: BrokerOp.SYNC, device: 1, request: 2 * i + 2, payload: new Uint8Array(0) }));
    }
    const out = new Uint8Array(frames.reduce((a, f) => a + f.byteLength, 0));
    frames.reduce((at, f) => (out.set(f, at), at + f.byteLength), 0);
    await conn.write(out);
    let answers = 0;
    while (answers < 2 * n) {
      const got = await conn.read(chunk);
      if (got === null) throw new Error("the broker closed a good connection");
      const joined = new Uint8Array(buffered.byteLength + got);
      joined.set(buffered);
      joined.set(chunk.subarray(0, got), buffered.byteLength);
      const { frames: answered, rest } = takeFrames(joined);
      buffered = rest;
      for (const f of answered) {
        answers++;
        if (f.op === BrokerOp.ERROR) failed++;
        else if (f.op === (BrokerOp.SYNC | 0x80) && new DataView(f.payload.buffer).getUint32(0, true) !== 1) failed++;
      }
    }
  }
  return { failed };
}

/** One good client: attach, bind, invalidate, sync, detach. */
async function goodClient(sock: string): Promise<boolean> {
  await using c = await client(sock);
  const dev = await c.attach(1);
  await dev.bind({
    op: "bind",
    domain: 1,
    pasid: 1,
    table: { format: "vtd-s1", tableAddress: 0x1000, addressWidth: 48 },
  });
  await dev.invalidate({ op: "invalidate", domain: 1, scope: { kind: "pasid", pasid: 1 } });
  const ok = (await dev.sync()).ok;
  await dev.detach();
  return ok;
}

const eagain = (e: unknown) => /os error 11\b/.test(String(e));

/** Connect, retrying while the listen backlog is full (EAGAIN: the broker is backing off after EMFILE). */
async function connect(sock: string): Promise<Deno.UnixConn> {
  for (let tries = 0;; tries++) {
    try {
      return await Deno.connect({ transport: "unix", path: sock });
    } catch (e) {
      if (!eagain(e) || tries > 500) throw e;
      await pause(10);
    }
  }
}

/** A BrokerClient, retrying like {@linkcode connect}. */
async function client(sock: string): Promise<BrokerClient> {
  for (let tries = 0;; tries++) {
    try {
      return await BrokerClient.connect(sock);
    } catch (e) {
      if (!eagain(e) || tries > 500) throw e;
      await pause(10);
    }
  }
}

/** Every hostile phase once, at `scale` (1 for the warm-up). */
async function hostilePhases(sock: string, scale: { churn: number; idle: number }): Promise<void> {
  // Idle connections past the fd limit: accept() fails with EMFILE until they go.
  const idle: Deno.Conn[] = [];
  for (let i = 0; i < scale.idle; i++) {
    try {
      idle.push(await Deno.connect({ transport: "unix", path: sock }));
    } catch (e) {
      // EAGAIN: the listen backlog is full too — the OS's own limit, reached with the broker out of fds.
      if (eagain(e)) break;
      throw e;
    }
  }
  for (const c of idle) c.close();
  // Connect/close churn, half of them closing mid-frame.
  const half = encodeFrame({ op: BrokerOp.ATTACH, device: 0, request: 1, payload: u32s(3, 0) }).subarray(0, 10);
  for (let i = 0; i < scale.churn; i++) {
    const c = await connect(sock);
    if (i % 2) await c.write(half);
    c.close();
  }
  // ATTACH flood to the cap, INVALIDATE flood to the cap; the connection closes with everything in flight.
  {
    await using c = await client(sock);
    let devices = 0;
    try {
      for (;;) (await c.attach(2), devices++);
    } catch (e) {
      assert.ok(e instanceof BrokerLimitError && e.limit === "devices-per-connection", String(e));
    }
    assert.equal(devices, 16);
    const dev = await c.attach(4).catch(() => undefined);
    assert.equal(dev, undefined);
    const raw = c.conn;
    const record = encodeTlbInvalidate2017({ op: "invalidate", domain: 2, scope: { kind: "all" } });
    for (let i = 0; i < 8; i++) {
      const frames = new Uint8Array(600 * (16 + record.byteLength));
      for (let j = 0; j < 600; j++) {
        frames.set(
          encodeFrame({ op: BrokerOp.INVALIDATE, device: 1, request: 1000 + j, payload: record }),
          j * (16 + record.byteLength),
        );
      }
      await raw.write(frames);
    }
  }
  // A client that floods SYNCs and never reads an answer: closed once its answers stall.
  const deaf = await connect(sock);
  await deaf.write(encodeFrame({ op: BrokerOp.ATTACH, device: 0, request: 1, payload: u32s(5, 0) }));
  const sync = encodeFrame({ op: BrokerOp.SYNC, device: 1, request: 2, payload: new Uint8Array(0) });
  const burst = new Uint8Array(sync.byteLength * 4096);
  for (let i = 0; i < 4096; i++) burst.set(sync, i * sync.byteLength);
  try {
    for (let i = 0; i < 256; i++) await deaf.write(burst);
  } catch { /* closed by the broker */ }
  deaf.close();
}

Deno.test({
  name: `broker soak: EMFILE, churn, floods, a deaf client and ${FIGURES.invalidateSyncs} invalidate+sync — ` +
    "the broker stays up, fds at baseline, heap within 1 MiB",
  sanitizeResources: false,
  async fn() {
    const dir = await Deno.makeTempDir();
    const sock = `${dir}/relay.sock`;
    const broker = spawnBroker(dir, sock);
    try {
      await broker.nextLine("listening on");
      // Warm-up: every path once, so the baseline is taken with the code compiled and the pools sized.
      assert.ok(await goodClient(sock));
      await hostilePhases(sock, { churn: 20, idle: 4 });
      {
        await using c = await client(sock);
        await (await c.attach(1)).bind({
          op: "bind",
          domain: 1,
          pasid: 1,
          table: { format: "vtd-s1", tableAddress: 0x1000, addressWidth: 48 },
        });
        assert.equal((await invalidateSyncs(c.conn, 1000)).failed, 0);
      }
      while ((await broker.report()).live > 0) await pause(20);
      const baseline = await broker.report();
      const baselineFds = await broker.fds();

      const started = performance.now();
      await hostilePhases(sock, { churn: FIGURES.churn, idle: FIGURES.idle });
      {
        await using c = await client(sock);
        await (await c.attach(1)).bind({
          op: "bind",
          domain: 1,
          pasid: 1,
          table: { format: "vtd-s1", tableAddress: 0x1000, addressWidth: 48 },
        });
        assert.equal((await invalidateSyncs(c.conn, FIGURES.invalidateSyncs)).failed, 0);
      }
      assert.ok(await goodClient(sock), "a good client is served after all of it");
      let after = await broker.report();
      while (after.live > 0) (await pause(20), after = await broker.report());
      const fds = await broker.fds();
      const seconds = (performance.now() - started) / 1000;
      const heapDelta = after.heapUsed - baseline.heapUsed;
      console.log(
        `broker soak (${FULL ? "full" : "CI"}): ${FIGURES.invalidateSyncs} invalidate+sync, ${FIGURES.churn} ` +
          `connect/close, ${FIGURES.idle} idle at nofile ${FIGURES.nofile}: accept errors ${after.acceptErrors}, ` +
          `timed out ${after.timedOut}, fds ${baselineFds} -> ${fds}, heap ${baseline.heapUsed} -> ${after.heapUsed} ` +
          `(${heapDelta >= 0 ? "+" : ""}${heapDelta} bytes), ${seconds.toFixed(1)} s`,
      );
      assert.ok(after.acceptErrors > 0, "the idle connections did run the broker out of fds (accept() failed)");
      assert.equal(fds, baselineFds, "fd count back at the baseline");
      assert.ok(Math.abs(heapDelta) < 1 << 20, `heap after GC within 1 MiB of the baseline (${heapDelta} bytes)`);
    } catch (e) {
      broker.child.kill("SIGKILL");
      const stderr = await new Response(broker.child.stderr).text().catch(() => "");
      throw new Error(`${(e as Error).message}\nbroker stderr: ${stderr}`);
    } finally {
      try {
        broker.child.kill("SIGTERM");
      } catch { /* gone */ }
      await broker.reader.cancel();
      const status = await broker.child.status;
      await broker.child.stderr.cancel().catch(() => {});
      await Deno.remove(dir, { recursive: true });
      assert.ok(status.success || status.signal === "SIGTERM" || status.signal === "SIGKILL");
    }
  },
});
