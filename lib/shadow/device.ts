/**
 * Shadow-mode devices: what a VMM gets on a host that cannot nest (or when it asks for shadow mode). Each guest
 * domain has one shadowed address space — on the kernel its own IOAS, which the domain's devices attach to — kept
 * equal to the guest's table for the RID by re-walking every invalidated range. PASID binds are refused: PASID-tagged
 * DMA needs nesting.
 *
 * @example
 * ```ts
 * import { RelayQueue } from "../core/queue.ts";
 * import { ModelHost } from "../model/host.ts";
 * import { ModelIoas } from "../model/ioas.ts";
 * import { GuestPageTables } from "../testing/page_tables.ts";
 * import { ShadowBackend } from "./backend.ts";
 * import { ShadowGuest } from "./device.ts";
 * const ram = new Uint8Array(1 << 22);
 * const backend = new ShadowBackend(new ModelHost());
 * const queue = new RelayQueue(backend);
 * const ioas = new ModelIoas();
 * using guest = new ShadowGuest(backend, queue, ram, () => ({ port: ioas }));
 * using dev = guest.assign(1, { [Symbol.dispose]() {} });
 * const tables = new GuestPageTables(ram, { format: "vtd-sl", levels: 4, tablesAt: 0x20_0000 });
 * dev.bind("rid", { format: "vtd-sl", tableAddress: tables.config.root, addressWidth: 48 });
 * tables.map(0x100, 0x10, { read: true, write: true });
 * dev.handle({ op: "invalidate", domain: 1, scope: { kind: "range", firstPage: 0x100, pages: 1 }, noPasid: true });
 * dev.handle({ op: "sync" });
 * queue.drain();
 * console.log(ioas.lookup(0x100)); // { gpaPage: 16, read: true, write: true }
 * ```
 *
 * @module
 */
import { KernelError, UnsupportedError } from "../core/errors.ts";
import { type BoundedGuestMemory, guestMemoryOver } from "../core/memory.ts";
import type { RelayQueue } from "../core/queue.ts";
import type { PasidOrRid, Request, StageOneTable } from "../core/request.ts";
import type { DeviceTelemetry } from "../device/assigned.ts";
import { relayRequest } from "../device/handle.ts";
import type { ShadowBackend } from "./backend.ts";
import { ShadowDomain, type ShadowIoasPort, type ShadowTelemetry } from "./domain.ts";
import type { PageTableConfig, WalkFault } from "./walk.ts";

/** One guest domain's shadow: its domain object, target id, host address space and devices. */
interface DomainEntry {
  readonly domain: ShadowDomain;
  readonly targetId: number;
  readonly release: Disposable;
  /** The IOAS the domain's devices attach to (kernel). */
  readonly ioasId?: number;
  devices: number;
  bound: number;
}

/** What a shadow domain's host side is: the IOAS port, and what to release when the domain goes. */
export interface ShadowSpace {
  readonly port: ShadowIoasPort;
  readonly release?: Disposable;
  /** The IOAS id devices attach to (kernel). */
  readonly ioasId?: number;
}

/** The shadowed domains of one guest vIOMMU. */
export class ShadowGuest implements Disposable {
  readonly #domains = new Map<number, DomainEntry>();
  readonly #memory: BoundedGuestMemory;

  constructor(
    readonly backend: ShadowBackend,
    readonly queue: RelayQueue,
    /** Guest RAM as the VMM holds it (guest-physical 0 at offset 0): walked, and on the kernel mapped. */
    readonly ram: Uint8Array,
    /** Makes the host address space of a new domain. */
    readonly newSpace: (domain: number) => ShadowSpace,
  ) {
    this.#memory = guestMemoryOver(ram, { views: true });
  }

