/**
 * The plugin a VMM loads once per assigned device. A {@linkcode RelayHost} holds what one VM's plugins share —
 * one iommufd (or the in-process host), one relay queue and device layer per guest vIOMMU — and a plugin instance
 * relays one device's guest requests through it. Plugins are defined with {@linkcode definePlugin} and can be
 * loaded by module specifier with {@linkcode loadPlugin}, so a third-party plugin is one `import()` away.
 *
 * Lifecycle: created → attached (device assigned, ready for requests) → disposed. Isolation: a plugin holds a
 * {@linkcode DeviceHandle} — a capability for its own device in its own guest domain — never the `RelayHost`, the
 * shared queue or the device layer; a request for another domain is refused with a typed error. A third-party
 * plugin loaded with {@linkcode loadPlugin} runs in a Worker of its own (its own realm and built-ins) and reaches
 * its handle only by message passing.
 *
 * @module
 */
import { loadedShimPaths, type NativeShim } from "../../ffi/native.ts";
import type { DrainReport, QueueTelemetry } from "../relay/queue.ts";
import type { DrainOutcome } from "../relay/outcome.ts";
import { type Request, RequestError } from "../request/request.ts";
import { type AssignedDevice, type DeviceTelemetry, GuestIommu, type ViommuMode } from "../device/assigned.ts";
import type { DeviceHost, DevicePort } from "../host/device_host.ts";
import { MockPort, VfioPort } from "../host/ports.ts";
import { KernelDeviceHost } from "../host/kernel_device_host.ts";
import { ModelDeviceHost } from "../host/model_device_host.ts";
import { KernelError, LimitError, UnsupportedError } from "../kernel/errors.ts";
import { RelayQueue } from "../relay/queue.ts";
import { ModelIoas } from "../shadow/model_ioas.ts";
import { ShadowBackend } from "../shadow/backend.ts";
import type { ShadowDomain, ShadowTelemetry } from "../shadow/domain.ts";
import type { WalkFault } from "../shadow/walk.ts";
import { KernelShadowIoas } from "../shadow/kernel_ioas.ts";
import { Iommufd } from "../kernel/iommufd.ts";
import { VfioDevice } from "../kernel/vfio.ts";
import type { Ioas, ObservedInvalidation } from "../kernel/iommufd.ts";
import { ModelHost } from "../host/model.ts";
import { Channel, ChannelState, errorToChannel } from "./channel.ts";
import { Errno } from "../uapi/errno.ts";
import { MockConstants } from "../uapi/mod.ts";

/** The host device behind a plugin instance. */
export type DeviceSource =
  | { readonly kind: "vfio"; readonly path: string }
  /** A VFIO cdev handed in already open (fd `fd`): no device path is opened. */
  | { readonly kind: "vfio-fd"; readonly fd: number }
  | { readonly kind: "mock"; readonly pasid?: boolean }
  | { readonly kind: "model" };

/** What a VMM hands the loader for one device. */
export interface DeviceConfig {
  /** The device's guest domain (VT-d DID, the guest's domain for SMMUv3 / virtio-iommu). */
  readonly domain: number;
  /** Which guest vIOMMU the device is behind; devices of one vIOMMU share its relay queue. Default "0". */
  readonly viommu?: string;
  /** Which host device backs it. */
  readonly device: DeviceSource;
  /** The device's guest-visible id, in vIOMMU mode. */
  readonly virtId?: number;
  /** ATS enabled (SMMUv3: the relay sends ATC_INV). */
  readonly ats?: boolean;
  /**
   * Nested translation or shadow mode. "auto" (default): nested where the host offers a nesting parent for the
   * device, else shadow if `shadow` is given; "nested" / "shadow" force one.
   */
  readonly mode?: "auto" | "nested" | "shadow";
  /** PASIDs this device may have bound at once (default 4096); one more bind is a `LimitError`. */
  readonly maxPasids?: number;
  /** For shadow mode: the guest's RAM as the VMM holds it (guest-physical 0 at offset 0, page aligned). */
  readonly shadow?: { readonly ram: Uint8Array };
}

/** What a device plugin drives: one assigned device of the device layer (kernel or in-process, nested or shadow). */
export type RelayDevice = AssignedDevice;

/**
 * One VM's shared relay resources.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { RelayHost, relayPlugin } from "./plugin.ts";
 * using host = RelayHost.inProcess();
 * using nic = relayPlugin.create(host, { domain: 1, device: { kind: "model" } });
 * nic.submit({ op: "bind", domain: 1, pasid: 2, table: { format: "vtd-s1", tableAddress: 0x1000, addressWidth: 48 } });
 * nic.submit({ op: "invalidate", domain: 1, scope: { kind: "pasid", pasid: 2 } });
 * nic.submit({ op: "sync" });
 * assert.ok(nic.drain().waits[0].ok);
 * ```
 */
