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
import type { DrainReport, QueueTelemetry, RelayQueue } from "../core/queue.ts";
import { type PasidOrRid, type Request, RequestError, type StageOneTable } from "../core/request.ts";
import { type DeviceTelemetry, GuestIommu, type ViommuMode } from "../device/assigned.ts";
import { MockPort, VfioPort } from "../device/port.ts";
import { Iommufd } from "../kernel/iommufd.ts";
import type { Ioas } from "../kernel/iommufd.ts";
import { ModelGuestIommu } from "../model/device.ts";
import { ModelHost } from "../model/host.ts";
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
}

/** What a device plugin needs from the device layer (kernel or in-process). */
export interface RelayDevice extends Disposable {
  readonly domain: number;
  readonly telemetry: DeviceTelemetry;
  bind(pasid: PasidOrRid, table: StageOneTable): void;
  unbind(pasid: PasidOrRid): unknown;
  handle(request: Request): number | undefined;
  boundTo(pasid: PasidOrRid): number | undefined;
}

interface Guest extends Disposable {
  readonly queue: RelayQueue;
}

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
  readonly #guests = new Map<string, Guest>();
  #disposed = false;

  private constructor(
    /** The in-process host, when the VM runs without a kernel. */
    readonly model: ModelHost | undefined,
    /** The iommufd and IOAS, when it runs on the kernel. */
    readonly iommufd: Iommufd | undefined,
    readonly ioas: Ioas | undefined,
    readonly viommuMode: ViommuMode | undefined,
  ) {}

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

  #guest(name: string): Guest {
    if (this.#disposed) throw new Error("the RelayHost was disposed");
    let g = this.#guests.get(name);
    if (!g) {
      g = this.model
        ? new ModelGuestIommu(this.model)
        : new GuestIommu(this.iommufd!, this.ioas!, { viommu: this.viommuMode });
      this.#guests.set(name, g);
    }
    return g;
  }

  /** Assign a device (the plugin loader's job; a failed assignment leaves nothing behind). */
  assign(config: DeviceConfig): RelayDevice {
    const g = this.#guest(config.viommu ?? "0");
    const src = config.device;
    if (g instanceof ModelGuestIommu) {
      if (src.kind !== "model") throw new TypeError(`an in-process RelayHost takes model devices, not ${src.kind}`);
      return g.assign({ domain: config.domain });
    }
    if (src.kind === "model") throw new TypeError("a kernel RelayHost takes vfio or mock devices");
    const guest = g as GuestIommu;
    const port = src.kind === "vfio"
      ? VfioPort.open(this.iommufd!.shim, this.iommufd!, src.path)
      : MockPort.create(this.iommufd!, this.ioas!.id, src.pasid ? MockConstants.values.MOCK_FLAGS_DEVICE_PASID : 0);
    return guest.assign(port, { domain: config.domain, virtId: config.virtId, ats: config.ats });
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
  | { readonly type: "disposed" };

/** A plugin instance: one device's relay. */
export interface RelayPlugin extends Disposable {
  readonly name: string;
  readonly state: "attached" | "disposed";
  readonly config: DeviceConfig;
  /** Relay a guest request; returns its sequence number (binds and unbinds: undefined). Refusals throw typed errors. */
  submit(request: Request): number | undefined;
  /** Send what is pending; the report carries each wait's completion and guest-visible failures. */
  drain(): DrainReport;
  readonly telemetry: { readonly device: DeviceTelemetry; readonly queue: QueueTelemetry };
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

  constructor(
    readonly name: string,
    readonly config: DeviceConfig,
    readonly device: RelayDevice,
    readonly queue: RelayQueue,
  ) {}

  get state(): "attached" | "disposed" {
    return this.#state;
  }

  get telemetry(): { device: DeviceTelemetry; queue: QueueTelemetry } {
    return { device: this.device.telemetry, queue: this.queue.telemetry };
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
    try {
      return this.device.handle(request);
    } catch (e) {
      this.#emit({ type: "refused", request, error: e as Error });
      throw e;
    }
  }

  drain(): DrainReport {
    const report = this.queue.drain();
    this.#emit({ type: "drained", report });
    return report;
  }

  [Symbol.dispose](): void {
    if (this.#state === "disposed") return;
    this.#state = "disposed";
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
