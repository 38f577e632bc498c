// The broker's isolation and outcome rules, in process (listeners on temporary sockets, clients in this process):
// listener scopes, one connection per guest domain, SYNC reporting a connection's own outcomes whoever's action sent
// them, UNBIND of an unbound PASID, the caps with their typed errors, the timeouts, and what a closed connection
// leaves behind (nothing).
import assert from "node:assert/strict";
import { Broker, type BrokerLimits, type ListenerScope } from "../../lib/broker/server.ts";
import { BrokerClient, BrokerError, BrokerLimitError } from "../../lib/broker/client.ts";
import { BrokerErrno, BrokerOp, decodeError, encodeFrame, takeFrames, u32s } from "../../lib/broker/protocol.ts";
import { RelayHost, type RelayPlugin, relayPlugin } from "../../lib/plugin/plugin.ts";
import { Errno } from "../../lib/uapi/errno.ts";

const vtd = (tableAddress: number) => ({ format: "vtd-s1" as const, tableAddress, addressWidth: 48 as const });

/** A broker on `host` with one listener per scope; `stop` closes them and waits for the broker. */
async function withBroker(
  scopes: Record<string, ListenerScope>,
  fn: (ctx: { paths: Record<string, string>; host: RelayHost; broker: Broker }) => Promise<void>,
  opts: { limits?: BrokerLimits; named?: (host: RelayHost) => Map<string, RelayPlugin> } = {},
): Promise<void> {
  const dir = await Deno.makeTempDir();
  using host = RelayHost.inProcess();
  const named = opts.named?.(host) ?? new Map();
  const broker = new Broker(host, { named, limits: opts.limits });
  const listeners: Deno.Listener[] = [];
  const paths: Record<string, string> = {};
  const served: Promise<void>[] = [];
  for (const [name, scope] of Object.entries(scopes)) {
    paths[name] = `${dir}/${name}.sock`;
    const l = Deno.listen({ transport: "unix", path: paths[name] });
    listeners.push(l);
    served.push(broker.serve(l, scope));
  }
  try {
    await fn({ paths, host, broker });
  } finally {
    for (const l of listeners) l.close();
    await Promise.all(served);
    for (const p of named.values()) p[Symbol.dispose]();
    await Deno.remove(dir, { recursive: true });
  }
}

const errnoOf = (p: Promise<unknown>) =>
  p.then(() => "accepted", (e) => (e instanceof BrokerError ? e.errno : `untyped: ${e}`));

Deno.test("broker isolation: listeners serve their own domains and devices; a domain belongs to one connection", async () => {
  await withBroker(
    { vm1: { domains: [1, 2], devices: ["gpu"] }, vm2: { domains: [3], devices: [] }, any: {} },
    async ({ paths, host }) => {
      await using a = await BrokerClient.connect(paths.vm1);
      await using b = await BrokerClient.connect(paths.vm2);
      await using c = await BrokerClient.connect(paths.any);
      assert.equal(await errnoOf(b.attach(1)), BrokerErrno.EACCES, "vm2's socket does not serve domain 1");
      assert.equal(await errnoOf(b.open("gpu")), BrokerErrno.ENOENT, "nor the named device gpu");
      assert.equal(await errnoOf(c.attach(5)), BrokerErrno.EBUSY, "domain 5 is the named device's");
      const devA = await a.attach(1);
      assert.equal(await errnoOf(c.attach(1)), BrokerErrno.EBUSY, "domain 1 is connection a's");
      const devB = await b.attach(3);
      const devC = await c.attach(4);
      await devA.bind({ op: "bind", domain: 1, pasid: 1, table: vtd(0x1000) });
      await devB.bind({ op: "bind", domain: 3, pasid: 1, table: vtd(0x2000) });
      await devC.bind({ op: "bind", domain: 4, pasid: 1, table: vtd(0x3000) });
      const gpu = await a.open("gpu");
      await gpu.bind({ op: "bind", domain: 5, pasid: 1, table: vtd(0x4000) });
      host.model!.resetCoverage();

      // c's invalidate-all, in its own domain: reaches its own table and nobody else's.
      await devC.invalidate({ op: "invalidate", domain: 4, scope: { kind: "all" } });
      assert.equal((await devC.sync()).ok, true);
      const target = (domain: number) => host.queue().bindings(domain, 1)[0].targetId;
      assert.equal(host.model!.coverage(target(4)).wholeSpace, true);
      for (const d of [1, 3, 5]) assert.deepEqual(host.model!.coverage(target(d)), { wholeSpace: false, pages: 0 });

      // A record naming another domain is decoded into the device's own domain: still its own table only.
      await devB.invalidate({ op: "invalidate", domain: 1, scope: { kind: "all" } });
      await devB.sync();
      assert.equal(host.model!.coverage(target(3)).wholeSpace, true);
      assert.equal(host.model!.coverage(target(1)).wholeSpace, false);

      // A handle is per connection: b cannot name a's.
      assert.equal(await errnoOf(b.call(BrokerOp.SYNC, devA.handle + 100)), BrokerErrno.ENOENT);

      // When a closes, its domain is free again, and the named device keeps its binding.
      await a[Symbol.asyncDispose]();
      for (let i = 0; i < 50 && host.queue().bindings(1, 1).length; i++) await new Promise((r) => setTimeout(r, 10));
      assert.deepEqual(host.queue().bindings(1, 1), [], "a's device was released");
      assert.equal(host.queue().bindings(5, 1).length, 1, "the named device survived its client");
      await c.attach(1);
    },
    { named: (host) => new Map([["gpu", relayPlugin.create(host, { domain: 5, device: { kind: "model" } })]]) },
  );
});