export class RelayHost implements Disposable {
  readonly #guests = new Map<string, GuestIommu>();
  readonly #host: DeviceHost;
  #disposed = false;

  private constructor(
    /** The in-process host, when the VM runs without a kernel. */
    readonly model: ModelHost | undefined,
    /** The iommufd and IOAS, when it runs on the kernel. */
    readonly iommufd: Iommufd | undefined,
    readonly ioas: Ioas | undefined,
    readonly viommuMode: ViommuMode | undefined,
  ) {
    this.#host = model ? new ModelDeviceHost(model) : new KernelDeviceHost(iommufd!, ioas!);
  }

  /** A VM on the in-process host (the default for scripted tests and the demo). */
  static inProcess(): RelayHost {
    return new RelayHost(new ModelHost(), undefined, undefined, undefined);
  }

  /**
   * A VM on the kernel: opens `/dev/iommu` (or `path`) — or adopts `fd`, an iommufd handed in already open — and
   * allocates the guest-physical IOAS.
   */
  static kernel(shim: NativeShim, opts: { path?: string; fd?: number; viommu?: ViommuMode } = {}): RelayHost {
    if (opts.fd !== undefined && opts.path !== undefined) throw new TypeError("RelayHost.kernel takes a path or an fd");
    const iommufd = opts.fd !== undefined ? Iommufd.fromFd(shim, opts.fd) : Iommufd.open(shim, opts.path);
    try {
      return new RelayHost(undefined, iommufd, iommufd.allocIoas(), opts.viommu);
    } catch (e) {
      iommufd[Symbol.dispose]();
      throw e;
    }
  }

  /** The relay queue of guest vIOMMU `name` (created on first use). */
  queue(name = "0"): RelayQueue {
    return this.#guest(name).queue;
  }

