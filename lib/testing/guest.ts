/**
 * Guest scripting for tests: a small fluent API that writes what a guest driver writes — VT-d queued-invalidation
 * descriptors, SMMUv3 commands — into guest memory, rings the doorbell of the front-end model, and runs it all
 * through plugins on the in-process host, where the test can check the host's view.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { ScriptedGuest } from "./guest.ts";
 * using guest = ScriptedGuest.inProcess();
 * const nic = guest.device({ domain: 1 });
 * nic.submit({ op: "bind", domain: 1, pasid: 5, table: { format: "vtd-s1", tableAddress: 0x1000, addressWidth: 48 } });
 * const r = guest.vtd().pasidIotlb(1, 5, { page: 0x7f000, am: 9 }).wait().ring();
 * assert.equal(r.waitsCompleted, 1);
 * assert.equal(guest.invalidated(1, 5, 0x7f1ff), true);
 * ```
 *
 * @module
 */
import { guestMemoryOver } from "../memory/guest_memory.ts";
import { type DeviceSource, RelayHost, type RelayPlugin, relayPlugin } from "../plugin/plugin.ts";
import { type DoorbellResult, type GuestMemory, VtdInvalidationQueue } from "../frontends/vtd/queue.ts";
import { vtdIotlb, vtdPasidCache, vtdPasidIotlb, vtdWait } from "../frontends/vtd/encode.ts";
import { type ProdResult, SmmuCommandQueue, type SmmuQueueHooks } from "../frontends/smmuv3/cmdq.ts";
import type { PasidOrRid } from "../request/request.ts";

const RAM = 1 << 22;
const VTD_RING = 0x10_0000, SMMU_RING = 0x20_0000, STATUS = 0x30_0000;

/** A scripted guest on the in-process host. */
export class ScriptedGuest implements Disposable {
  /** Guest RAM (4 MiB). */
  readonly ram: Uint8Array = new Uint8Array(RAM);
  /** Bounds-checked access to it, as a VMM would give the front ends. */
  readonly memory: GuestMemory = guestMemoryOver(this.ram);
  readonly #plugins: RelayPlugin[] = [];
  #vtd?: VtdScript;
  #smmu?: SmmuScript;

  private constructor(readonly host: RelayHost) {}

  /** A guest whose host is iommu-relay's in-process host. */
  static inProcess(): ScriptedGuest {
    return new ScriptedGuest(RelayHost.inProcess());
  }

  /** A guest on a given host (e.g. `RelayHost.kernel(shim)` with selftest mock devices). Takes ownership. */
  static on(host: RelayHost): ScriptedGuest {
    return new ScriptedGuest(host);
  }

  /**
   * Assign a device in guest domain `domain` (iommu-relay's own plugin): a model device on the in-process host,
   * else `device` (e.g. `{ kind: "mock", pasid: true }` on a kernel host).
   */
  device(opts: { domain: number; device?: DeviceSource }): RelayPlugin {
    const device = opts.device ??
      (this.host.model ? { kind: "model" as const } : { kind: "mock" as const, pasid: true });
    const p = relayPlugin.create(this.host, { domain: opts.domain, device });
    this.#plugins.push(p);
    return p;
  }

  /** The VT-d invalidation queue (128-bit descriptors unless `wide`), created on first use. */
  vtd(opts: { wide?: boolean } = {}): VtdScript {
    return this.#vtd ??= new VtdScript(this, opts.wide ?? false);
  }

  /** The SMMUv3 command queue, created on first use; `asidUsers` ties ASIDs to (domain, PASID). */
  smmu(hooks: SmmuQueueHooks): SmmuScript {
    return this.#smmu ??= new SmmuScript(this, hooks);
  }

  /** Whether the in-process host invalidated `page` of what (domain, pasid) is bound to (any ASID on SMMUv3). */
  invalidated(domain: number, pasid: PasidOrRid, page: number): boolean {
    if (!this.host.model) throw new Error("invalidated() reads the in-process host; on a kernel host check the kernel");
    const bindings = this.host.queue().bindings(domain, pasid);
    return bindings.length > 0 && bindings.every((b) => this.host.model!.covered(b.targetId, page, b.asid));
  }