Deno.test("broker isolation: MAP_MEMORY, which changes every device's guest RAM, is refused on a scoped listener", async () => {
  // Checked before anything else of the frame, so the in-process host (no memfd socket: EOPNOTSUPP otherwise) shows
  // it; kernel-suite/map_file_test.ts maps for real and checks one owner at a time and the cap.
  await withBroker({ tenant: { domains: [1], devices: [] }, whole: {} }, async ({ paths }) => {
    await using tenant = await BrokerClient.connect(paths.tenant);
    await using whole = await BrokerClient.connect(paths.whole);
    const payload = new Uint8Array(24);
    assert.equal(await errnoOf(tenant.call(BrokerOp.MAP_MEMORY, 0, payload)), BrokerErrno.EACCES);
    assert.equal(await errnoOf(whole.call(BrokerOp.MAP_MEMORY, 0, payload)), BrokerErrno.EOPNOTSUPP);
  });
});

Deno.test("broker outcomes: SYNC reports a connection's own failures, whoever's action sent them", async () => {
  await withBroker({ vm: {} }, async ({ paths, host }) => {
    await using a = await BrokerClient.connect(paths.vm);
    await using b = await BrokerClient.connect(paths.vm);
    const devA = await a.attach(1);
    const devB = await b.attach(2);
    await devA.bind({ op: "bind", domain: 1, pasid: 1, table: vtd(0x1000) });
    await devB.bind({ op: "bind", domain: 2, pasid: 1, table: vtd(0x2000) });
    const targetB = host.queue().bindings(2, 1)[0].targetId;

    // B's invalidation fails on the host; A's BIND (a barrier) is what sends it.
    host.model!.inject.push({ targetId: targetB, atEntry: 0, errno: Errno.values.EIO });
    await devB.invalidate({ op: "invalidate", domain: 2, scope: { kind: "pasid", pasid: 1 } });
    const failedRequest = (await b.call(
      BrokerOp.INVALIDATE,
      devB.handle,
      new Uint8Array(0),
    ).catch((e) => e)) as BrokerError; // a malformed record is refused, not counted
    assert.equal(failedRequest.errno, BrokerErrno.EINVAL);
    await devA.bind({ op: "bind", domain: 1, pasid: 2, table: vtd(0x3000) });
    assert.equal(host.model!.inject.length, 0, "A's barrier sent B's invalidation (and the host failed it)");

    const syncA = await devA.sync();
    assert.deepEqual([syncA.ok, syncA.failures], [true, 0], "A is not told of B's failure");
    const syncB = await devB.sync();
    assert.deepEqual([syncB.ok, syncB.failures, syncB.firstErrno], [false, 1, Errno.values.EIO]);
    assert.ok(syncB.firstFailedRequest > 0, "the failure names B's own request id");
    const again = await devB.sync();
    assert.deepEqual([again.ok, again.failures], [true, 0], "reported once: only what happened since the last SYNC");
  });
});

Deno.test("broker outcomes: on a named device two clients share, each SYNC reports only its own invalidations", async () => {
  await withBroker(
    { vm: {} },
    async ({ paths, host }) => {
      await using a = await BrokerClient.connect(paths.vm);
      await using b = await BrokerClient.connect(paths.vm);
      const gpuA = await a.open("gpu");
      const gpuB = await b.open("gpu");
      await gpuA.bind({ op: "bind", domain: 7, pasid: 1, table: vtd(0x1000) });
      const target = host.queue().bindings(7, 1)[0].targetId;
      await gpuA.invalidate({ op: "invalidate", domain: 7, scope: { kind: "pasid", pasid: 1 } });
      // The next batch to the table fails: A's own SYNC drains B's invalidation with it.
      await gpuA.sync();
      host.model!.inject.push({ targetId: target, atEntry: 0, errno: Errno.values.EIO });
      await gpuB.invalidate({ op: "invalidate", domain: 7, scope: { kind: "pasid", pasid: 1 } });
      const syncA = await gpuA.sync();
      assert.deepEqual([syncA.ok, syncA.failures], [true, 0], "A drained it, but it is B's");
      const syncB = await gpuB.sync();
      assert.deepEqual([syncB.ok, syncB.failures, syncB.firstErrno], [false, 1, Errno.values.EIO]);
      // UNBIND of what is not bound is ENOENT; of what is, it succeeds once.
      assert.equal(await errnoOf(gpuB.unbind(9)), Errno.values.ENOENT);
      await gpuB.unbind(1);
      assert.equal(await errnoOf(gpuA.unbind(1)), Errno.values.ENOENT);
      assert.equal(await errnoOf(gpuA.unbind("rid")), Errno.values.ENOENT);
    },
    { named: (host) => new Map([["gpu", relayPlugin.create(host, { domain: 7, device: { kind: "model" } })]]) },
  );
});

