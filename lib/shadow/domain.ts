/**
 * Shadow mode for one guest domain (the RID address space of the devices in it): on each invalidated range the
 * guest's table is walked again and only real differences become `IOMMU_IOAS_UNMAP` / `IOMMU_IOAS_MAP` calls.
 *
 * The kernel unmaps whole areas only, so an area whose invalidated part changed is unmapped whole and its
 * unchanged outside parts are mapped again as they were; an area that still matches costs nothing. A host failure
 * stops the sync there with its errno and the area map still equal to what the host holds: what was unmapped and not
 * yet mapped again is simply absent (the device faults; nothing stale stays reachable).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { ShadowDomain } from "./domain.ts";
 * import { ModelIoas } from "./model_ioas.ts";
 * const ram = new Uint8Array(1 << 20);
 * const v = new DataView(ram.buffer);
 * [[0x1000, 0x2000], [0x2000, 0x3000], [0x3000, 0x4000]].forEach(([t, n]) => v.setUint32(t, n | 3, true));
 * v.setUint32(0x4000 + 5 * 8, 0x80000 | 1, true); // IOVA page 5 → guest page 0x80, read-only
 * const memory = { read: (a: number, n: number) => ram.slice(a, a + n), write: () => {} };
 * const ioas = new ModelIoas();
 * const d = new ShadowDomain(memory, ram.length, ioas, { format: "vtd-sl", root: 0x1000, levels: 4 });
 * assert.equal(d.sync(0, 16).maps, 1);
 * assert.equal(d.sync(0, 16).maps, 0); // already equal: nothing to do
 * assert.equal(ioas.calls, 1);
 * ```
 *
 * @module
 */
import { type Area, AreaMap } from "./areas.ts";
import { type GuestMemoryReader, type MappingRun, type PageTableConfig, type WalkFault, walkRange } from "./walk.ts";

/** The host side: an IOAS taking page-granular maps of guest memory. Returns 0 or `-errno`; never throws. */
export interface ShadowIoasPort {
  /** Map IOVA pages [firstPage, +pages) to guest pages [gpaPage, +pages) with these permissions: 0 or `-errno` (`-EEXIST` over a mapping). */
  map(firstPage: number, pages: number, gpaPage: number, read: boolean, write: boolean): number;
  /** Unmap the areas inside IOVA pages [firstPage, +pages): 0 or `-errno` (`-ENOENT` when there are none, or one crosses an end; not atomic). */
  unmap(firstPage: number, pages: number): number;
}

/** What one sync did. */
export interface SyncResult {
  /** 0, or the errno of the host call that failed (the sync stopped there). */
  readonly errno: number;
  /** The host call that failed, when `errno` is not 0. */
  readonly failed?: { readonly op: "map" | "unmap"; readonly firstPage: number; readonly pages: number };
  /** Successful map calls. */
  readonly maps: number;
  /** Successful unmap calls. */
  readonly unmaps: number;
  /** Areas the range touched that still matched the guest table: no syscall. */
  readonly kept: number;
  /** Pages the guest's table maps in a way the host will not (they stay unmapped). */
  readonly faults: readonly WalkFault[];
}

/** Counters over the domain's life. */
export interface ShadowTelemetry {
  /** Syncs run (an invalidation's range, or the whole table on a root change). */
  syncs: number;
  /** Successful map calls, over all syncs. */
  maps: number;
  /** Successful unmap calls, over all syncs. */
  unmaps: number;
  /** Areas a sync found still equal to the guest table and left alone. */
  kept: number;
  /** Walk faults reported. */
  faults: number;
  /** Syncs that stopped on a host error. */
  failures: number;
}

/** One shadowed domain. */
export class ShadowDomain {
  /** What the domain has mapped on the host, area by area: the sync compares the walk with it. */
  readonly areas: AreaMap = new AreaMap();
  /** Counters, readable at any time. */
  readonly telemetry: ShadowTelemetry = { syncs: 0, maps: 0, unmaps: 0, kept: 0, faults: 0, failures: 0 };
  /**
   * Told of every walk fault (pages the guest's table maps in a way the host will not: they stay unmapped). The
   * VMM turns them into the guest's fault report (VT-d fault recording) if it models one.
   */
  readonly faultListeners: Set<(fault: WalkFault) => void> = new Set();

