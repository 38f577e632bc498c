/**
 * Shadow mode's part of the device layer: what a VMM gets on a host that cannot nest (or when it asks for shadow
 * mode). Each guest domain has one shadowed address space — on the kernel its own IOAS, which the domain's devices
 * attach to — kept equal to the guest's table for the RID by re-walking every invalidated range. A shadow-mode
 * {@linkcode AssignedDevice} binds and unbinds through {@linkcode ShadowSpaces}; PASID binds are refused (PASID-tagged
 * DMA needs nesting).
 *
 * @module
 */
import { UnsupportedError } from "../kernel/errors.ts";
import { type BoundedGuestMemory, guestMemoryOver } from "../memory/guest_memory.ts";
import type { StageOneTable } from "../request/request.ts";
import type { ShadowBackend } from "../shadow/backend.ts";
import { ShadowDomain, type ShadowIoasPort } from "../shadow/domain.ts";
import type { PageTableConfig } from "../shadow/walk.ts";

/** What a shadow domain's host side is: the IOAS port, and what to release when the domain goes. */
export interface ShadowSpace {
  /** Where the domain's mappings go: the IOAS (kernel) or the in-process model of one. */
  readonly port: ShadowIoasPort;
  /** Disposed when the domain goes (e.g. the kernel IOAS); nothing when absent. */
  readonly release?: Disposable;
  /** The IOAS id devices attach to (kernel). */
  readonly ioasId?: number;
}

/** What a guest vIOMMU needs for shadow-mode devices. */
export interface ShadowOptions {
  /** Guest RAM as the VMM holds it (guest-physical 0 at offset 0): walked, and on the kernel mapped. */
  readonly ram: Uint8Array;
  /** Makes the host address space of a new domain. */
  readonly newSpace: (domain: number) => ShadowSpace;
}

/** One guest domain's shadow: its domain object, target id, host address space and devices. */
export interface ShadowDomainEntry {
  /** The shadowed domain: walks the guest table and keeps the port equal to it. */
  readonly domain: ShadowDomain;
  /** Its id as a host target of the shadow backend (what bindings and the queue name). */
  readonly targetId: number;
  /** Releases the host address space when the domain goes. */
  readonly release: Disposable;
  /** The IOAS the domain's devices attach to (kernel). */
  readonly ioasId?: number;
  /** Devices assigned in the domain. */
  devices: number;

  /** How many of those have the RID table bound (the domain is walked while any has). */
  bound: number;
}

/**
 * The shadowed domains of one guest vIOMMU.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { ModelHost } from "../host/model.ts";
 * import { ShadowBackend } from "../shadow/backend.ts";
 * import { ModelIoas } from "../shadow/model_ioas.ts";
 * import { ShadowSpaces } from "./shadow.ts";
 * const backend = new ShadowBackend(new ModelHost());
 * using spaces = new ShadowSpaces(backend, { ram: new Uint8Array(1 << 16), newSpace: () => ({ port: new ModelIoas() }) });
 * const entry = spaces.enter(3);
 * assert.equal(spaces.domain(3), entry.domain);
 * spaces.leave(3);
 * assert.equal(spaces.domain(3), undefined);
 * ```
 */
export class ShadowSpaces implements Disposable {
  readonly #domains = new Map<number, ShadowDomainEntry>();
  readonly #memory: BoundedGuestMemory;

  /** The shadowed domains on `backend`, walking `options.ram` and making each domain's space with `options.newSpace`. */
  constructor(readonly backend: ShadowBackend, readonly options: ShadowOptions) {
    this.#memory = guestMemoryOver(options.ram, { views: true });
  }

  /** Guest RAM. */
  get ram(): Uint8Array {
    return this.options.ram;
  }

  /** The host address space of `domain`, made on first use; counts one more device in it. */
  enter(domain: number): ShadowDomainEntry {
    let e = this.#domains.get(domain);
    if (!e) {
      const space = this.options.newSpace(domain);
      const d = new ShadowDomain(this.#memory, this.options.ram.byteLength, space.port);
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
    e.devices++;
    return e;
  }

  /** The shadowed domain `domain`, if any device of it is assigned. */
  domain(domain: number): ShadowDomain | undefined {
    return this.#domains.get(domain)?.domain;
  }

  /** A device left: the last one releases the domain's space. */
  leave(domain: number): void {
    const e = this.#domains.get(domain);
    if (!e || --e.devices > 0) return;
    this.#domains.delete(domain);
    this.backend.remove(e.targetId);
    e.release[Symbol.dispose]();
  }

  /** Remove every domain from the backend and release its host address space. */
  [Symbol.dispose](): void {
    for (const [domain, e] of [...this.#domains]) {
      this.#domains.delete(domain);
      this.backend.remove(e.targetId);
      e.release[Symbol.dispose]();
    }
  }
}

/**
 * The guest's table for the RID, as the walker reads it.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { walkable } from "./shadow.ts";
 * assert.deepEqual(walkable({ format: "vtd-sl", tableAddress: 0x1000, addressWidth: 48 }), { format: "vtd-sl", root: 0x1000, levels: 4 });
 * ```
 */
export function walkable(table: StageOneTable): PageTableConfig {
  if (table.format === "vtd-sl") {
    return { format: "vtd-sl", root: table.tableAddress, levels: table.addressWidth === 57 ? 5 : 4 };
  }
  if (table.format === "vtd-s1") {
    return { format: "vtd-fl", root: table.tableAddress, levels: table.addressWidth === 57 ? 5 : 4 };
  }
  throw new UnsupportedError(`shadow-${table.format}`, `shadow mode walks VT-d tables; ${table.format} needs nesting`);
}