  /** The host address space of `domain`, made on first use (devices attach to it). */
  space(domain: number): DomainEntry {
    let e = this.#domains.get(domain);
    if (!e) {
      const space = this.newSpace(domain);
      const d = new ShadowDomain(this.#memory, this.ram.byteLength, space.port);
      e = {
        domain: d,
        targetId: this.backend.add(d),
        release: space.release ?? { [Symbol.dispose]() {} },
        ioasId: space.ioasId,
        devices: 0,
        bound: 0,
      };
      this.#domains.set(domain, e);
    }
    return e;
  }

  /** The shadowed domain `domain`, if any device of it is assigned. */
  domain(domain: number): ShadowDomain | undefined {
    return this.#domains.get(domain)?.domain;
  }

  /**
   * Assign a device to `domain`; `attached` is the device's attachment to the domain's address space (its port),
   * released when the device is disposed.
   */
  assign(domain: number, attached: Disposable): ShadowDevice {
    const entry = this.space(domain);
    entry.devices++;
    return new ShadowDevice(this, domain, entry, attached);
  }

  /** @internal A device left: the last one unmaps everything and releases the domain's space. */
  leave(domain: number): void {
    const e = this.#domains.get(domain);
    if (!e || --e.devices > 0) return;
    this.#domains.delete(domain);
    this.backend.remove(e.targetId);
    e.release[Symbol.dispose]();
  }

  [Symbol.dispose](): void {
    for (const [domain, e] of [...this.#domains]) {
      this.#domains.delete(domain);
      this.backend.remove(e.targetId);
      e.release[Symbol.dispose]();
    }
  }
}

/** The guest's table for the RID, as the walker reads it. */
function walkable(table: StageOneTable): PageTableConfig {
  if (table.format === "vtd-sl") {
    return { format: "vtd-sl", root: table.tableAddress, levels: table.addressWidth === 57 ? 5 : 4 };
  }
  if (table.format === "vtd-s1") {
    return { format: "vtd-fl", root: table.tableAddress, levels: table.addressWidth === 57 ? 5 : 4 };
  }
  throw new UnsupportedError(`shadow-${table.format}`, `shadow mode walks VT-d tables; ${table.format} needs nesting`);
}

/** A device in shadow mode. */
export class ShadowDevice implements Disposable {
  readonly mode = "shadow" as const;
  /** PASID-scoped invalidations are accepted (they reach nothing: no PASID is ever bound). */
  readonly pasidBits = 20;
  readonly telemetry: DeviceTelemetry = { requestsIn: 0, binds: 0, replaces: 0, unbinds: 0, refused: 0 };
  #bound = false;
  #disposed = false;

  constructor(
    readonly guest: ShadowGuest,
    readonly domain: number,
    readonly entry: DomainEntry,
    readonly attached: Disposable,
  ) {}

  /** Walk faults of the device's domain. */
  onShadowFault(listener: (fault: WalkFault) => void): () => void {
    this.entry.domain.faultListeners.add(listener);
    return () => this.entry.domain.faultListeners.delete(listener);
  }

  /** The shadowed domain's counters (shared by the devices of the domain). */
  get shadow(): ShadowTelemetry {
    return this.entry.domain.telemetry;
  }

  #live(): void {
    if (this.#disposed) throw new Error(`shadow device in domain ${this.domain} was disposed`);
  }

  /** Bind the RID's table (a PASID is refused); the whole space is shadowed at once. */
  bind(pasid: PasidOrRid, table: StageOneTable): void {
    this.#live();
    try {
      if (pasid !== "rid") {
        throw new UnsupportedError("pasid-shadow", "PASID-tagged DMA needs nesting; this device is in shadow mode");
      }
      const config = walkable(table);
      const d = this.entry.domain;
      const replacing = d.table !== undefined;
      this.guest.queue.drain(); // what the guest queued for the old table goes first
      const r = d.setTable(config);
      if (!this.#bound) {
        this.#bound = true;
        if (this.entry.bound++ === 0) {
          this.guest.queue.bind(this.domain, "rid", { targetId: this.entry.targetId, format: "shadow" });
        }
      }
      this.telemetry.binds++;
      if (replacing) this.telemetry.replaces++;
      if (r.errno) {
        throw new KernelError(
          -r.errno,
          `shadow the table (${r.failed?.op} of ${r.failed?.pages} pages)`,
          r.failed?.op === "unmap" ? "IOMMU_IOAS_UNMAP" : "IOMMU_IOAS_MAP",
        );
      }
    } catch (e) {
      this.telemetry.refused++;
      throw e;
    }
  }

  /** Unbind the RID: the domain's host mappings go when no device of the domain keeps the table. */
  unbind(pasid: PasidOrRid): void {
    this.#live();
    if (pasid !== "rid" || !this.#bound) return;
    this.guest.queue.drain();
    this.#bound = false;
    this.telemetry.unbinds++;
    if (--this.entry.bound === 0) {
      this.guest.queue.unbind(this.domain, "rid", this.entry.targetId);
      const r = this.entry.domain.setTable(undefined);
      if (r.errno) throw new KernelError(-r.errno, "unshadow the table", "IOMMU_IOAS_UNMAP");
    }
  }

  boundTo(pasid: PasidOrRid): number | undefined {
    return pasid === "rid" && this.#bound ? this.entry.targetId : undefined;
  }

  handle(request: Request): number | undefined {
    this.#live();
    return relayRequest(this, this.guest.queue, request);
  }

  [Symbol.dispose](): void {
    if (this.#disposed) return;
    const stack = new DisposableStack();
    stack.defer(() => this.guest.leave(this.domain));
    stack.use(this.attached);
    stack.defer(() => this.unbind("rid"));
    try {
      stack.dispose();
    } finally {
      this.#disposed = true;
    }
  }
}
