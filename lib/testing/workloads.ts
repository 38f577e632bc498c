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
 * Strict mode: every unmap is followed by one invalidation and one wait in its own doorbell; 4 KiB and 128 KiB;
 * 93–99 % hit the same IOVA as the previous one. `vcpus` vCPUs submit concurrently, `gapNs` apart each.
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
  const iova = Array.from({ length: vcpus }, () => 0x10_0000 + rnd(1 << 16) * 32);
  for (let i = 0; i < opts.doorbells; i++) {
    const vcpu = i % vcpus;
    if (rnd(100) >= 96) iova[vcpu] = 0x10_0000 + rnd(1 << 16) * 32;
    const pages = rnd(2) === 0 ? 1 : 32;
    doorbells.push({
      at: Math.floor(i / vcpus) * gap + vcpu * Math.floor(gap / vcpus) + rnd(1000),
      vcpu,
      requests: [
        { op: "invalidate", domain, scope: { kind: "range", firstPage: iova[vcpu], pages }, noPasid: true },
        { op: "sync" },
      ],
    });
  }
  doorbells.sort((a, b) => a.at - b.at);
  return { name: `strict, ${vcpus} vCPU${vcpus > 1 ? "s" : ""}`, doorbells, descriptors: count(doorbells) };
}

/**
 * Caching mode (an emulated VT-d with CM=1, as QEMU's): the guest also invalidates before using a new mapping, so
 * each DMA is two strict doorbells — a map-side invalidation and wait, then after the I/O the unmap-side one (IH=1:
 * leaf only) and wait — on the same recurring IOVA as strict mode.
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
  let iova = 0x10_0000 + rnd(1 << 16) * 32;
  for (let i = 0; i < opts.pairs; i++) {
    if (rnd(100) >= 96) iova = 0x10_0000 + rnd(1 << 16) * 32;
    const pages = rnd(2) === 0 ? 1 : 32;
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