  /** The guest domains of the assigned devices. */
  get domains(): number[] {
    return [...new Set(this.#plugins.filter((p) => p.state === "attached").map((p) => p.config.domain))];
  }

  /** Forget what the host invalidated so far. */
  resetHost(): void {
    this.host.model!.resetCoverage();
  }

  /** The wait-status dword `slot` (VT-d status writes, SMMUv3 MSIs). */
  status(slot: number): number {
    return new DataView(this.ram.buffer).getUint32(STATUS + slot * 4, true);
  }

  /** Dispose the plugins, then the host. */
  [Symbol.dispose](): void {
    const stack = new DisposableStack();
    stack.use(this.host);
    for (const p of this.#plugins) stack.use(p);
    stack.dispose();
  }
}

/** Writes VT-d descriptors into the guest's invalidation queue and rings it. */
export class VtdScript {
  /** The guest's VT-d invalidation queue model, at the script's ring in guest RAM. */
  readonly queue: VtdInvalidationQueue;
  readonly #size: 16 | 32;
  #tail = 0;
  #slot = 0;
  /** Status slots of the waits written since the last ring. */
  #slots: number[] = [];

  /** A script on `guest`'s ring; `wide` selects 256-bit descriptors (IQA.DW). */
  constructor(readonly guest: ScriptedGuest, wide: boolean) {
    this.queue = new VtdInvalidationQueue(guest.memory, guest.host.queue(), { domains: () => guest.domains });
    this.queue.writeIqa(VTD_RING | (wide ? 1 << 11 : 0) | 3); // eight pages: 512 or 256 descriptors
    this.#size = wide ? 32 : 16;
  }

  /** Any 128 bits (qw0, qw1), hostile ones included. */
  raw(qw0: bigint, qw1: bigint): this {
    const v = new DataView(this.guest.ram.buffer, VTD_RING + this.#tail * this.#size, this.#size);
    for (let i = 0; i < this.#size; i += 8) v.setBigUint64(i, 0n, true);
    v.setBigUint64(0, qw0, true);
    v.setBigUint64(8, qw1, true);
    this.#tail = (this.#tail + 1) % this.queue.entries;
    return this;
  }

  /** PASID-based IOTLB invalidation: the whole PASID, or 2^am pages at `page` (IH = `leaf`). */
  pasidIotlb(did: number, pasid: number, range?: { page: number; am: number; leaf?: boolean }): this {
    return this.raw(...vtdPasidIotlb(did, pasid, range));
  }

  /** Second-stage IOTLB invalidation: page-selective, domain-selective or global. */
  iotlb(did: number, range: { page: number; am: number } | "domain" | "global"): this {
    return this.raw(...vtdIotlb(did, range));
  }

  /** PASID-cache invalidation of one PASID. */
  pasidCache(did: number, pasid: number): this {
    return this.raw(...vtdPasidCache(did, pasid));
  }

  /** An invalidation wait with a status write (and optionally fence / interrupt). */
  wait(opts: { fence?: boolean; interrupt?: boolean } = {}): this {
    const slot = this.#slot++;
    this.#slots.push(slot);
    return this.raw(...vtdWait(STATUS + slot * 4, 0xd0e + slot, opts));
  }

  /** Ring the doorbell (write IQT); also reports which of this batch's waits got their status written. */
  ring(): DoorbellResult & { readonly statuses: readonly boolean[] } {
    const r = this.queue.writeIqt(this.#tail * this.#size);
    const statuses = this.#slots.map((s) => this.guest.status(s) === 0xd0e + s);
    this.#slots = [];
    return { ...r, statuses };
  }
}

/** Writes SMMUv3 commands into the guest's command queue and rings it. */
export class SmmuScript {
  /** The guest's SMMUv3 command queue model, at the script's ring in guest RAM. */
  readonly queue: SmmuCommandQueue;
  #prod = 0;
  #slot = 1000;

  /** A script on `guest`'s ring; `hooks` serve the commands the queue does not relay (CFGI, ...). */
  constructor(readonly guest: ScriptedGuest, hooks: SmmuQueueHooks) {
    this.queue = new SmmuCommandQueue(guest.memory, guest.host.queue(), hooks);
    this.queue.writeBase(SMMU_RING | 8);
  }

  /** Any command words. */
  raw(w0: bigint, w1: bigint): this {
    const v = new DataView(this.guest.ram.buffer, SMMU_RING + (this.#prod % 256) * 16, 16);
    v.setBigUint64(0, w0, true);
    v.setBigUint64(8, w1, true);
    this.#prod = (this.#prod + 1) % 512;
    return this;
  }

  /** TLBI_NH_VA for one 4 KiB page. */
  tlbiVa(asid: number, page: number, leaf = true): this {
    return this.raw((BigInt(asid) << 48n) | 0x12n, (BigInt(page) << 12n) | (leaf ? 1n : 0n));
  }

  /** TLBI_NH_ASID. */
  tlbiAsid(asid: number): this {
    return this.raw((BigInt(asid) << 48n) | 0x11n, 0n);
  }

  /** CMD_SYNC with an MSI write to a status slot. */
  sync(): this {
    const slot = this.#slot++;
    return this.raw((BigInt(0x5c + slot) << 32n) | (1n << 12n) | 0x46n, BigInt(STATUS + slot * 4));
  }

  /** Write CMDQ_PROD. */
  ring(): ProdResult {
    return this.queue.writeProd(this.#prod);
  }
}
