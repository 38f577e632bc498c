/**
 * The Worker side of a plugin loaded with `loadPlugin`: imports the plugin module in this Worker's own realm, makes
 * its instance around a handle whose calls are round trips over the channel, then serves the host's calls. The
 * host's objects never cross: requests, reports and errors are copied as data.
 *
 * @module
 */
import { Channel, ChannelState, errorToChannel } from "./channel.ts";
import type { DeviceConfig, DeviceHandle, PluginEvent, PluginTelemetry, RelayPlugin } from "./plugin.ts";
import { pluginSpecOf } from "./plugin.ts";
import type { Request } from "../request/request.ts";
import type { DrainReport } from "../relay/queue.ts";

/** The Worker's global scope, as much of it as is used. */
const scope = globalThis as unknown as { onmessage: ((e: MessageEvent) => void) | null };

/**
 * Serve the host from this Worker: wait for the start message, get the plugin module with `load` and serve the
 * host's calls. A Worker loaded with inherited permissions runs this module itself and `import()`s the plugin; one
 * with no permissions (where `import()` of a file needs read access) starts from a generated module that imports the
 * plugin statically — the module graph of a Worker's main module is loaded without permission checks — and hands it in.
 */
export function servePlugin(load: (specifier: string) => Promise<{ default?: unknown }>): void {
  scope.onmessage = (e: MessageEvent) => void serve(e, load);
}

if (import.meta.main) servePlugin((specifier) => import(specifier));

async function serve(e: MessageEvent, load: (specifier: string) => Promise<{ default?: unknown }>): Promise<void> {
  scope.onmessage = null; // one start message; nothing else is read
  const { buffer, specifier, config } = e.data as {
    buffer: SharedArrayBuffer;
    specifier: string;
    config: DeviceConfig | undefined;
  };
  const channel = new Channel(buffer);
  let plugin: RelayPlugin | undefined;
  let name: string, version: string;
  try {
    const module = await load(specifier);
    const spec = pluginSpecOf(module.default);
    if (!spec) throw new Error(`${specifier} has no default export made with definePlugin`);
    ({ name, version } = spec);
    if (config) plugin = spec.create(remoteHandle(channel, name, config), config);
  } catch (err) {
    channel.send(ChannelState.FAILED, { error: errorToChannel(err) });
    return;
  }
  channel.send(ChannelState.READY, { value: { name, version } });
  if (!plugin) return;
  for (;;) {
    channel.waitWhile([ChannelState.READY, ChannelState.RETURN, ChannelState.FAILED], 2 ** 31);
    if (channel.state !== ChannelState.CALL) continue;
    const m = channel.read();
    try {
      let value: unknown;
      if (m.method === "submit") value = plugin.submit((m.args ?? [])[0] as Request);
      else if (m.method === "drain") value = plugin.drain();
      else if (m.method === "dispose") value = plugin[Symbol.dispose]();
      else throw new TypeError(`no method ${String(m.method)}`);
      channel.send(ChannelState.RETURN, { value: value ?? null });
    } catch (err) {
      channel.send(ChannelState.RETURN, { error: errorToChannel(err) });
    }
    if (m.method === "dispose") return;
  }
}

/** An error the host's handle threw, rebuilt here as data (its name, message and fields). */
function rebuilt(error: { name: string; message: string; fields: Record<string, unknown> }): Error {
  const e = new Error(error.message);
  e.name = error.name;
  Object.assign(e, error.fields);
  return e;
}

/** The plugin's handle in this Worker: every call a blocking round trip to the host. */
function remoteHandle(channel: Channel, name: string, config: DeviceConfig): DeviceHandle {
  const listeners = new Set<(event: PluginEvent) => void>();
  let state: "attached" | "disposed" = "attached";
  const emit = (event: PluginEvent) => {
    for (const l of [...listeners]) l(event);
  };
  const call = (method: string, args: unknown[]): unknown => {
    channel.send(ChannelState.HANDLE_CALL, { method, args });
    channel.waitWhile([ChannelState.HANDLE_CALL], 2 ** 31);
    const m = channel.read();
    if (m.error) throw rebuilt(m.error);
    return m.value;
  };
  return Object.freeze({
    name,
    domain: config.domain,
    config: Object.freeze(config),
    get state() {
      return state;
    },
    submit(request: Request): number | undefined {
      try {
        return (call("submit", [request]) ?? undefined) as number | undefined;
      } catch (e) {
        emit({ type: "refused", request, error: e as Error });
        throw e;
      }
    },
    drain(): DrainReport {
      const report = call("drain", []) as DrainReport;
      emit({ type: "drained", report });
      return report;
    },
    get telemetry(): PluginTelemetry {
      return call("telemetry", []) as PluginTelemetry;
    },
    on(listener: (event: PluginEvent) => void): () => void {
      listeners.add(listener);
      return () => void listeners.delete(listener);
    },
    [Symbol.dispose](): void {
      state = "disposed";
      emit({ type: "disposed" });
    },
  });
}