  /** A domain walking guest tables in `memory` (RAM of `ramBytes`), mapping through `port`; nothing is mapped until a sync. */
  constructor(
    readonly memory: GuestMemoryReader,
    readonly ramBytes: number,
    readonly port: ShadowIoasPort,
    /** The guest's table (from its context / PASID-0 entry); undefined: nothing is mapped. */
    public table?: PageTableConfig,
  ) {}

  /** IOVA pages the table's levels address. */
  get spanPages(): number {
    return 512 ** (this.table?.levels ?? 4);
  }

  /** The guest changed its table root: re-shadow everything. */
  setTable(table: PageTableConfig | undefined): SyncResult {
    this.table = table;
    return this.syncAll();
  }

  /** A domain-wide or global invalidation. */
  syncAll(): SyncResult {
    const last = this.areas.all.at(-1);
    const pages = Math.max(this.spanPages, last ? last.firstPage + last.pages : 0);
    return this.sync(0, pages);
  }

  /** Make the host match the guest table over IOVA pages [firstPage, +pages). */
  sync(firstPage: number, pages: number): SyncResult {
    this.telemetry.syncs++;
    const lastPage = firstPage + pages - 1;
    const walked = this.table
      ? walkRange(
        this.memory,
        this.table,
        firstPage,
        Math.min(pages, Math.max(0, this.spanPages - firstPage)),
        this.ramBytes,
      )
      : { runs: [] as MappingRun[], faults: [] as WalkFault[] };
    const desired = walked.runs;
    for (const f of walked.faults) for (const l of this.faultListeners) l(f);
    const toUnmap: Area[] = [], toMap: Area[] = [], kept: Area[] = [];
    for (const a of this.areas.overlapping(firstPage, lastPage)) {
      if (matches(a, desired, firstPage, lastPage)) {
        kept.push(a);
        continue;
      }
      toUnmap.push(a);
      // The parts outside the range are not the guest's to change here: map them again as they were.
      const aLast = a.firstPage + a.pages - 1;
      if (a.firstPage < firstPage) toMap.push({ ...a, pages: firstPage - a.firstPage });
      if (aLast > lastPage) {
        toMap.push({
          ...a,
          firstPage: lastPage + 1,
          pages: aLast - lastPage,
          gpaPage: a.gpaPage + (lastPage + 1 - a.firstPage),
        });
      }
    }
    for (const run of desired) toMap.push(...subtract(run, kept));
    toMap.sort((x, y) => x.firstPage - y.firstPage);
    let maps = 0, unmaps = 0;
    const result = (errno: number, failed?: SyncResult["failed"]): SyncResult => {
      this.telemetry.maps += maps;
      this.telemetry.unmaps += unmaps;
      this.telemetry.kept += kept.length;
      this.telemetry.faults += walked.faults.length;
      if (errno) this.telemetry.failures++;
      return { errno, failed, maps, unmaps, kept: kept.length, faults: walked.faults };
    };
    for (const a of toUnmap) {
      const r = this.port.unmap(a.firstPage, a.pages);
      if (r < 0) return result(-r, { op: "unmap", firstPage: a.firstPage, pages: a.pages });
      this.areas.remove(a);
      unmaps++;
    }
    for (const a of toMap) {
      const r = this.port.map(a.firstPage, a.pages, a.gpaPage, a.read, a.write);
      if (r < 0) return result(-r, { op: "map", firstPage: a.firstPage, pages: a.pages });
      this.areas.insert(a);
      maps++;
    }
    return result(0);
  }

