// Plugins hold capabilities, not the host (issue 16 item 2), and loadPlugin runs them in Workers (lib/plugin/worker.ts): a plugin's device handle reaches nothing of the host by
// reflection; a hostile third-party plugin in its Worker fails every attack; a plugin that hangs does not hang the
// host; and two plugins on one RelayHost keep their outcomes apart across each other's barriers (issue 15 item 8).
import assert from "node:assert/strict";
import { definePlugin, loadPlugin, PluginCallError, RelayHost, relayPlugin } from "../../lib/plugin/plugin.ts";
import type { DeviceHandle } from "../../lib/plugin/plugin.ts";
import { Errno } from "../../lib/uapi/errno.ts";

const HOST_CLASSES = ["RelayQueue", "AssignedDevice", "GuestIommu", "RelayHost", "Iommufd", "NativeShim", "ModelHost"];
const table = (tableAddress: number) => ({ format: "vtd-s1" as const, tableAddress, addressWidth: 48 as const });

/** Constructor names of everything reachable from `root` (own keys, symbols, getters, prototypes). */
function reachable(root: unknown): Set<string> {
  const seen = new Set<unknown>(), names = new Set<string>();
  const todo: unknown[] = [root];
  while (todo.length) {
    const o = todo.pop();
    if (o === null || (typeof o !== "object" && typeof o !== "function") || seen.has(o)) continue;
    seen.add(o);
    const ctor = (o as { constructor?: { name?: string } }).constructor?.name;
    if (ctor) names.add(ctor);
    todo.push(Object.getPrototypeOf(o));
    for (const key of Reflect.ownKeys(o)) {
      const d: PropertyDescriptor = Object.getOwnPropertyDescriptor(o, key)!;
      if ("value" in d) todo.push(d.value);
      else {
        try {
          todo.push(d.get?.call(o));
        } catch { /* refused */ }
      }
    }
  }
  return names;
}

Deno.test("plugin capability: nothing reachable from a device handle is the host's (reflection, getters, prototypes)", () => {
  using host = RelayHost.inProcess();
  let captured: DeviceHandle | undefined;
  const spy = definePlugin({ name: "spy", version: "1", create: (device) => (captured = device) });
  using plugin = spy.create(host, { domain: 1, device: { kind: "model" } });
  plugin.submit({ op: "bind", domain: 1, pasid: 1, table: table(0x1000) });
  assert.ok(Object.isFrozen(captured));
  const names = reachable(captured);
  assert.ok(names.has("Object") && names.has("Function"), "the walk did run");
  assert.deepEqual(HOST_CLASSES.filter((c) => names.has(c)), []);
  // The telemetry is a copy: writing to it changes nothing the queue counts.
  const t = captured!.telemetry;
  (t.queue as { ioctls: number }).ioctls = 1e9;
  assert.notEqual(captured!.telemetry.queue.ioctls, 1e9);
  // A definition's create takes the host; a module's own look-alike object is not a definition loadPlugin accepts.
  assert.equal(Object.isFrozen(spy), true);
});

Deno.test("plugin capability: a hostile plugin in its Worker fails reflection, tampered built-ins, forged calls, other domains", async () => {
  const hostile = await loadPlugin(new URL("../sandbox/hostile_plugin.ts", import.meta.url), { permissions: "none" });
  using host = RelayHost.inProcess();
  const mapGet = Map.prototype.get, push = Array.prototype.push;
  using victim = relayPlugin.create(host, { domain: 2, device: { kind: "model" } });
  victim.submit({ op: "bind", domain: 2, pasid: 1, table: table(0x2000) });
  using evil = hostile.create(host, { domain: 1, device: { kind: "model" } });
  const seen = (evil.drain() as unknown as { seen: Record<string, unknown> }).seen;
  assert.deepEqual(seen, {
    objectsWalked: seen.objectsWalked,
    hostClasses: [],
    globals: [],
    unbindOther: "RequestError",
    invalidateOther: "RequestError",
    bindOther: "RequestError",
    shiftyDomain: "accepted", // copied before the check: an unbind of its own (unbound) PASID 1, a no-op
    bindOwn: "accepted",
    channelFound: true,
    forgedQueue: "TypeError",
    forgedAssign: "TypeError",
    forgedUnbindOther: "RequestError",
    forgedProto: "TypeError",
    intercepted: true, // its own realm's built-ins, that is
    dlopenLibc: "NotCapable",
    openIommu: "NotCapable",
    readPasswd: "NotCapable",
    spawn: "NotCapable",
    importPasswd: "refused",
    importRemote: "refused",
  });
  assert.ok((seen.objectsWalked as number) > 10, "it did walk");
  assert.equal(Map.prototype.get, mapGet, "the host's built-ins are untouched");
  assert.equal(Array.prototype.push, push);
  // The victim is bound as before and its invalidations still reach its own table only.
  const target = host.queue().bindings(2, 1)[0].targetId;
  host.model!.resetCoverage();
  victim.submit({ op: "invalidate", domain: 2, scope: { kind: "pasid", pasid: 1 } });
  victim.submit({ op: "sync" });
  assert.deepEqual(victim.drain().waits.map((w) => w.ok), [true]);
  assert.equal(host.model!.coverage(target).wholeSpace, true);
  assert.equal(host.queue().bindings(1, 3).length, 1, "its own bind went through");
});

