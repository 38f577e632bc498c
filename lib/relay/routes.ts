/**
 * Routing: the units (one pending set per host target and PASID — or SMMUv3 ASID, or device ATC) that requests
 * coalesce into, grouped per target so one batch per target is sent, and each domain's routes resolved once per
 * binding change, so routing a request on the hot path builds no keys.
 *
 * @module
 */
import type { CompileContext, Format } from "../compile/formats.ts";
import type { SmmuUnit } from "../compile/smmuv3.ts";
import { PendingSet } from "../request/pending.ts";
import type { PasidOrRid } from "../request/request.ts";
import type { Binding, BindingTable } from "./bindings.ts";

/** One pending set and what its entries are compiled for. */
export interface Unit extends CompileContext {
  /** Its key in the route table: target, then the ASID (SMMUv3), vDEVICE (ATC) or PASID it covers. */
  readonly key: string | number;
  /** The host target its entries go to. */
  readonly targetId: number;
  /** Host format its pending set compiles to. */
  readonly format: Format;
  /** An ATC unit: ATC_INV for one device stream (sent after the target's TLB invalidations). */
  readonly atc?: { readonly vsid: number; readonly ssid: number | undefined };
  /** The coalesced invalidations waiting for the next drain. */
  readonly pending: PendingSet;
  /** Its target's group: what it is sent with. */
  readonly group: TargetGroup;
}

/** One host target's units (in creation order): one batch per group and pass. */
export interface TargetGroup {
  /** The host target. */
  readonly targetId: number;
  /** The target's format. */
  readonly format: Format;
  /** Its units, in creation order. */
  readonly units: Unit[];
}

/** A domain's routes: which units a request of each scope reaches. */
export interface DomainRoutes {
  /** PASID-scoped requests (pasid, pasid-range): the units bound at that PASID, ATC units included. */
  readonly byPasid: Map<PasidOrRid, Unit[]>;
  /** Every PASID and the RID (all, range). */
  readonly every: Unit[];
  /** The RID only (all, range with NO_PASID). */
  readonly ridOnly: Unit[];
}

/** Coalescing limits of new units. */
export interface UnitLimits {
  /** Ranges a unit keeps before escalating to a whole-space invalidation. */
  readonly maxRanges: number;
  /** Pages a unit keeps before escalating. */
  readonly maxPages: number;
  /** The host SMMUv3 has range invalidation (IDR3.RIL). */
  readonly smmuRil: boolean;
  /** Merge requests into ranges; off: one entry per request and no escalation. */
  readonly coalesce: boolean;
}

const EVERY_ASID: SmmuUnit = Object.freeze({ kind: "every-asid" });
const smmuAsid = (b: Binding): SmmuUnit => ({ kind: "asid", asid: b.asid ?? 0 });

/**
 * The units and per-domain routes of one relay queue.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { BindingTable } from "./bindings.ts";
 * import { RouteTable } from "./routes.ts";
 * const bindings = new BindingTable();
 * bindings.add(1, "rid", { targetId: 4, format: "vtd-s1" });
 * const routes = new RouteTable({ maxRanges: 64, maxPages: 1 << 18, smmuRil: false, coalesce: true });
 * const r = routes.resolve(1, bindings)!;
 * assert.equal(r.every.length, 1);
 * assert.equal(r.byPasid.get(3), undefined);
 * assert.equal(routes.resolve(2, bindings), undefined);
 * ```
 */
export class RouteTable {
  readonly #units = new Map<string | number, Unit>();
  /** Targets in the order their first unit was made. */
  readonly groups: TargetGroup[] = [];
  readonly #routes = new Map<number, DomainRoutes>();
  #version = -1;

  /** An empty table; new units take `limits`. */
  constructor(readonly limits: UnitLimits) {}

  /** The routes of `domain` under `bindings` (resolved on first use after a change), or undefined if unbound. */
  resolve(domain: number, bindings: BindingTable): DomainRoutes | undefined {
    if (this.#version !== bindings.version) {
      this.#routes.clear();
      this.#version = bindings.version;
    }
    let routes = this.#routes.get(domain);
    if (!routes) {
      const table = bindings.domain(domain);
      if (!table) return undefined;
      this.#routes.set(domain, routes = this.#resolve(table));
    }
    return routes;
  }

