/**
 * The plugin a VMM loads once per assigned device. A {@linkcode RelayHost} holds what one VM's plugins share —
 * one iommufd (or the in-process host), one relay queue and device layer per guest vIOMMU — and a plugin instance
 * relays one device's guest requests through it. Plugins are defined with {@linkcode definePlugin} and can be
 * loaded by module specifier with {@linkcode loadPlugin}, so a third-party plugin is one `import()` away.
 *
 * Lifecycle: created → attached (device assigned, ready for requests) → disposed. Isolation: a plugin relays only
 * requests of its own guest domain (others are refused with a typed error), and nothing of one `RelayHost`
 * reaches another's objects.
 *
 * @module
 */
import type { NativeShim } from "../../ffi/native.ts";
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
import type { Ioas } from "../kernel/iommufd.ts";
import { ModelHost } from "../host/model.ts";
import { Errno } from "../uapi/errno.ts";
import { MockConstants } from "../uapi/mod.ts";

/** The host device behind a plugin instance. */
export type DeviceSource =
  | { readonly kind: "vfio"; readonly path: string }
  | { readonly kind: "mock"; readonly pasid?: boolean }
  | { readonly kind: "model" };

/** What a VMM hands the loader for one device. */
export interface DeviceConfig {
  /** The device's guest domain (VT-d DID, the guest's domain for SMMUv3 / virtio-iommu). */
  readonly domain: number;
  /** Which guest vIOMMU the device is behind; devices of one vIOMMU share its relay queue. Default "0". */
  readonly viommu?: string;
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
 * import { RelayHost, relayPlugin } from "./plugin.ts";
 * using host = RelayHost.inProcess();
 * using nic = relayPlugin.create(host, { domain: 1, device: { kind: "model" } });
 * nic.submit({ op: "bind", domain: 1, pasid: 2, table: { format: "vtd-s1", tableAddress: 0x1000, addressWidth: 48 } });
 * nic.submit({ op: "invalidate", domain: 1, scope: { kind: "pasid", pasid: 2 } });
 * nic.submit({ op: "sync" });
 * console.log(nic.drain().waits[0].ok); // true
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

  /** A VM on the kernel: opens `/dev/iommu` (or `path`) and allocates the guest-physical IOAS. */
  static kernel(shim: NativeShim, opts: { path?: string; viommu?: ViommuMode } = {}): RelayHost {
    const iommufd = Iommufd.open(shim, opts.path);
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
  readonly mode: "nested" | "shadow";
  readonly device: DeviceTelemetry;
  readonly queue: QueueTelemetry;
  readonly shadow?: ShadowTelemetry;
}

/** A plugin instance: one device's relay. */
export interface RelayPlugin extends Disposable {
  readonly name: string;
  readonly state: "attached" | "disposed";
  readonly config: DeviceConfig;
  /** Relay a guest request; returns its sequence number (binds and unbinds: undefined). Refusals throw typed errors. */
  submit(request: Request): number | undefined;
  /** Send what is pending; the report carries each wait's completion and guest-visible failures. */
  drain(): DrainReport;
  /** The same, refilling `out` in place (the allocation-free form for a doorbell; optional for third parties). */
  drainInto?(out: DrainOutcome): DrainOutcome;
  readonly telemetry: PluginTelemetry;
  /** Subscribe to events; returns the unsubscribe function. */
  on(listener: (event: PluginEvent) => void): () => void;
}

/** A plugin definition, as {@linkcode definePlugin} makes and {@linkcode loadPlugin} returns. */
export interface PluginDefinition {
  readonly kind: "iommu-relay-plugin";
  readonly name: string;
  readonly version: string;
  create(host: RelayHost, config: DeviceConfig): RelayPlugin;
}

/**
 * Define a plugin.
 *
 * @example
 * ```ts
 * import { definePlugin, relayPlugin } from "./plugin.ts";
 * export default definePlugin({ name: "my-relay", version: "1.0.0", create: (host, config) => relayPlugin.create(host, config) });
 * ```
 */
export function definePlugin(spec: Omit<PluginDefinition, "kind">): PluginDefinition {
  if (!spec.name || typeof spec.create !== "function") {
    throw new TypeError("definePlugin needs a name and a create function");
  }
  return Object.freeze({ kind: "iommu-relay-plugin" as const, ...spec });
}

/** A module that could not be loaded as a plugin. */
export class PluginLoadError extends Error {
  override name = "PluginLoadError";
}

/**
 * Load a plugin definition from a module specifier (its default export, made with {@linkcode definePlugin}).
 *
 * @example
 * ```ts ignore
 * const definition = await loadPlugin("https://example.org/my-plugin.ts");
 * using plugin = definition.create(host, { domain: 1, device: { kind: "vfio", path: "/dev/vfio/devices/vfio0" } });
 * ```
 */
export async function loadPlugin(specifier: string | URL): Promise<PluginDefinition> {
  let module: Record<string, unknown>;
  try {
    module = await import(String(specifier));
  } catch (e) {
    throw new PluginLoadError(`cannot import ${specifier}: ${(e as Error).message}`);
  }
  const d = module.default as Partial<PluginDefinition> | undefined;
  if (!d || d.kind !== "iommu-relay-plugin" || typeof d.create !== "function") {
    throw new PluginLoadError(`${specifier} has no default export made with definePlugin`);
  }
  return d as PluginDefinition;
}

class DevicePlugin implements RelayPlugin {
  #state: "attached" | "disposed" = "attached";
  readonly #listeners = new Set<(event: PluginEvent) => void>();