  /**
   * virtio-iommu MAP: map guest pages directly (no table). Overlapping an existing mapping is EEXIST (the
   * device answers VIRTIO_IOMMU_S_INVAL); returns 0 or the errno.
   */
  mapDirect(firstPage: number, pages: number, gpaPage: number, read: boolean, write: boolean): number {
    if (this.areas.overlapping(firstPage, firstPage + pages - 1).length) return 17;
    if ((gpaPage + pages) * 4096 > this.ramBytes) return 14; // EFAULT: not guest RAM
    const r = this.port.map(firstPage, pages, gpaPage, read, write);
    if (r < 0) return -r;
    this.areas.insert({ firstPage, pages, gpaPage, read, write });
    this.telemetry.maps++;
    return 0;
  }

  /**
   * virtio-iommu UNMAP: remove the mappings inside [firstPage, +pages). One that is only partly inside is ERANGE
   * (virtio-iommu: VIRTIO_IOMMU_S_RANGE) and nothing is unmapped; returns 0 or the errno.
   */
  unmapDirect(firstPage: number, pages: number): number {
    const last = firstPage + pages - 1;
    const inside = this.areas.overlapping(firstPage, last);
    if (inside.some((a) => a.firstPage < firstPage || a.firstPage + a.pages - 1 > last)) return 34;
    for (const a of inside) {
      const r = this.port.unmap(a.firstPage, a.pages);
      if (r < 0) return -r;
      this.areas.remove(a);
      this.telemetry.unmaps++;
    }
    return 0;
  }

  /**
   * The virtio-iommu UNMAPs of one kick, in order, in fewer host calls: `errnos[i]` becomes what
   * {@linkcode unmapDirect} would have answered for `requests[i]` handled alone, after the ones before it.
   *
   * Each request's status is decided from the area map first (a mapping only partly inside is ERANGE and nothing is
   * unmapped, as alone); the areas the accepted requests remove are then unmapped with one host call per run of
   * them with no other area in between. The area map holds exactly what the host has mapped (the domain's IOAS is its
   * own), so a merged call removes exactly the areas the separate calls would have removed, and never splits one (the
   * kernel refuses that). A request whose range touches an area an earlier request of the
   * batch is about to remove (its status depends on that removal) first sends what is pending. The kernel's unmap
   * is not atomic (it stops at an area it cannot remove, the ones before it gone): a failed merged call is redone
   * one area at a time, an area already gone (ENOENT) counting as removed, so the area map stays equal to the host,
   * each request's errno is the one of its own first failing area and, as alone, its areas after that one stay.
   *
   * @example
   * ```ts
   * import assert from "node:assert/strict";
   * import { ShadowDomain } from "./domain.ts";
   * import { ModelIoas } from "./model_ioas.ts";
   * const ioas = new ModelIoas();
   * const d = new ShadowDomain({ read: () => new Uint8Array(4096) }, 1 << 30, ioas);
   * for (const page of [10, 13, 12, 11]) d.mapDirect(page, 1, page, true, false);
   * const errnos: number[] = [];
   * d.unmapDirectBatch([{ firstPage: 10, pages: 1 }, { firstPage: 11, pages: 1 }, { firstPage: 12, pages: 2 }], errnos);
   * assert.deepEqual(errnos, [0, 0, 0]);
   * assert.equal(ioas.calls - 4, 1); // the four adjacent areas go in one IOAS unmap
   * assert.equal(ioas.areas.size, 0);


   * ```
   */
  unmapDirectBatch(
    requests: readonly { readonly firstPage: number; readonly pages: number }[],
    errnos: number[],
  ): void {
    const pending = this.#pendingUnmaps;
    pending.clear();
    for (let i = 0; i < requests.length; i++) {
      const first = requests[i].firstPage, last = first + requests[i].pages - 1;
      let inside = this.areas.overlapping(first, last);
      if (inside.some((a) => pending.has(a))) {
        this.#unmapPending(errnos);
        inside = this.areas.overlapping(first, last);
      }
      if (inside.some((a) => a.firstPage < first || a.firstPage + a.pages - 1 > last)) {
        errnos[i] = 34;
        continue;
      }
      errnos[i] = 0;
      for (const a of inside) pending.set(a, i);
    }
    this.#unmapPending(errnos);
  }

