/**
 * Shadow mode on the recorded caching-mode shape (stock Linux 6.12 guest, emulated VT-d with caching mode, NVMe
 * I/O): before each DMA the guest maps an IOVA range and invalidates it (IH=0), after it unmaps and invalidates
 * again (IH=1) — 4 KiB or 128 KiB, the same IOVA recurring. Compared: iommu-relay's area map (only differences
 * become syscalls) and the naive policy (unmap the invalidated range, then map every present page), both on the
 * in-process IOAS, which counts the syscalls a kernel host would make.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { cachingModeStream, runShadowPolicy } from "./shadow_policies.ts";
 * const s = cachingModeStream({ pairs: 100, seed: 1 });
 * assert.equal(runShadowPolicy(s, "area-map").mismatches, 0);
 * assert.equal(runShadowPolicy(s, "naive").mismatches, 0);
 * ```
 *
 * @module
 */
import { guestMemoryOver } from "../memory/guest_memory.ts";
import { ShadowDomain } from "../shadow/domain.ts";
import { walkRange } from "../shadow/walk.ts";
import { ModelIoas } from "../shadow/model_ioas.ts";
import { GuestPageTables } from "../shadow/page_tables.ts";
import { prng } from "./workloads.ts";

/** One guest DMA: map (pages → guest pages), invalidate, DMA, unmap, invalidate. */
export interface DmaPair {
  /** First IOVA page of the DMA buffer. */
  readonly firstPage: number;
  /** Guest pages backing it, one per IOVA page. */
  readonly gpaPages: readonly number[];
  /** The device writes (else it reads) the buffer. */
  readonly write: boolean;
}

/** A recorded-shape stream. */
export interface CachingModeStream {
  /** The DMAs, in order. */
  readonly pairs: readonly DmaPair[];
}

/**
 * `pairs` DMAs: 4 KiB (70 %) or 128 KiB, at a recurring IOVA (96 %) from a small pool, data pages scattered in guest
 * RAM (an NVMe queue's buffers) with runs of 1–8 physically contiguous pages.
 */
export function cachingModeStream(opts: { pairs: number; seed: number }): CachingModeStream {
  const rnd = prng(opts.seed);
  const pool = [0x1_0000, 0x1_0040, 0x1_0080, 0x1_00c0];
  let iova = pool[0];
  const pairs: DmaPair[] = [];
  for (let i = 0; i < opts.pairs; i++) {
    if (rnd(100) >= 96) iova = pool[rnd(pool.length)];
    const pages = rnd(10) < 7 ? 1 : 32;
    const gpaPages: number[] = [];
    while (gpaPages.length < pages) {
      const start = 0x100 + rnd(0x150) * 8, run = 1 + rnd(8); // below the guest tables at 12 MiB
      for (let k = 0; k < run && gpaPages.length < pages; k++) gpaPages.push(start + k);
    }
    pairs.push({ firstPage: iova, gpaPages, write: rnd(2) === 0 });
  }
  return { pairs };
}

/** What a policy did. */
export interface ShadowPolicyResult {
  /** `area-map`: the shadowed domain's diff against its area map; `naive`: unmap and map every invalidated range. */
  readonly policy: "area-map" | "naive";
  /** IOAS map + unmap calls. */
  readonly syscalls: number;
  /** Invalidated pages whose host view differed from the guest's after the invalidation (must be 0). */
  readonly mismatches: number;
  /** Pages the walk could not map (must be 0 for this stream: every page is guest RAM). */
  readonly faults: number;
}

const RAM = 1 << 24;

/** Run `stream` under `policy`; the guest table lives in an in-process RAM. */
export function runShadowPolicy(stream: CachingModeStream, policy: "area-map" | "naive"): ShadowPolicyResult {
  const ram = new Uint8Array(RAM);
  const tables = new GuestPageTables(ram, { format: "vtd-sl", levels: 4, tablesAt: 0xc0_0000 });
  const memory = guestMemoryOver(ram, { views: true });
  const ioas = new ModelIoas();
  const domain = new ShadowDomain(memory, RAM, ioas, tables.config);
  let mismatches = 0, faults = 0;
  const invalidate = (first: number, pages: number) => {
    if (policy === "area-map") domain.sync(first, pages);
    else {
      // Naive: drop whatever is mapped in the range, then map each present page on its own.
      for (const a of ioas.areas.overlapping(first, first + pages - 1)) ioas.unmap(a.firstPage, a.pages);
      for (const r of walkRange(memory, tables.config, first, pages, RAM).runs) {
        for (let i = 0; i < r.pages; i++) ioas.map(r.firstPage + i, 1, r.gpaPage + i, r.read, r.write);
      }
    }
    const walked = walkRange(memory, tables.config, first, pages, RAM);
    faults += walked.faults.reduce((n, f) => n + f.pages, 0);
    const view = walked.runs;
    for (let p = first; p < first + pages; p++) {
      const run = view.find((r) => p >= r.firstPage && p < r.firstPage + r.pages);
      const host = ioas.lookup(p);
      const same = run
        ? host?.gpaPage === run.gpaPage + (p - run.firstPage) && host.read === run.read && host.write === run.write
        : host === undefined;
      if (!same) mismatches++;
    }
  };
  for (const d of stream.pairs) {
    d.gpaPages.forEach((g, i) => tables.map(d.firstPage + i, g, { read: true, write: d.write }));
    invalidate(d.firstPage, d.gpaPages.length); // IH=0, map side
    for (let i = 0; i < d.gpaPages.length; i++) tables.unmap(d.firstPage + i);
    invalidate(d.firstPage, d.gpaPages.length); // IH=1, unmap side
  }
  return { policy, syscalls: ioas.calls, mismatches, faults };
}