  /**
   * Watch every invalidation call the host takes: on a kernel host each `IOMMU_HWPT_INVALIDATE` as the shim passed
   * it ({@linkcode Iommufd.observeInvalidations}), in process the model's. For a VMM's own checks that must not
   * trust the relay's counters; a plugin never holds the host, so it cannot watch another device. Returns the
   * function that stops watching.
   *
   * @example
   * ```ts
   * import assert from "node:assert/strict";
   * import { RelayHost, relayPlugin } from "./plugin.ts";
   * using host = RelayHost.inProcess();
   * const seen: number[] = [];
   * const stop = host.observeHostInvalidations((call) => seen.push(call.objectId));
   * using nic = relayPlugin.create(host, { domain: 1, device: { kind: "model" } });
   * nic.submit({ op: "bind", domain: 1, pasid: 5, table: { format: "vtd-s1", tableAddress: 0x4000, addressWidth: 48 } });
   * nic.submit({ op: "invalidate", domain: 1, scope: { kind: "pasid", pasid: 5 } });
   * nic.submit({ op: "sync" });
   * stop();
   * assert.deepEqual(seen, [host.queue().bindings(1, 5)[0].targetId]);
   * ```
   */
  observeHostInvalidations(observer: (call: ObservedInvalidation) => void): () => void {
    if (this.#disposed) throw new Error("the RelayHost was disposed");
    return this.iommufd ? this.iommufd.observeInvalidations(observer) : this.model!.observeInvalidations(observer);
  }

  /** The shadowed domain `domain` of guest vIOMMU `name`, if a shadow-mode device of it is assigned. */
  shadowDomain(domain: number, name = "0"): ShadowDomain | undefined {
    return this.#guests.get(name)?.shadow?.domain(domain);
  }

  #guest(name: string): GuestIommu {
    if (this.#disposed) throw new Error("the RelayHost was disposed");
    let g = this.#guests.get(name);
    if (!g) {
      // One queue per guest vIOMMU, whose backend also serves the guest's shadowed domains.
      const queue = new RelayQueue(new ShadowBackend(this.#host.backend));
      g = new GuestIommu(this.#host, { viommu: this.viommuMode, queue });
      this.#guests.set(name, g);
    }
    return g;
  }

  /** The host port of a device source (the in-process host takes model devices; the kernel vfio or mock ones). */
  #port(src: DeviceSource): DevicePort {
    if (this.#host instanceof ModelDeviceHost) {
      if (src.kind !== "model") throw new TypeError(`an in-process RelayHost takes model devices, not ${src.kind}`);
      return this.#host.port();
    }
    if (src.kind === "model") throw new TypeError("a kernel RelayHost takes vfio or mock devices");
    if (src.kind === "vfio-fd") return VfioPort.bind(VfioDevice.fromFd(this.iommufd!.shim, src.fd), this.iommufd!);
    return src.kind === "vfio"
      ? VfioPort.open(this.iommufd!.shim, this.iommufd!, src.path)
      : MockPort.create(this.iommufd!, this.ioas!.id, src.pasid ? MockConstants.values.MOCK_FLAGS_DEVICE_PASID : 0);
  }

  /** Assign a device (the plugin loader's job; a failed assignment leaves nothing behind). */
  assign(config: DeviceConfig): RelayDevice {
    const mode = config.mode ?? "auto";
    const guest = this.#guest(config.viommu ?? "0");
    if (mode === "shadow") return this.#assignShadow(guest, config);
    try {
      return guest.assign(this.#port(config.device), { domain: config.domain, virtId: config.virtId, ats: config.ats });
    } catch (e) {
      // No nesting parent for this device (QEMU's VT-d, older IOMMUs): shadow it, if the VMM gave its RAM.
      const noNesting = (e instanceof KernelError && e.errno === Errno.values.EOPNOTSUPP) ||
        e instanceof UnsupportedError;
      if (mode === "auto" && config.shadow && noNesting) return this.#assignShadow(guest, config);
      throw e;
    }
  }

  #assignShadow(guest: GuestIommu, config: DeviceConfig): RelayDevice {
    const ram = config.shadow?.ram;
    if (!ram) throw new TypeError("shadow mode needs the guest's RAM (DeviceConfig.shadow.ram)");
    const model = this.model, iommufd = this.iommufd;
    guest.enableShadow({
      ram,
      newSpace: () => {
        if (model) return { port: new ModelIoas() };
        const ioas = iommufd!.allocIoas();
        return { port: new KernelShadowIoas(ioas, ram), release: ioas, ioasId: ioas.id };
      },
    });
    return guest.assign(this.#port(config.device), { domain: config.domain, mode: "shadow" });
  }

  /** Dispose the vIOMMUs (and their devices), then the IOAS and the iommufd. */
  [Symbol.dispose](): void {
    if (this.#disposed) return;
    this.#disposed = true;
    const stack = new DisposableStack();
    if (this.iommufd) stack.use(this.iommufd);
    if (this.ioas) stack.use(this.ioas);
    for (const g of this.#guests.values()) stack.use(g);
    stack.dispose();
  }
}

/** Events a plugin emits. */
export type PluginEvent =
  | { readonly type: "drained"; readonly report: DrainReport }
  | { readonly type: "refused"; readonly request: Request; readonly error: Error }
  /** Shadow mode: pages of the guest's table the host will not map (they stay unmapped; the device faults). */
  | { readonly type: "shadow-fault"; readonly fault: WalkFault }
  | { readonly type: "disposed" };

/** A plugin's counters: its device's, its queue's (shared by the vIOMMU), its mode and, shadowed, the domain's. */
export interface PluginTelemetry {
  /** Nested translation or shadow mode. */
  readonly mode: "nested" | "shadow";
  /** The device's own counters (requests, binds, replaces, unbinds, refusals). */
  readonly device: DeviceTelemetry;
  /** The relay queue's counters, shared by every device behind the same guest vIOMMU. */
  readonly queue: QueueTelemetry;
  /** Shadow mode: the shadowed domain's counters (maps, unmaps, areas kept, walk faults). */
  readonly shadow?: ShadowTelemetry;
}

/** A plugin instance: one device's relay. */
export interface RelayPlugin extends Disposable {
  /** The plugin definition's name. */
  readonly name: string;
  /** `attached` until disposed; a disposed plugin refuses every call. */
  readonly state: "attached" | "disposed";
  /** The configuration the device was assigned with. */
  readonly config: DeviceConfig;
  /** Relay a guest request; returns its sequence number (binds and unbinds: undefined). Refusals throw typed errors. */
  submit(request: Request): number | undefined;
  /** Send what is pending; the report carries each wait's completion and guest-visible failures. */
  drain(): DrainReport;
  /** The same, refilling `out` in place (the allocation-free form for a doorbell; optional for third parties). */
  drainInto?(out: DrainOutcome): DrainOutcome;
  /** Counters, as copies taken when read. */
  readonly telemetry: PluginTelemetry;
  /** Subscribe to events; returns the unsubscribe function. */
  on(listener: (event: PluginEvent) => void): () => void;
}

/**
 * What a plugin holds: a capability for one assigned device, in its guest domain — submit, drain, its telemetry
 * (copies) and its own events. It is a frozen object of closures: no property, prototype or getter of it leads to
 * the device layer, the shared queue, another device, the iommufd or the shim. A plugin made with
 * {@linkcode definePlugin} gets one per instance, and may return it as its {@linkcode RelayPlugin} as it is.
 */
export interface DeviceHandle extends RelayPlugin {
  /** The device's guest domain: the only one its requests may name. */
  readonly domain: number;
}

/** What {@linkcode definePlugin} takes. */
export interface PluginSpec {
  /** The plugin's name, as `loadPlugin` and telemetry report it. */
  readonly name: string;
  /** Its version (free-form, semver by convention). */
  readonly version: string;
  /** Make one instance around its device's handle (the host assigned the device already). */
  create(device: DeviceHandle, config: DeviceConfig): RelayPlugin;
}

/** A plugin definition, as {@linkcode definePlugin} makes and {@linkcode loadPlugin} returns. */
export interface PluginDefinition {
  /** Marks a value made by `definePlugin`: what `loadPlugin` checks a module's default export for. */
  readonly kind: "iommu-relay-plugin";
  /** The plugin's name. */
  readonly name: string;
  /** Its version. */
  readonly version: string;
  /**
   * Where the plugin's code runs: "host" (made with {@linkcode definePlugin} in the host's realm: code as trusted as
   * the VMM), "worker" (loaded with {@linkcode loadPlugin}: a Worker of its own per instance, holding the process's
   * Deno permissions), "worker-no-permissions" (the same, with none: needs `--unstable-worker-options`).
   */
  readonly isolation: "host" | "worker" | "worker-no-permissions";
  /** Assign the device on `host` and make the plugin instance around its handle; the host is never handed over. */
  create(host: RelayHost, config: DeviceConfig): RelayPlugin;
}

/** Specs behind the definitions this module made (a module's own object claiming to be one is not). */
const SPECS = new WeakMap<object, PluginSpec>();

/** @internal The spec behind a definition {@linkcode definePlugin} made (the Worker side's loader uses it). */
export function pluginSpecOf(definition: unknown): PluginSpec | undefined {
  return typeof definition === "object" && definition !== null ? SPECS.get(definition) : undefined;
}

/**
 * Define a plugin: `create` gets a {@linkcode DeviceHandle} for its device, never the host.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { definePlugin, RelayHost } from "./plugin.ts";
 * const counting = definePlugin({
 *   name: "counting",
 *   version: "1.0.0",
 *   create: (device) => device, // a plugin may relay through its handle as it is
 * });
 * using host = RelayHost.inProcess();
 * using nic = counting.create(host, { domain: 1, device: { kind: "model" } });
 * assert.deepEqual(Object.keys(nic).sort(), ["config", "domain", "drain", "drainInto", "name", "on", "state", "submit", "telemetry"]);
 * assert.throws(() => nic.submit({ op: "invalidate", domain: 2, scope: { kind: "all" } }), /domain/);
 * ```
 */
export function definePlugin(spec: PluginSpec): PluginDefinition {
  if (!spec || !spec.name || typeof spec.create !== "function") {
    throw new TypeError("definePlugin needs a name and a create function");
  }
  const frozen: PluginSpec = Object.freeze({
    name: String(spec.name),
    version: String(spec.version),
    create: spec.create,
  });
  const definition: PluginDefinition = Object.freeze({
    kind: "iommu-relay-plugin" as const,
    name: frozen.name,
    version: frozen.version,
    isolation: "host" as const,
    create(host: RelayHost, config: DeviceConfig): RelayPlugin {
      const handle = deviceHandle(frozen.name, host, config);
      let plugin: RelayPlugin;
      try {
        plugin = frozen.create(handle, config);
      } catch (e) {
        handle[Symbol.dispose]();
        throw e;
      }
      return plugin === handle ? handle : owning(plugin, handle);
    },
  });
  SPECS.set(definition, frozen);
  return definition;
}

/** A plugin that returned its own object: disposing it also releases the device (whatever the plugin does). */
function owning(plugin: RelayPlugin, handle: DeviceHandle): RelayPlugin {
  return Object.freeze({
    get name() {
      return plugin.name;
    },
    get state() {
      return handle.state;
    },
    get config() {
      return handle.config;
    },
    submit: (request: Request) => plugin.submit(request),
    drain: () => plugin.drain(),
    ...(plugin.drainInto ? { drainInto: (out: DrainOutcome) => plugin.drainInto!(out) } : {}),
    get telemetry() {
      return plugin.telemetry;
    },
    on: (listener: (event: PluginEvent) => void) => plugin.on(listener),
    [Symbol.dispose]() {
      try {
        plugin[Symbol.dispose]();
      } finally {
        handle[Symbol.dispose]();
      }
    },
  });
}

/** A deep, frozen copy of a device config (the guest RAM stays the VMM's own buffer). */
function frozenConfig(config: DeviceConfig): DeviceConfig {
  const { shadow, ...rest } = config;
  const copy = structuredClone(rest) as DeviceConfig;
  const deepFreeze = (o: unknown) => {
    if (o && typeof o === "object") { for (const v of Object.values(Object.freeze(o))) deepFreeze(v); }
  };
  deepFreeze(copy);
  return Object.freeze(shadow ? { ...copy, shadow: Object.freeze({ ram: shadow.ram }) } : copy);
}

/**
 * Assign a device on `host` and make its capability: closures over the device, nothing else.
 */
function deviceHandle(name: string, host: RelayHost, config: DeviceConfig): DeviceHandle {
  const device = host.assign(config);
  const domain = config.domain;
  const frozen = frozenConfig(config);
  const maxPasids = config.maxPasids ?? 4096;
  const pasids = new Set<number>();
  const listeners = new Set<(event: PluginEvent) => void>();
  let state: "attached" | "disposed" = "attached";
  const emit = (event: PluginEvent) => {
    for (const l of [...listeners]) l(event);
  };
  const unsubscribe = device.onShadowFault?.((fault) => emit({ type: "shadow-fault", fault: structuredClone(fault) }));
  const refuse = (request: Request, error: Error): never => {
    emit({ type: "refused", request, error });
    throw error;
  };
  const handle: DeviceHandle = {
    name,
    domain,
    config: frozen,
    get state() {
      return state;
    },
    submit(request: Request): number | undefined {
      if (state === "disposed") throw new Error(`${name}: the plugin was disposed`);
      // A structured copy: a getter or a proxy of the caller's cannot change the request between checks and use.
      let r: Request;
      try {
        r = structuredClone(request);
      } catch {
        return refuse(request, new RequestError("conflicting-flags", "request", "a request is plain data"));
      }
      if (r === null || typeof r !== "object") {
        return refuse(request, new RequestError("conflicting-flags", "request", "a request is an object"));
      }
      if (r.op !== "sync" && r.domain !== domain) {
        return refuse(
          request,
          new RequestError(
            "conflicting-flags",
            "domain",
            `this device is in guest domain ${domain}; a request for domain ${r.domain} is not its to relay`,
          ),
        );
      }
      const newPasid = r.op === "bind" && typeof r.pasid === "number" && !pasids.has(r.pasid);
      if (newPasid && pasids.size >= maxPasids) {
        return refuse(
          request,
          new LimitError("pasids-per-device", maxPasids, "unbind a PASID first, or raise DeviceConfig.maxPasids"),
        );
      }
      try {
        const seq = device.handle(r);
        if (r.op === "bind" && typeof r.pasid === "number") pasids.add(r.pasid);
        if (r.op === "unbind" && typeof r.pasid === "number") pasids.delete(r.pasid);
        return seq;
      } catch (e) {
        return refuse(request, e as Error);
      }
    },
    drain(): DrainReport {
      const report = device.drain();
      if (listeners.size) emit({ type: "drained", report: structuredClone(report) });
      return report;
    },
    drainInto(out: DrainOutcome): DrainOutcome {
      device.drainInto(out);
      // The event carries a plain report: made only when someone listens.
      if (listeners.size) emit({ type: "drained", report: out.toReport() });
      return out;
    },
    get telemetry(): PluginTelemetry {
      // Copies: the queue's counters are shared by the vIOMMU's devices.
      const shadow = device.shadow;
      return {
        mode: device.mode ?? "nested",
        device: { ...device.telemetry },
        queue: structuredClone(device.guest.queue.telemetry),
        ...(shadow ? { shadow: structuredClone(shadow) } : {}),
      };
    },
    on(listener: (event: PluginEvent) => void): () => void {
      if (typeof listener !== "function") throw new TypeError("a listener is a function");
      listeners.add(listener);
      return () => void listeners.delete(listener);
    },
    [Symbol.dispose](): void {
      if (state === "disposed") return;
      state = "disposed";
      unsubscribe?.();
      try {
        device[Symbol.dispose]();
      } finally {
        emit({ type: "disposed" });
        listeners.clear();
      }
    },
  };
  return Object.freeze(handle);
}

/** A module that could not be loaded as a plugin. */
export class PluginLoadError extends Error {
  /** Always `PluginLoadError`. */
  override name = "PluginLoadError";
}

/** A plugin running in a Worker broke the channel: it did not answer in time, or answered garbage. */
export class PluginCallError extends Error {
  /** Always `PluginCallError`. */
  override name = "PluginCallError";
  /** A broken call of `method` on plugin `plugin`, with what went wrong. */
  constructor(
    /** The plugin's name. */
    readonly plugin: string,
    /** What the host asked for. */
    readonly method: string,
    message: string,
  ) {
    super(`${plugin}: ${method}: ${message}`);
  }
}

/**
 * `loadPlugin` was asked to run a plugin with the process's permissions (the default) while the process holds a
 * permission through which the plugin's code could reach every device of the process: FFI on a loaded shim (its fd
 * table is per process), FFI on everything, or `run` (a child with all permissions). Nothing was started.
 */
export class PluginPermissionError extends PluginLoadError {
  /** Always `PluginPermissionError`. */
  override name = "PluginPermissionError";
  /** A refusal naming the permissions the plugin would have inherited. */
  constructor(
    /** The plugin's module specifier. */
    readonly specifier: string,
    /** What the Worker would have inherited, e.g. `["ffi:/path/libiommu_relay_shim.so", "run"]`. */
    readonly held: readonly string[],
  ) {
    super(
      `${specifier}: a plugin Worker would inherit ${held.join(", ")}: load it with { permissions: "none" } ` +
        `(needs --unstable-worker-options, or "unstable": ["worker-options"] in deno.json), or state the trust ` +
        `with { permissions: "inherit" }`,
    );
  }
}

/** Options of {@linkcode loadPlugin}. */
export interface LoadOptions {
  /**
   * The Workers' Deno permissions. "none": the plugin's Worker has no permission at all (Deno exits the process at
   * the first load unless it runs with `--unstable-worker-options` or `"unstable": ["worker-options"]` in its
   * deno.json — Deno offers no way to ask beforehand); its module is a regular `file:` module or a `data:` URL, and
   * it may import this library and `data:` URLs only (bundle a plugin of several files into one). "inherit": the process's permissions, a statement that the
   * plugin is trusted like the VMM's own code. Unset: "inherit" where that gives the plugin nothing of the relay's
   * host, and a {@linkcode PluginPermissionError} where the process holds FFI on a loaded shim, FFI on everything or
   * `run` — checked at load and again at each `create`, whose host may have loaded a shim since. On a terminal Deno
   * asks the operator when code without a permission uses it, a Worker's too: run a VMM that loads untrusted plugins
   * with `--no-prompt`.
   */
  readonly permissions?: "none" | "inherit";
  /** How long one call into the plugin may take before its Worker is terminated (default 5000 ms). */
  readonly callTimeoutMs?: number;
}

/** The permissions this process holds through which code in an inheriting Worker could reach the relay's host. */
function hostReachingPermissions(): string[] {
  const held: string[] = [];
  const granted = (d: Deno.PermissionDescriptor) => Deno.permissions.querySync(d).state === "granted";
  if (granted({ name: "ffi" })) held.push("ffi");
  else for (const path of loadedShimPaths()) if (granted({ name: "ffi", path })) held.push(`ffi:${path}`);
  if (granted({ name: "run" })) held.push("run");
  return held;
}

/**
 * Load a third-party plugin from a module specifier (its default export, made with {@linkcode definePlugin}). Its
 * code runs in a Worker of its own per instance — its own realm, so replacing built-ins (`Map.prototype.get`)
 * changes nothing of the host's — and talks to its device through a message-passing handle: calls are synchronous
 * round trips over shared memory, requests and answers are copied as data, and the handle's host side takes only
 * submit, drain and telemetry, each checked as for any plugin. Events of the device are the host side's.
 *
 * @example
 * ```ts ignore
 * const definition = await loadPlugin("https://example.org/my-plugin.ts");
 * using plugin = definition.create(host, { domain: 1, device: { kind: "vfio", path: "/dev/vfio/devices/vfio0" } });
 * ```
 */
export async function loadPlugin(specifier: string | URL, options: LoadOptions = {}): Promise<PluginDefinition> {
  const href = String(specifier);
  const permissions = options.permissions ?? "inherit";
  const checkInherit = () => {
    if (options.permissions !== undefined) return;
    const held = hostReachingPermissions();
    if (held.length) throw new PluginPermissionError(href, held);
  };
  checkInherit();
  if (permissions === "none") checkModuleForNone(href);
  const timeoutMs = options.callTimeoutMs ?? 5000;
  // A first Worker checks that the module is a plugin (and reads its name), so a bad module fails here, not at create.
  let name: string, version: string;
  try {
    ({ name, version } = await probeWorker(href, permissions, Math.max(timeoutMs, 30_000)));
  } catch (e) {
    throw e instanceof PluginLoadError ? e : new PluginLoadError(`cannot load ${href}: ${(e as Error).message}`);
  }
  await Promise.resolve();
  const isolation = permissions === "none" ? "worker-no-permissions" as const : "worker" as const;
  return Object.freeze({
    kind: "iommu-relay-plugin" as const,
    name,
    version,
    isolation,
    create(host: RelayHost, config: DeviceConfig): RelayPlugin {
      checkInherit();
      const handle = deviceHandle(name, host, config);
      try {
        return workerPlugin(name, href, handle, permissions, timeoutMs);
      } catch (e) {
        handle[Symbol.dispose]();
        throw e;
      }
    },
  });
}

/**
 * The Worker for one plugin instance (or, with `config` undefined, a check of the module). With inherited
 * permissions it runs worker.ts, which `import()`s the plugin. With none, `import()` of a file would need read access,
 * so its main module is generated: it imports worker.ts and the plugin statically (a Worker's main module graph is
 * loaded without permission checks) and hands the plugin in.
 */
function spawnWorker(href: string, config: DeviceConfig | undefined, permissions: "none" | "inherit") {
  const channel = Channel.create();
  const runner = new URL("./worker.ts", import.meta.url).href;
  const worker = permissions === "none"
    ? new Worker(wardenModule(href, runner), {
      type: "module",
      deno: { permissions: wardenPermissions(href) },
    } as WorkerOptions)
    : new Worker(runner, { type: "module" });
  // Terminating a warden would leave its plugin Worker running: the warden is told to terminate it, then closes.
  const stop = permissions === "none" ? () => worker.postMessage({ stop: true }) : () => worker.terminate();
  // Nothing the Worker posts is read: its one way in is the channel.
  worker.onmessage = null;
  worker.onerror = (e) => e.preventDefault();
  const { shadow: _ram, ...data } = config ?? { domain: 0, device: { kind: "model" } };
  worker.postMessage({ buffer: channel.buffer, specifier: href, config: config ? data : undefined });
  return { worker, channel, stop };
}

/**
 * A plugin without permissions runs two Workers deep. Deno checks a Worker's module loads — static imports,
 * `import()`, `with { type: "text" }` — against its parent's permissions, not its own: a permission-less plugin
 * Worker started by the VMM could import, that is read, any file the VMM may read (and fetch from any host it may
 * import from, in a URL of its choosing). So the VMM starts a warden Worker granted only what the plugin's module
 * graph needs to load — read of the plugin's own file and of this library's `lib/` and `ffi/`, nothing else — and the
 * warden starts the plugin's Worker with no permission at all, forwarding the start message (the channel's shared
 * memory) and failing with the plugin Worker's error so the VMM sees it. Deno does not end a Worker's Workers with it:
 * the VMM stops a plugin by telling its warden, which terminates the plugin's Worker and closes itself.
 */
function wardenModule(href: string, runner: string): string {
  const plugin = "data:application/javascript," + encodeURIComponent(
    `import { servePlugin } from ${JSON.stringify(runner)};\n` +
      `import * as plugin from ${JSON.stringify(href)};\n` +
      `servePlugin(() => Promise.resolve(plugin));\n`,
  );
  return "data:application/javascript," + encodeURIComponent(
    `const plugin = new Worker(${JSON.stringify(plugin)}, { type: "module", deno: { permissions: "none" } });\n` +
      `plugin.onerror = (e) => { e.preventDefault(); setTimeout(() => { throw new Error(e.message); }); };\n` +
      `self.onmessage = (e) => {\n` +
      `  if (e.data?.stop !== true) return plugin.postMessage(e.data);\n` +
      `  plugin.terminate();\n` +
      `  self.close();\n` +
      `};\n`,
  );
}

/** What the warden of a plugin without permissions may do: read the plugin's file and the library's modules. */
function wardenPermissions(href: string): Deno.PermissionOptionsObject {
  // The runner's module graph, and what a plugin imports of this library: its lib/ and ffi/ folders.
  const library = [new URL("../", import.meta.url), new URL("../../ffi/", import.meta.url)];
  const read = [new URL(href), ...library].filter((u) => u.protocol === "file:");
  const imports = library.filter((u) => u.protocol === "https:").map((u) => u.host);
  return {
    read: read.length ? read : false,
    import: imports.length ? imports : false,
    env: false,
    ffi: false,
    net: false,
    run: false,
    sys: false,
    write: false,
  };
}

/**
 * A plugin to run without permissions must be a local file (a regular file: a device would be read forever) or a
 * data: URL. A remote one is refused: its Worker's module loads would need the import permission for its host, in
 * URLs of the plugin's choosing.
 */
function checkModuleForNone(href: string): void {
  let url: URL;
  try {
    url = new URL(href);
  } catch {
    throw new PluginLoadError(`${href}: a plugin is named by an absolute URL (file:, data:)`);
  }
  if (url.protocol === "data:") return;
  if (url.protocol !== "file:") {
    throw new PluginLoadError(
      `${href}: a plugin without permissions is loaded from a file: or data: URL, not ${url.protocol} (its Worker ` +
        `would need import access to the plugin's host, in URLs the plugin chooses)`,
    );
  }
  let info: Deno.FileInfo;
  try {
    info = Deno.statSync(url);
  } catch (e) {
    throw new PluginLoadError(`cannot load ${href}: ${(e as Error).message}`);
  }
  if (!info.isFile) throw new PluginLoadError(`${href}: a plugin module is a regular file`);
}

/** The plugin's name and version from its READY message. */
function readyInfo(channel: Channel): { name: string; version: string } {
  const v = channel.read().value as { name?: unknown; version?: unknown } | undefined;
  return { name: String(v?.name ?? "?"), version: String(v?.version ?? "?") };
}

/**
 * Check a plugin module in a Worker of its own, waiting without blocking so that the Worker's error event — a module
 * that does not load (missing, a syntax error, a failing import) never reaches the channel — is seen at once.
 */
async function probeWorker(
  href: string,
  permissions: "none" | "inherit",
  timeoutMs: number,
): Promise<{ name: string; version: string }> {
  const { worker, channel, stop } = spawnWorker(href, undefined, permissions);
  let failed: string | undefined;
  worker.onerror = (e) => {
    e.preventDefault();
    failed = e.message;
  };
  const deadline = performance.now() + timeoutMs;
  try {
    for (;;) {
      const s = channel.state;
      if (s === ChannelState.READY) return readyInfo(channel);
      if (s === ChannelState.FAILED) throw new PluginLoadError(`${href}: ${channel.read().error?.message}`);
      if (failed !== undefined) throw new PluginLoadError(`${href}: ${failed}`);
      if (performance.now() > deadline) {
        throw new PluginLoadError(`${href}: the plugin did not start within ${timeoutMs} ms`);
      }
      await new Promise((r) => setTimeout(r, 2));
    }
  } finally {
    stop();
  }
}

/** Start a plugin Worker and wait (blocking) until its plugin instance exists. */
function startWorker(
  href: string,
  config: DeviceConfig,
  permissions: "none" | "inherit",
  timeoutMs: number,
  serve?: (channel: Channel) => void,
): { stop: () => void; channel: Channel; info: { name: string; version: string } } {
  const { channel, stop } = spawnWorker(href, config, permissions);
  const deadline = performance.now() + timeoutMs;
  let s = channel.waitWhile([ChannelState.STARTING, ChannelState.HANDLE_RETURN], timeoutMs);
  // The plugin's create may already use its handle.
  while (s === ChannelState.HANDLE_CALL && serve) {
    serve(channel);
    s = channel.waitWhile([ChannelState.HANDLE_RETURN], deadline - performance.now());
  }
  if (s !== ChannelState.READY) {
    stop();
    const m = s === undefined ? undefined : channel.read();
    throw new PluginLoadError(
      s === undefined ? `${href}: the plugin did not start within ${timeoutMs} ms` : `${href}: ${m?.error?.message}`,
    );
  }
  return { stop, channel, info: readyInfo(channel) };
}

/** The host side of a plugin in a Worker: a RelayPlugin whose calls are round trips into the Worker. */
function workerPlugin(
  name: string,
  href: string,
  handle: DeviceHandle,
  permissions: "none" | "inherit",
  timeoutMs: number,
): RelayPlugin {
  let dead: string | undefined;
  /** The last error the handle threw, by id: rethrown as itself when the plugin passes it on. */
  let lastError: { id: number; error: unknown } | undefined;
  let errors = 0;
  const serveHandle = (channel: Channel) => {
    const m = channel.read();
    try {
      const args = Array.isArray(m.args) ? m.args : [];
      let value: unknown;
      // The only ways in: the handle's own checks apply to each.
      if (m.method === "submit") value = handle.submit(args[0] as Request);
      else if (m.method === "drain") value = handle.drain();
      else if (m.method === "telemetry") value = handle.telemetry;
      else throw new TypeError(`a plugin's handle has no ${String(m.method)}`);
      channel.send(ChannelState.HANDLE_RETURN, { value: value ?? null });
    } catch (e) {
      const id = ++errors;
      lastError = { id, error: e };
      const error = errorToChannel(e);
      channel.send(ChannelState.HANDLE_RETURN, { error: { ...error, fields: { ...error.fields, $handleError: id } } });
    }
  };
  // Starting may take a type check and a module load: a start has a deadline of its own.
  const { stop, channel } = startWorker(href, handle.config, permissions, Math.max(timeoutMs, 30_000), serveHandle);
  let disposed = false;
  const call = (method: string, args: unknown[]): unknown => {
    if (disposed && method !== "dispose") throw new Error(`${name}: the plugin was disposed`);
    if (dead) throw new PluginCallError(name, method, dead);
    channel.send(ChannelState.CALL, { method, args });
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const s = channel.waitWhile([ChannelState.CALL, ChannelState.HANDLE_RETURN], deadline - performance.now());
      if (s === ChannelState.HANDLE_CALL) {
        serveHandle(channel);
        continue;
      }
      if (s === ChannelState.RETURN) {
        const m = channel.read();
        if (!m.error) return m.value;
        if (lastError && m.error.fields?.$handleError === lastError.id) throw lastError.error;
        const e = new PluginCallError(name, method, `${m.error.name}: ${m.error.message}`);
        throw e;
      }
      dead = s === undefined ? `no answer within ${timeoutMs} ms: the Worker was terminated` : `bad channel state ${s}`;
      stop();
      throw new PluginCallError(name, method, dead);
    }
  };
  return Object.freeze({
    name,
    get state() {
      return handle.state;
    },
    get config() {
      return handle.config;
    },
    submit: (request: Request) => call("submit", [structuredClone(request)]) as number | undefined,
    drain: () => call("drain", []) as DrainReport,
    // The host's own counters: a plugin cannot make them say something else.
    get telemetry() {
      return handle.telemetry;
    },
    on: (listener: (event: PluginEvent) => void) => handle.on(listener),
    [Symbol.dispose]() {
      if (disposed) return;
      disposed = true;
      try {
        if (!dead) call("dispose", []);
      } catch {
        /* its own business */
      } finally {
        stop();
        handle[Symbol.dispose]();
      }
    },
  });
}

/** iommu-relay's own plugin: the device's handle, unchanged. */
export const relayPlugin: PluginDefinition = definePlugin({
  name: "iommu-relay",
  version: "0.1.0",
  create: (device) => device,
});
