/**
 * The relay's binding table: which host targets serve each (guest domain, PASID). Devices of one domain may hold
 * different tables at one PASID, so a (domain, PASID) maps to a list. The table only records; the queue makes each
 * change a barrier and resolves routes from it.
 *
 * @module
 */
import type { Format } from "../compile/formats.ts";
import type { PasidOrRid } from "../request/request.ts";

/** Where a (domain, PASID) is bound on the host. */
export interface Binding {
  /** The host object invalidations go to: nested HWPT (VT-d, selftest), vIOMMU (SMMUv3) or shadowed domain. */
  readonly targetId: number;
  /** Host format of the target's invalidation entries (picks the compiler and `data_type`). */
  readonly format: Format;
  /** SMMUv3: the ASID of the guest context descriptor at this PASID. */
  readonly asid?: number;
  /** vIOMMU formats: the device's virtual id (its vDEVICE), which entries name. */
  readonly vdevId?: number;
  /** SMMUv3: the device has ATS enabled, so its ATC needs ATC_INV (the VMM's job on SMMUv3). */
  readonly ats?: boolean;
}

/**
 * Whether two bindings are the same host route: target, ASID, virtual device and ATS all equal (a binding that
 * gains ATS needs an ATC unit, so it is a different route).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { sameBinding } from "./bindings.ts";
 * assert.ok(sameBinding({ targetId: 3, format: "vtd-s1" }, { targetId: 3, format: "vtd-s1" }));
 * assert.ok(!sameBinding({ targetId: 3, format: "smmuv3", asid: 1 }, { targetId: 3, format: "smmuv3", asid: 1, ats: true }));
 * ```
 */
export function sameBinding(a: Binding, b: Binding): boolean {
  return a.targetId === b.targetId && a.format === b.format && a.asid === b.asid && a.vdevId === b.vdevId &&
    (a.ats ?? false) === (b.ats ?? false);
}

/**
 * domain → PASID → bindings.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { BindingTable } from "./bindings.ts";
 * const table = new BindingTable();
 * table.add(1, "rid", { targetId: 7, format: "vtd-s1" });
 * table.add(1, 0, { targetId: 7, format: "vtd-s1" });
 * assert.deepEqual(table.domains(), [1]);
 * table.remove(1, "rid");
 * assert.equal(table.get(1, "rid").length, 0);
 * assert.equal(table.get(1, 0).length, 1);
 * ```
 */
export class BindingTable {
  readonly #domains = new Map<number, Map<PasidOrRid, Binding[]>>();
  /** Bumped by every change, so routes resolved from an older table are known stale. */
  version = 0;

  /** The bindings at (domain, pasid). */
  get(domain: number, pasid: PasidOrRid): readonly Binding[] {
    return this.#domains.get(domain)?.get(pasid) ?? [];
  }

  /** A domain's PASID → bindings, if it has any. */
  domain(domain: number): ReadonlyMap<PasidOrRid, readonly Binding[]> | undefined {
    return this.#domains.get(domain);
  }

  /** Domains with at least one binding, ascending. */
  domains(): number[] {
    return [...this.#domains.keys()].sort((a, b) => a - b);
  }

  /** Add `binding` at (domain, pasid); false when an equal binding was there already. */
  add(domain: number, pasid: PasidOrRid, binding: Binding): boolean {
    let table = this.#domains.get(domain);
    if (!table) this.#domains.set(domain, table = new Map());
    const list = table.get(pasid) ?? [];
    if (list.some((b) => sameBinding(b, binding))) return false;
    table.set(pasid, [...list, binding]);
    this.version++;
    return true;
  }

  /** Remove the bindings equal to `binding` at (domain, pasid), or all of them there; returns how many went. */
  remove(domain: number, pasid: PasidOrRid, binding?: Binding): number {
    const table = this.#domains.get(domain);
    const list = table?.get(pasid);
    if (!table || !list) return 0;
    const kept = binding === undefined ? [] : list.filter((b) => !sameBinding(b, binding));
    if (kept.length) table.set(pasid, kept);
    else table.delete(pasid);
    if (table.size === 0) this.#domains.delete(domain);
    const removed = list.length - kept.length;
    if (removed) this.version++;
    return removed;
  }

  /** Remove every binding. */
  clear(): void {
    this.#domains.clear();
    this.version++;
  }

  /** Target ids some binding still names. */
  liveTargets(): Set<number> {
    const live = new Set<number>();
    for (const table of this.#domains.values()) {
      for (const list of table.values()) for (const b of list) live.add(b.targetId);
    }
    return live;
  }

  /** Every (domain, pasid, binding), for snapshots and the shared relay's table. */
  *entries(): IterableIterator<readonly [number, PasidOrRid, Binding]> {
    for (const [domain, table] of this.#domains) {
      for (const [pasid, list] of table) for (const b of list) yield [domain, pasid, b];
    }
  }
}
