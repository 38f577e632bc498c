/**
 * Guest workloads shaped like what real guests were recorded sending (stock Linux 6.12 guest, emulated VT-d, NVMe
 * I/O; SMMUv3 guests per the SMMU driver), as timed doorbells of guest requests. Deterministic for a seed.
 *
 * @module
 */
import type { Request } from "../request/request.ts";

/** One doorbell: a vCPU wrote some descriptors and rang. */
export interface Doorbell {
  /** Arrival time in ns (virtual). */
  readonly at: number;
  /** The vCPU that rang it. */
  readonly vcpu: number;
  /** The guest requests its descriptors decode to, in queue order. */
  readonly requests: readonly Request[];
}

/** A generated workload and the (domain, PASID) bindings it expects. */
export interface Workload {
  /** The workload's name, as reports print it. */
  readonly name: string;
  /** Doorbells in arrival order. */
  readonly doorbells: readonly Doorbell[];
  /** Guest descriptors (invalidations + waits) in total. */
  readonly descriptors: number;
}

/** A small deterministic PRNG (mulberry32). */
export function prng(seed: number): (n: number) => number {
  let s = seed >>> 0;
  return (n: number) => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = Math.imul(s ^ (s >>> 15), 1 | s);
    t ^= t + Math.imul(t ^ (t >>> 7), 61 | t);
    return ((t ^ (t >>> 14)) >>> 0) % n;
  };
}

function count(doorbells: Doorbell[]): number {
  return doorbells.reduce((n, d) => n + d.requests.length, 0);
}

/**
 * The recorded shape of DMA invalidations (`tests/fixtures/traces/*.stats.json`, Linux 6.12 on an emulated VT-d,
 * NVMe I/O): 73 % are 4 KiB and the rest 128 KiB, in phases (the I/O size of a run), and 93–97 % repeat the previous
 * range — a mapping's IOVA is reused until the I/O moves on. Here every 100 DMAs of a vCPU are 73 of 4 KiB then 27 of
 * 128 KiB, and the IOVA changes at each switch and with probability 3 % besides (≈ 95 % repeats).
 */
export const RECORDED_SHAPE = { smallShare: 73, smallPages: 1, largePages: 32, period: 100, changePct: 3 } as const;

/** The k-th DMA's mapping of a vCPU, given its previous one: the size by the phase, a new IOVA now and then. */
function nextMapping(
  k: number,
  previous: { iova: number; pages: number } | undefined,
  rnd: (n: number) => number,
  changePct: number = RECORDED_SHAPE.changePct,
): { iova: number; pages: number } {
  const small = k % RECORDED_SHAPE.period < RECORDED_SHAPE.smallShare;
  const pages = small ? RECORDED_SHAPE.smallPages : RECORDED_SHAPE.largePages;
  const moved = rnd(100) < changePct;
  if (previous && previous.pages === pages && !moved) return previous;
  return { iova: 0x10_0000 + rnd(1 << 16) * 32, pages };
}

/**
 * Strict mode: every unmap is followed by one invalidation (IH=1: leaf only, as Linux sends on unmap) and one wait in
 * its own doorbell; 4 KiB (≈ 73 %) and 128 KiB; ≈ 95 % repeat the previous range (see {@linkcode RECORDED_SHAPE}).
 * `vcpus` vCPUs submit concurrently, `gapNs` apart each.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { strictWorkload } from "./workloads.ts";
 * const w = strictWorkload({ doorbells: 10, seed: 1 });
 * assert.equal(w.descriptors, 20);
 * ```
 */
export function strictWorkload(
  opts: { doorbells: number; vcpus?: number; seed: number; gapNs?: number; domain?: number },
): Workload {
  const rnd = prng(opts.seed);
  const vcpus = opts.vcpus ?? 1;
  const gap = opts.gapNs ?? 20_000;
  const domain = opts.domain ?? 1;
  const doorbells: Doorbell[] = [];
  const mapping: ({ iova: number; pages: number } | undefined)[] = Array.from({ length: vcpus }, () => undefined);
  for (let i = 0; i < opts.doorbells; i++) {
    const vcpu = i % vcpus;
    const m = mapping[vcpu] = nextMapping(Math.floor(i / vcpus), mapping[vcpu], rnd);
    const { iova, pages } = m;
    doorbells.push({
      at: Math.floor(i / vcpus) * gap + vcpu * Math.floor(gap / vcpus) + rnd(1000),
      vcpu,
      requests: [
        { op: "invalidate", domain, scope: { kind: "range", firstPage: iova, pages }, noPasid: true, leaf: true },
        { op: "sync" },
      ],
    });
  }
  doorbells.sort((a, b) => a.at - b.at);
  return { name: `strict, ${vcpus} vCPU${vcpus > 1 ? "s" : ""}`, doorbells, descriptors: count(doorbells) };
}

/**
 * Caching mode (an emulated VT-d with CM=1, as QEMU's): the guest also invalidates before using a new mapping, so
 * each DMA is two strict doorbells — a map-side invalidation (IH=0) and wait, then after the I/O the unmap-side one
 * (IH=1: leaf only) and wait — of the same range, in the recorded sizes ({@linkcode RECORDED_SHAPE}).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { cachingWorkload } from "./workloads.ts";
 * assert.equal(cachingWorkload({ pairs: 10, seed: 1 }).descriptors, 40);
 * ```
 */