  /** Areas accepted UNMAPs of the batch will remove → the request removing each. */
  readonly #pendingUnmaps = new Map<Area, number>();

  /**
   * Unmap the pending areas in IOVA order, one host call per run of them with no other area between; clears the
   * pending set. As alone, a request whose area failed keeps its later areas (its own unmap stopped there).
   */
  #unmapPending(errnos: number[]): void {
    const pending = this.#pendingUnmaps;
    if (pending.size === 0) return;
    const sorted = [...pending.keys()].sort((x, y) => x.firstPage - y.firstPage);
    const ownerFailed = (a: Area) => errnos[pending.get(a)!] !== 0;
    for (let i = 0; i < sorted.length;) {
      if (ownerFailed(sorted[i])) {
        i++;
        continue;
      }
      let j = i + 1;
      while (j < sorted.length && !ownerFailed(sorted[j]) && this.#nothingBetween(sorted[j - 1], sorted[j])) j++;
      const from = sorted[i].firstPage, to = sorted[j - 1].firstPage + sorted[j - 1].pages;
      const r = this.port.unmap(from, to - from);
      if (r === 0) {
        this.telemetry.unmaps++;
        for (let k = i; k < j; k++) this.areas.remove(sorted[k]);
      } else if (j - i === 1) this.#unmapFailed(errnos, pending.get(sorted[i])!, -r);
      else {
        // The kernel removed the areas before the one it stopped at: those answer ENOENT now. Every failure below is
        // at or after that one, so an area skipped for its request's failure is one the merged call never reached.
        for (let k = i; k < j; k++) {
          const a = sorted[k];
          if (ownerFailed(a)) continue;
          const one = this.port.unmap(a.firstPage, a.pages);
          if (one === 0) this.telemetry.unmaps++;
          if (one === 0 || one === -2) this.areas.remove(a);
          else this.#unmapFailed(errnos, pending.get(a)!, -one);
        }
      }
      i = j;
    }
    pending.clear();
  }

  /** Whether no area lies between `a` and the later area `b` (so one unmap of both covers no other mapping). */
  #nothingBetween(a: Area, b: Area): boolean {
    const gapFirst = a.firstPage + a.pages;
    return gapFirst === b.firstPage || this.areas.overlapping(gapFirst, b.firstPage - 1).length === 0;
  }

  #unmapFailed(errnos: number[], request: number, errno: number): void {
    this.telemetry.failures++;
    errnos[request] = errno;
  }
}

/** Whether area `a`'s part inside [first, last] is exactly what the desired runs say. */
function matches(a: Area, desired: readonly MappingRun[], first: number, last: number): boolean {
  let page = Math.max(a.firstPage, first);
  const end = Math.min(a.firstPage + a.pages - 1, last);
  for (const r of desired) {
    if (r.firstPage + r.pages - 1 < page) continue;
    if (r.firstPage > page) return false; // a hole
    if (r.read !== a.read || r.write !== a.write) return false;
    if (r.gpaPage + (page - r.firstPage) !== a.gpaPage + (page - a.firstPage)) return false;
    page = r.firstPage + r.pages;
    if (page > end) return true;
  }
  return page > end;
}

/** The parts of `run` no kept area covers. */
function subtract(run: MappingRun, kept: readonly Area[]): Area[] {
  let pieces: Area[] = [run];
  for (const k of kept) {
    const kLast = k.firstPage + k.pages - 1;
    const next: Area[] = [];
    for (const p of pieces) {
      const pLast = p.firstPage + p.pages - 1;
      if (kLast < p.firstPage || k.firstPage > pLast) {
        next.push(p);
        continue;
      }
      if (p.firstPage < k.firstPage) next.push({ ...p, pages: k.firstPage - p.firstPage });
      if (pLast > kLast) {
        next.push({ ...p, firstPage: kLast + 1, pages: pLast - kLast, gpaPage: p.gpaPage + (kLast + 1 - p.firstPage) });
      }
    }
    pieces = next;
  }
  return pieces;
}