Deno.test("broker caps: connections, devices per connection, pending invalidations — each a typed error", async () => {
  await withBroker(
    { vm: {} },
    async ({ paths, broker }) => {
      const limitOf = (p: Promise<unknown>) =>
        p.then(() => "accepted", (e) => (e instanceof BrokerLimitError ? e.limit : `other: ${e}`));
      await using a = await BrokerClient.connect(paths.vm);
      await using b = await BrokerClient.connect(paths.vm);
      const dev = await a.attach(1);
      await a.attach(1);
      assert.equal(await limitOf(a.attach(1)), "devices-per-connection");
      await dev.bind({ op: "bind", domain: 1, pasid: 1, table: vtd(0x1000) });
      const inv = { op: "invalidate", domain: 1, scope: { kind: "pasid", pasid: 1 } } as const;
      for (let i = 0; i < 3; i++) await dev.invalidate(inv);
      assert.equal(await limitOf(dev.invalidate(inv)), "pending-per-connection");
      assert.equal((await dev.sync()).ok, true);
      await dev.invalidate(inv); // room again after the SYNC
      await b.attach(2);
      const third = await BrokerClient.connect(paths.vm);
      assert.equal(await limitOf(third.attach(3)), "connections");
      await third[Symbol.asyncDispose]();
      assert.equal(broker.stats.refusedConnections, 1);
    },
    { limits: { maxConnections: 2, maxDevicesPerConnection: 2, maxPendingPerConnection: 3 } },
  );
});

/** Read until EOF; returns the error frames' errnos. */
async function errnosUntilClosed(conn: Deno.Conn): Promise<number[]> {
  const bytes: number[] = [];
  const buf = new Uint8Array(4096);
  for (let n = await conn.read(buf).catch(() => null); n !== null; n = await conn.read(buf).catch(() => null)) {
    bytes.push(...buf.subarray(0, n));
  }
  conn.close();
  return takeFrames(new Uint8Array(bytes)).frames.filter((f) => f.op === BrokerOp.ERROR).map((f) =>
    decodeError(f.payload).errno
  );
}

Deno.test("broker timeouts: a silent connection and a connection that never reads are closed; others go on", async () => {
  await withBroker(
    { vm: {} },
    async ({ paths, broker, host }) => {
      const silent = await Deno.connect({ transport: "unix", path: paths.vm });
      assert.deepEqual(await errnosUntilClosed(silent), [BrokerErrno.ETIMEDOUT]);

      // Attach a device, then flood SYNCs without reading a single answer: the broker's writes stall, and it
      // closes the connection (releasing the device) instead of waiting on it forever.
      const deaf = await Deno.connect({ transport: "unix", path: paths.vm });
      await deaf.write(encodeFrame({ op: BrokerOp.ATTACH, device: 0, request: 1, payload: u32s(9, 0) }));
      const sync = encodeFrame({ op: BrokerOp.SYNC, device: 1, request: 2, payload: new Uint8Array(0) });
      const burst = new Uint8Array(sync.byteLength * 4096);
      for (let i = 0; i < 4096; i++) burst.set(sync, i * sync.byteLength);
      let writes = 0;
      try {
        for (; writes < 256; writes++) await deaf.write(burst);
      } catch { /* closed by the broker: expected */ }
      deaf.close();
      while (broker.stats.live > 0) await new Promise((r) => setTimeout(r, 20));
      assert.ok(broker.stats.timedOut >= 2);
      assert.deepEqual(host.queue().domains(), [], "the deaf connection's device was released");

      await using good = await BrokerClient.connect(paths.vm);
      const dev = await good.attach(9);
      assert.equal((await dev.sync()).ok, true);
    },
    { limits: { handshakeMs: 100, stallMs: 200, idleMs: 60_000 } },
  );
});

Deno.test("broker: a closed connection leaves nothing — domains, bindings, in-flight records, claims", async () => {
  await withBroker({ vm: {} }, async ({ paths, host, broker }) => {
    for (let round = 0; round < 3; round++) {
      const c = await BrokerClient.connect(paths.vm);
      const dev = await c.attach(1);
      await dev.bind({ op: "bind", domain: 1, pasid: round + 1, table: vtd(0x1000) });
      for (let i = 0; i < 5; i++) await dev.invalidate({ op: "invalidate", domain: 1, scope: { kind: "all" } });
      // Closed with invalidations in flight and no SYNC.
      await c[Symbol.asyncDispose]();
      while (broker.liveConnections > 0) await new Promise((r) => setTimeout(r, 10));
    }
    assert.deepEqual(host.queue().domains(), []);
    assert.equal(host.queue().pending, false);
    assert.deepEqual([broker.stats.live, broker.stats.closed], [0, 3]);
  });
});
