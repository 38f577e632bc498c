/**
 * The demo's guest script, shared by `deno task demo` (in-process host) and the kernel suite (real kernel,
 * selftest format): a strict-mode stream of (IOTLB invalidation, wait) doorbells from a NIC without PASID, an SVA
 * munmap burst on PASID 5 of a second device, and a PASID rebind with a PASID-cache invalidation — all written as
 * 256-bit VT-d descriptors through the VT-d front end.
 *
 * @module
 */
import type { StageOneTable } from "../core/request.ts";
import type { RelayPlugin } from "../plugin/plugin.ts";
import type { ScriptedGuest } from "./guest.ts";
import { prng } from "./workloads.ts";

/** What the script did. */
export interface DemoSummary {
  descriptors: number;
  doorbells: number;
  failures: number;
  /** Pages the in-process host did not see invalidated (only counted on the in-process host). */
  underInvalidated: number;
  burst: { descriptors: number; ioctls: number };
  /** Doorbell latencies, µs, in order. */
  latenciesUs: number[];
  nic: RelayPlugin;
  gpu: RelayPlugin;
}

/**
 * Run the script on `guest`. `table(n)` gives the n-th stage-1 table in the host's format (VT-d S1 on the
 * in-process host, selftest on the kernel's mock).
 */
export function runDemoScript(
  guest: ScriptedGuest,
  opts: { doorbells: number; seed: number; table: (n: number) => StageOneTable; progress?: (done: number) => void },
): DemoSummary {
  const nic = guest.device({ domain: 1 }); // a NIC doing DMA without PASID
  const gpu = guest.device({ domain: 2 }); // an SVA device: process address spaces on PASIDs
  nic.submit({ op: "bind", domain: 1, pasid: "rid", table: opts.table(0) });
  gpu.submit({ op: "bind", domain: 2, pasid: 5, table: opts.table(1) });
  const vtd = guest.vtd({ wide: true }); // scalable mode: 256-bit descriptors
  const check = guest.host.model !== undefined;
  const rnd = prng(opts.seed);
  const summary: DemoSummary = {
    descriptors: 0,
    doorbells: 0,
    failures: 0,
    underInvalidated: 0,
    burst: { descriptors: 0, ioctls: 0 },
    latenciesUs: [],
    nic,
    gpu,
  };
  const ring = () => {
    const t0 = performance.now();
    const r = vtd.ring();
    summary.latenciesUs.push((performance.now() - t0) * 1000);
    summary.descriptors += r.processed;
    summary.doorbells++;
    if (r.error) summary.failures++;
    return r;
  };
  let iova = 0x4_0000;
  for (let i = 0; i < opts.doorbells; i++) {
    // Strict mode: one invalidation + one wait per doorbell; the same IOVA recurs 96 % of the time; 4K or 128K.
    if (rnd(100) >= 96) iova = 0x4_0000 + rnd(1 << 16) * 32;
    vtd.iotlb(1, { page: iova, am: rnd(2) === 0 ? 0 : 5 }).wait();
    ring();
    if (check) {
      if (!guest.invalidated(1, "rid", iova)) summary.underInvalidated++;
      guest.resetHost();
    }
    opts.progress?.(i + 1);
  }
  // An SVA munmap of 512 KiB in one doorbell: 128 page invalidations, then one wait.
  for (let p = 0; p < 128; p++) vtd.pasidIotlb(2, 5, { page: 0x7f000 + p, am: 0, leaf: true });
  vtd.wait();
  const before = gpu.telemetry.queue.ioctls;
  summary.burst.descriptors = ring().processed;
  summary.burst.ioctls = gpu.telemetry.queue.ioctls - before;
  if (check) { for (const p of [0x7f000, 0x7f07f]) if (!guest.invalidated(2, 5, p)) summary.underInvalidated++; }
  // The process exits: the guest rebinds PASID 5 and tells the IOMMU (PASID-cache invalidation), then flushes it.
  gpu.submit({ op: "bind", domain: 2, pasid: 5, table: opts.table(2) });
  vtd.pasidCache(2, 5).pasidIotlb(2, 5).wait();
  ring();
  return summary;
}