  /** PASIDs bound through this plugin (for the per-device cap). */
  readonly #pasids = new Set<number>();
  /** Shadow devices: walk faults become "shadow-fault" events. */
  readonly #unsubscribe: (() => void) | undefined;

  constructor(
    readonly name: string,
    readonly config: DeviceConfig,
    readonly device: RelayDevice,
    readonly queue: RelayQueue,
  ) {
    this.#unsubscribe = device.onShadowFault?.((fault) => this.#emit({ type: "shadow-fault", fault }));
  }

  get state(): "attached" | "disposed" {
    return this.#state;
  }

  get telemetry(): PluginTelemetry {
    return {
      mode: this.device.mode ?? "nested",
      device: this.device.telemetry,
      queue: this.queue.telemetry,
      ...(this.device.shadow ? { shadow: this.device.shadow } : {}),
    };
  }

  #emit(event: PluginEvent): void {
    for (const l of this.#listeners) l(event);
  }

  on(listener: (event: PluginEvent) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  submit(request: Request): number | undefined {
    if (this.#state === "disposed") throw new Error(`${this.name}: the plugin was disposed`);
    if (request.op !== "sync" && request.domain !== this.config.domain) {
      const error = new RequestError(
        "conflicting-flags",
        "domain",
        `this device is in guest domain ${this.config.domain}; a request for domain ${request.domain} is not its to relay`,
      );
      this.#emit({ type: "refused", request, error });
      throw error;
    }
    const newPasid = request.op === "bind" && typeof request.pasid === "number" && !this.#pasids.has(request.pasid);
    const max = this.config.maxPasids ?? 4096;
    if (newPasid && this.#pasids.size >= max) {
      const error = new LimitError("pasids-per-device", max, "unbind a PASID first, or raise DeviceConfig.maxPasids");
      this.#emit({ type: "refused", request, error });
      throw error;
    }
    try {
      const seq = this.device.handle(request);
      if (request.op === "bind" && typeof request.pasid === "number") this.#pasids.add(request.pasid);
      if (request.op === "unbind" && typeof request.pasid === "number") this.#pasids.delete(request.pasid);
      return seq;
    } catch (e) {
      this.#emit({ type: "refused", request, error: e as Error });
      throw e;
    }
  }

  drain(): DrainReport {
    const report = this.device.drain();
    this.#emit({ type: "drained", report });
    return report;
  }

  drainInto(out: DrainOutcome): DrainOutcome {
    this.device.drainInto(out);
    // The event carries a plain report: made only when someone listens.
    if (this.#listeners.size) this.#emit({ type: "drained", report: out.toReport() });
    return out;
  }

  [Symbol.dispose](): void {
    if (this.#state === "disposed") return;
    this.#state = "disposed";
    this.#unsubscribe?.();
    this.device[Symbol.dispose]();
    this.#emit({ type: "disposed" });
    this.#listeners.clear();
  }
}

/** iommu-relay's own plugin: the device layer and relay queue, unchanged. */
export const relayPlugin: PluginDefinition = definePlugin({
  name: "iommu-relay",
  version: "0.1.0",
  create(host, config) {
    const device = host.assign(config);
    return new DevicePlugin("iommu-relay", config, device, host.queue(config.viommu ?? "0"));
  },
});
