/**
 * The device layer on the in-process host: the same bind / replace / unbind / handle surface as
 * `GuestIommu`/`AssignedDevice`, with nested HWPTs as `ModelHost` targets. Scripted-guest tests and the demo run
 * on it; the kernel suite runs the real one.
 *
 * @module
 */
import { UnsupportedError } from "../core/errors.ts";
import { RelayQueue } from "../core/queue.ts";
import {
  type NestedTable,
  type PasidOrRid,
  PCIE_PASID_BITS,
  type Request,
  type StageOneTable,
  validateRequest,
} from "../core/request.ts";
import type { DeviceTelemetry } from "../device/assigned.ts";
import { relayRequest } from "../device/handle.ts";
import type { ModelHost } from "./host.ts";

/** A guest vIOMMU on the in-process host. */
export class ModelGuestIommu implements Disposable {
  readonly queue: RelayQueue;
  readonly #devices = new Set<ModelDevice>();
  /** Shared nested tables: (domain, table) → target and users. */
  readonly #nested = new Map<string, { targetId: number; refs: number }>();

  constructor(readonly host: ModelHost, queue?: RelayQueue) {
    this.queue = queue ?? new RelayQueue(host);
  }

  /** Assign a device to guest domain `domain`. */
  assign(opts: { domain: number; label?: string; pasidBits?: number }): ModelDevice {
    const d = new ModelDevice(
      this,
      opts.domain,
      opts.label ?? `model device ${this.#devices.size + 1}`,
      opts.pasidBits ?? PCIE_PASID_BITS,
    );
    this.#devices.add(d);
    return d;
  }

  /** @internal */
  acquire(domain: number, table: NestedTable): number {
    const key = `${domain}/${JSON.stringify(table, (_, v) => typeof v === "bigint" ? `${v}n` : v)}`;
    const e = this.#nested.get(key);
    if (e) {
      e.refs++;
      return e.targetId;
    }
    const targetId = this.host.createTarget(table.format, table.format === "selftest" ? table.iotlb : undefined);
    this.#nested.set(key, { targetId, refs: 1 });
    return targetId;
  }

  /** @internal */
  release(targetId: number): void {
    for (const [key, e] of this.#nested) {
      if (e.targetId !== targetId) continue;
      if (--e.refs === 0) {
        this.#nested.delete(key);
        this.host.destroyTarget(targetId);
      }
      return;
    }
  }

  readonly #routes = new Map<string, number>();

  /** @internal Count a device's use of (domain, pasid) → target in the queue's table. */
  route(domain: number, pasid: PasidOrRid, targetId: number, table: NestedTable): void {
    const key = `${domain}/${pasid}/${targetId}`;
    const n = this.#routes.get(key) ?? 0;
    this.#routes.set(key, n + 1);
    if (n === 0) {
      this.queue.bind(domain, pasid, {
        targetId,
        format: table.format,
        ...(table.format === "smmuv3" ? { asid: table.asid } : {}),
      });
    }
  }

  /** @internal Undo {@linkcode ModelGuestIommu.route} and release the target. */
  unroute(domain: number, pasid: PasidOrRid, targetId: number): void {
    const key = `${domain}/${pasid}/${targetId}`;
    const n = (this.#routes.get(key) ?? 1) - 1;
    if (n > 0) this.#routes.set(key, n);
    else {
      this.#routes.delete(key);
      this.queue.unbind(domain, pasid, targetId);
    }
    this.release(targetId);
  }

  /** Host targets alive (shared ones once). */
  get nestedCount(): number {
    return this.#nested.size;
  }

  /** @internal */
  forget(d: ModelDevice): void {
    this.#devices.delete(d);
  }

  [Symbol.dispose](): void {
    const stack = new DisposableStack();
    for (const d of this.#devices) stack.use(d);
    stack.dispose();
  }
}

/** An assigned device on the in-process host. */
export class ModelDevice implements Disposable {
  readonly telemetry: DeviceTelemetry = { requestsIn: 0, binds: 0, replaces: 0, unbinds: 0, refused: 0 };
  readonly #bound = new Map<PasidOrRid, number>();
  #disposed = false;

  constructor(
    readonly guest: ModelGuestIommu,
    readonly domain: number,
    readonly label: string,
    readonly pasidBits: number,
  ) {}

  /** The host target bound at `pasid`. */
  boundTo(pasid: PasidOrRid): number | undefined {
    return this.#bound.get(pasid);
  }

  bind(pasid: PasidOrRid, table: StageOneTable): void {
    this.#live();
    try {
      validateRequest({ op: "bind", domain: this.domain, pasid, table }, { pasidBits: this.pasidBits });
      if (table.format === "vtd-sl") {
        throw new UnsupportedError(
          "vtd-sl",
          "a VT-d second-level table is walked by shadow mode; a nested device takes stage-1 tables (DeviceConfig.mode)",
        );
      }
    } catch (e) {
      this.telemetry.refused++;
      throw e;
    }
    const previous = this.#bound.get(pasid);
    const next = this.guest.acquire(this.domain, table);
    if (previous === next) return this.guest.release(next);
    this.guest.queue.drain();
    this.#bound.set(pasid, next);
    this.guest.route(this.domain, pasid, next, table);
    this.telemetry.binds++;
    if (previous !== undefined) {
      this.telemetry.replaces++;
      this.guest.unroute(this.domain, pasid, previous);
    }
  }

  unbind(pasid: PasidOrRid): void {
    this.#live();
    const previous = this.#bound.get(pasid);
    if (previous === undefined) return;
    this.guest.queue.drain();
    this.#bound.delete(pasid);
    this.guest.unroute(this.domain, pasid, previous);
    this.telemetry.unbinds++;
  }

  handle(request: Request): number | undefined {
    this.#live();
    return relayRequest(this, this.guest.queue, request);
  }

  #live(): void {
    if (this.#disposed) throw new Error(`${this.label} was disposed`);
  }

  [Symbol.dispose](): void {
    if (this.#disposed) return;
    for (const pasid of [...this.#bound.keys()].reverse()) this.unbind(pasid);
    this.#disposed = true;
    this.guest.forget(this);
  }
}