export function cachingWorkload(opts: { pairs: number; seed: number; domain?: number }): Workload {
  const rnd = prng(opts.seed);
  const domain = opts.domain ?? 1;
  const doorbells: Doorbell[] = [];
  let mapping: { iova: number; pages: number } | undefined;
  for (let i = 0; i < opts.pairs; i++) {
    mapping = nextMapping(i, mapping, rnd, 2 * RECORDED_SHAPE.changePct); // per DMA: two invalidations each
    const { iova, pages } = mapping;
    for (const [side, leaf] of [[0, false], [1, true]] as const) {
      doorbells.push({
        at: i * 40_000 + side * 20_000 + rnd(1000),
        vcpu: 0,
        requests: [
          { op: "invalidate", domain, scope: { kind: "range", firstPage: iova, pages }, noPasid: true, leaf },
          { op: "sync" },
        ],
      });
    }
  }
  return { name: "caching mode (map + unmap side)", doorbells, descriptors: count(doorbells) };
}

/**
 * The statistics the recordings' `.stats.json` files give, computed for a workload's range invalidations: the share
 * of 4 KiB ones, of those repeating the previous range (per vCPU), and of leaf-only (IH=1) ones, in %.
 */
export function shapeStatistics(w: Workload): { ranges: number; small: number; repeats: number; leaf: number } {
  let ranges = 0, small = 0, repeats = 0, leaf = 0;
  const previous = new Map<number, string>();
  for (const d of w.doorbells) {
    for (const r of d.requests) {
      if (r.op !== "invalidate" || (r.scope.kind !== "range" && r.scope.kind !== "pasid-range")) continue;
      ranges++;
      if (r.scope.pages === 1) small++;
      if (r.leaf) leaf++;
      const key = `${r.scope.firstPage}/${r.scope.pages}`;
      if (previous.get(d.vcpu) === key) repeats++;
      previous.set(d.vcpu, key);
    }
  }
  const pct = (n: number) => Number(((n * 100) / Math.max(1, ranges)).toFixed(1));
  return { ranges, small: pct(small), repeats: pct(repeats), leaf: pct(leaf) };
}

/** Lazy mode (flush queue): one domain-wide flush and wait per ~70 unmaps. */
export function lazyWorkload(opts: { flushes: number; seed: number; domain?: number }): Workload {
  const rnd = prng(opts.seed);
  const doorbells: Doorbell[] = [];
  let at = 0;
  for (let i = 0; i < opts.flushes; i++) {
    at += (60 + rnd(20)) * 20_000; // ~70 unmaps of ~20 µs between flushes
    doorbells.push({
      at,
      vcpu: 0,
      requests: [{ op: "invalidate", domain: opts.domain ?? 1, scope: { kind: "all" }, noPasid: true }, { op: "sync" }],
    });
  }
  return { name: "lazy flush queue", doorbells, descriptors: count(doorbells) };
}

/** An SMMUv3 guest unmapping a 256 KiB buffer: 64 TLBI_NH_VA, one per 4 KiB page, for one ASID, then CMD_SYNC. */
export function smmuWorkload(opts: { syncs: number; seed: number; pasid: number; domain?: number }): Workload {
  const rnd = prng(opts.seed);
  const doorbells: Doorbell[] = [];
  for (let i = 0; i < opts.syncs; i++) {
    const base = rnd(1 << 24) * 64;
    const requests: Request[] = [];
    for (let p = 0; p < 64; p++) {
      requests.push({
        op: "invalidate",
        domain: opts.domain ?? 1,
        scope: { kind: "pasid-range", pasid: opts.pasid, firstPage: base + p, pages: 1 },
        leaf: true,
      });
    }
    requests.push({ op: "sync" });
    doorbells.push({ at: i * 50_000, vcpu: 0, requests });
  }
  return { name: "SMMUv3: 64 x TLBI_NH_VA + CMD_SYNC", doorbells, descriptors: count(doorbells) };
}

/**
 * SVA on VT-d: a process's `munmap`s of large ranges (64 KiB to 64 MiB), which the guest's mmu notifier sends as
 * PASID-based IOTLB invalidations of naturally aligned chunks of at most 512 pages (AM ≤ 9) followed by one wait, and
 * now and then the process exits: a PASID-wide invalidation and a wait before the PASID is torn down.
 */
export function svaWorkload(opts: { munmaps: number; seed: number; pasid: number; domain?: number }): Workload {
  const rnd = prng(opts.seed);
  const domain = opts.domain ?? 1;
  const doorbells: Doorbell[] = [];
  let at = 0;
  for (let i = 0; i < opts.munmaps; i++) {
    at += 50_000 + rnd(50_000);
    const requests: Request[] = [];
    if (i % 50 === 49) {
      requests.push({ op: "invalidate", domain, scope: { kind: "pasid", pasid: opts.pasid } }, { op: "sync" });
    } else {
      let page = 0x7f000 + rnd(1 << 16) * 16;
      let left = 16 << rnd(11); // 16 pages .. 16,384 pages
      while (left > 0) {
        // The largest naturally aligned chunk at `page`, at most 512 pages and at most what is left.
        let chunk = 512;
        while (chunk > 1 && (page % chunk !== 0 || chunk > left)) chunk >>= 1;
        requests.push({
          op: "invalidate",
          domain,
          scope: { kind: "pasid-range", pasid: opts.pasid, firstPage: page, pages: chunk },
          leaf: true,
        });
        page += chunk;
        left -= chunk;
      }
      requests.push({ op: "sync" });
    }
    doorbells.push({ at, vcpu: 0, requests });
  }
  return { name: "SVA munmap + process exit", doorbells, descriptors: count(doorbells) };
}