  /** Drop the (drained, empty) units of targets no binding names any more, so rebinding forever stays flat. */
  prune(bindings: BindingTable): void {
    const live = bindings.liveTargets();
    for (const [key, unit] of this.#units) {
      if (live.has(unit.targetId) || !unit.pending.empty) continue;
      this.#units.delete(key);
      const units = unit.group.units;
      units.splice(units.indexOf(unit), 1);
    }
    for (let g = this.groups.length - 1; g >= 0; g--) {
      if (this.groups[g].units.length === 0) this.groups.splice(g, 1);
    }
  }

  /** Whether any unit holds pending work. */
  get pending(): boolean {
    const groups = this.groups;
    for (let g = 0; g < groups.length; g++) {
      const units = groups[g].units;
      for (let i = 0; i < units.length; i++) if (!units[i].pending.empty) return true;
    }
    return false;
  }

  #unit(binding: Binding, pasid: PasidOrRid, smmu?: SmmuUnit): Unit {
    const key = smmu
      ? `${binding.targetId}/${smmu.kind === "asid" ? smmu.asid : "*"}`
      : binding.vdevId !== undefined
      ? `${binding.targetId}/v${binding.vdevId}/${pasid}`
      : binding.targetId; // the common case: a number, no string built per request
    let unit = this.#units.get(key);
    if (!unit) {
      const l = this.limits;
      const noRil = binding.format === "smmuv3" && !l.smmuRil;
      unit = {
        key,
        targetId: binding.targetId,
        format: binding.format,
        pasid,
        smmu,
        vdevId: binding.vdevId,
        group: this.#group(binding),
        pending: new PendingSet(
          l.coalesce
            ? { maxRanges: l.maxRanges, maxPages: noRil ? Math.min(64, l.maxPages) : l.maxPages }
            : { maxRanges: Infinity, maxPages: Infinity, merge: false },
        ),
      };
      this.#units.set(key, unit);
      unit.group.units.push(unit);
    }
    return unit;
  }

  #group(binding: Binding): TargetGroup {
    let group = this.groups.find((g) => g.targetId === binding.targetId);
    if (!group) this.groups.push(group = { targetId: binding.targetId, format: binding.format, units: [] });
    return group;
  }

  #atcUnit(b: Binding, pasid: PasidOrRid): Unit {
    const key = `${b.targetId}/atc/${b.vdevId}/${pasid}`;
    let unit = this.#units.get(key);
    if (!unit) {
      unit = {
        key,
        targetId: b.targetId,
        format: b.format,
        pasid,
        atc: { vsid: b.vdevId ?? 0, ssid: pasid === "rid" ? undefined : pasid },
        group: this.#group(b),
        pending: new PendingSet({ maxRanges: this.limits.maxRanges, maxPages: this.limits.maxPages }),
      };
      this.#units.set(key, unit);
      unit.group.units.push(unit);
    }
    return unit;
  }

  #resolve(table: ReadonlyMap<PasidOrRid, readonly Binding[]>): DomainRoutes {
    const byPasid = new Map<PasidOrRid, Unit[]>();
    const every: Unit[] = [], ridOnly: Unit[] = [];
    const seenVsmmu = new Set<number>();
    for (const [pasid, list] of table) {
      const atPasid: Unit[] = [];
      for (const b of list) {
        atPasid.push(this.#unit(b, pasid, b.format === "smmuv3" ? smmuAsid(b) : undefined));
        if (b.ats) atPasid.push(this.#atcUnit(b, pasid));
        // Every PASID and the RID (or only the RID with NO_PASID).
        if (b.ats) every.push(this.#atcUnit(b, pasid));
        if (b.format !== "smmuv3") every.push(this.#unit(b, pasid));
        else if (!seenVsmmu.has(b.targetId)) {
          // One NH_VAA / NH_ALL per vIOMMU covers every ASID at once.
          seenVsmmu.add(b.targetId);
          every.push(this.#unit(b, pasid, EVERY_ASID));
        }
        if (pasid !== "rid") continue;
        if (b.ats) ridOnly.push(this.#atcUnit(b, pasid));
        ridOnly.push(this.#unit(b, pasid, b.format === "smmuv3" ? smmuAsid(b) : undefined));
      }
      byPasid.set(pasid, atPasid);
    }
    return { byPasid, every, ridOnly };
  }
}