Deno.test("plugin capability: a plugin that never returns is cut off with a typed error; its device is released", async () => {
  const looping = await loadPlugin(new URL("./looping_plugin.ts", import.meta.url), {
    callTimeoutMs: 300,
    permissions: "none",
  });
  using host = RelayHost.inProcess();
  const plugin = looping.create(host, { domain: 4, device: { kind: "model" } });
  assert.throws(
    () => plugin.submit({ op: "sync" }),
    (e) => e instanceof PluginCallError && /no answer/.test(e.message),
  );
  assert.throws(() => plugin.drain(), PluginCallError);
  assert.deepEqual(host.queue().domains(), [4]);
  plugin[Symbol.dispose]();
  assert.deepEqual(host.queue().domains(), [], "disposal released the device");
});

Deno.test("plugin barriers: A's bind takes neither B's failed invalidation nor B's queued wait", () => {
  using host = RelayHost.inProcess();
  using a = relayPlugin.create(host, { domain: 1, device: { kind: "model" } });
  using b = relayPlugin.create(host, { domain: 2, device: { kind: "model" } });
  a.submit({ op: "bind", domain: 1, pasid: 1, table: table(0x1000) });
  b.submit({ op: "bind", domain: 2, pasid: 1, table: table(0x2000) });
  const targetB = host.queue().bindings(2, 1)[0].targetId;
  host.model!.inject.push({ targetId: targetB, atEntry: 0, errno: Errno.values.EIO });
  const failing = b.submit({ op: "invalidate", domain: 2, scope: { kind: "pasid", pasid: 1 } })!;
  const waitB = b.submit({ op: "sync" })!;
  // A's binding change is a barrier: it sends B's invalidation (which the host fails) ...
  a.submit({ op: "bind", domain: 1, pasid: 2, table: table(0x3000) });
  assert.equal(host.model!.inject.length, 0, "the barrier sent it");
  // ... and A's own drain reports nothing of B's.
  const ra = a.drain();
  assert.deepEqual([ra.failures.length, ra.waits.length], [0, 0]);
  a.submit({ op: "unbind", domain: 1, pasid: 2 });
  const rb = b.drain();
  assert.deepEqual(rb.failures.map((f) => [f.seq, f.errno]), [[failing, Errno.values.EIO]]);
  assert.deepEqual(rb.waits, [{ seq: waitB, ok: false, firstFailed: failing }]);
  assert.deepEqual(b.drain().waits, [], "reported once");
});

Deno.test("plugin barriers: in a Worker plugin too, A's drain does not report B's failure", async () => {
  const definition = await loadPlugin(new URL("./fixtures/third_party_plugin.ts", import.meta.url), {
    permissions: "none",
  });
  using host = RelayHost.inProcess();
  using a = definition.create(host, { domain: 1, device: { kind: "model" } });
  using b = relayPlugin.create(host, { domain: 2, device: { kind: "model" } });
  b.submit({ op: "bind", domain: 2, pasid: 1, table: table(0x2000) });
  host.model!.inject.push({ targetId: host.queue().bindings(2, 1)[0].targetId, atEntry: 0, errno: Errno.values.EIO });
  b.submit({ op: "invalidate", domain: 2, scope: { kind: "all" } });
  b.submit({ op: "sync" });
  a.submit({ op: "bind", domain: 1, pasid: 1, table: table(0x1000) });
  a.submit({ op: "sync" });
  const ra = a.drain();
  assert.deepEqual([ra.failures.length, ra.waits.map((w) => w.ok)], [0, [true]]);
  const rb = b.drain();
  assert.deepEqual([rb.failures.map((f) => f.errno), rb.waits.map((w) => w.ok)], [[Errno.values.EIO], [false]]);
});
