/**
 * The same guest workload replayed through three relay policies on the same backend (the in-process host):
 *
 * - `per-descriptor` — QEMU today: one ioctl per guest invalidation per device, sent as it is decoded;
 * - `batch-to-sync` — OpenVMM: everything up to the next wait in one ioctl per target, never merged;
 * - `iommu-relay` — look-ahead across waits, batching while an ioctl is in flight, coalescing, no fan-out.
 *
 * Counts are deterministic (the in-flight window is modelled); time per descriptor is measured and only reported.
 *
 * @module
 */
import type { Backend, Format } from "../host/backend.ts";
import type { Binding } from "../relay/queue.ts";
import { RelayQueue } from "../relay/queue.ts";
import type { InvalidateRequest, PasidOrRid } from "../request/request.ts";
import { ModelHost } from "../host/model.ts";
import { checkDrain, type CoverageProbe, replay } from "./replay.ts";
import type { Workload } from "./workloads.ts";

/** A relay policy. */
export type Policy = "per-descriptor" | "batch-to-sync" | "iommu-relay";

/** Where the workload's domains are bound, and how many devices share each target (QEMU fans out per device). */
export interface PolicySetup {
  /** The (domain, PASID) bindings to make, one target each, with the ASID for SMMUv3 ones. */
  readonly bindings: readonly { domain: number; pasid: PasidOrRid; format: Binding["format"]; asid?: number }[];
  /** Devices behind each target (default 1): `per-descriptor` sends each request once per device, as QEMU does. */
  readonly devicesPerTarget?: number;
  /** The host SMMUv3 has range invalidation (IDR3.RIL); default false. */
  readonly smmuRil?: boolean;
  /** Modelled host ioctl time, ns (the in-flight window). */
  readonly ioctlNs?: number;
}

/** One policy's figures on one workload. */
export interface PolicyResult {
  /** The policy replayed. */
  readonly policy: Policy;
  /** The workload's name. */
  readonly workload: string;
  /** Guest descriptors in the workload. */
  readonly descriptors: number;
  /** Host invalidation calls made. */
  readonly ioctls: number;
  /** Host entries sent in them. */
  readonly entries: number;
  /** Host calls per 1,000 guest descriptors. */
  readonly ioctlsPer1000: number;
  /** Host entries per 1,000 guest descriptors. */
  readonly entriesPer1000: number;
  /** Requested pages not seen invalidated (checked at every flush on the in-process host; NaN elsewhere). */
  readonly underInvalidated: number;
  /** Pages invalidated beyond what was asked (range invalidations), and whole-space flushes nobody asked for. */
  readonly overInvalidatedPages: number;
  /** Whole-space flushes of a target none of whose requests in that drain asked for the whole space. */
  readonly escalations: number;
  /** Wall time per guest descriptor in this process (reported, never asserted). */
  readonly nsPerDescriptor: number;
}

/**
 * Where a policy replay sends its batches: the in-process host (default; every drain is then checked for under- and
 * over-invalidation), or any backend that can make targets — the kernel suite passes the selftest mock's nested
 * HWPTs to time the policies against the real IOMMU_HWPT_INVALIDATE.
 */
export interface PolicyHost extends Backend {
  /** Make a target taking `format` entries; returns its id. */
  createTarget(format: Format): number;
}

/** Replay `workload` through `policy` (on `host`; coverage is checked only on the in-process host). */
export function runPolicy(
  workload: Workload,
  policy: Policy,
  setup: PolicySetup,
  host: PolicyHost = new ModelHost(),
): PolicyResult {
  const model = host instanceof ModelHost ? host : undefined;
  const queue = new RelayQueue(host, { smmuRil: setup.smmuRil ?? false, coalesce: policy === "iommu-relay" });
  const targets = new Map<string, Binding>();
  for (const b of setup.bindings) {
    const key = `${b.domain}/${b.pasid}`;
    const binding: Binding = {
      targetId: host.createTarget(b.format),
      format: b.format,
      ...(b.asid !== undefined ? { asid: b.asid } : {}),
    };
    targets.set(key, binding);
    queue.bind(b.domain, b.pasid, binding);
  }
  const probe: CoverageProbe = (r: InvalidateRequest) => {
    const s = r.scope;
    const out: ReturnType<CoverageProbe> = [];
    for (const [key, b] of targets) {
      const [d, p] = key.split("/");
      const pasid: PasidOrRid = p === "rid" ? "rid" : Number(p);
      if (Number(d) !== r.domain) continue;
      if ((s.kind === "pasid" || s.kind === "pasid-range") && s.pasid !== pasid) continue;
      if ((s.kind === "all" || s.kind === "range") && r.noPasid && pasid !== "rid") continue;
      const ranged = s.kind === "range" || s.kind === "pasid-range";
      out.push({
        targetId: b.targetId,
        asid: b.asid,
        firstPage: ranged ? s.firstPage : 0,
        pages: ranged ? s.pages : Infinity,
      });
    }
    return out;
  };
  const fanOut = policy === "per-descriptor" ? setup.devicesPerTarget ?? 1 : 1;
  const start = performance.now();
  let ioctls = 0, entries = 0, under = 0, overPages = 0, escalations = 0;
  if (policy === "iommu-relay") {
    const r = replay(workload, queue, { ioctlNs: setup.ioctlNs ?? 3000, host: model, probe });
    ioctls = r.ioctls;
    entries = r.entries;
    overPages = r.overInvalidatedPages;
    escalations = r.escalations;
  } else {
    for (const bell of workload.doorbells) {
      let pending: InvalidateRequest[] = [];
      const flush = () => {
        const report = queue.drain();
        ioctls += report.ioctls * fanOut;
        entries += report.entries * fanOut;
        if (model) {
          const c = checkDrain(model, probe, pending);
          under += c.under;
          overPages += c.overPages;
          escalations += c.escalations;
        }
        pending = [];
      };
      for (const r of bell.requests) {
        queue.submit(r);
        if (r.op === "invalidate") pending.push(r);
        if (policy === "per-descriptor" && r.op === "invalidate") flush();
        if (policy === "batch-to-sync" && r.op === "sync") flush();
      }
      if (pending.length) flush();
    }
  }
  const ns = ((performance.now() - start) * 1e6) / workload.descriptors;
  const per1000 = (n: number) => Number(((n * 1000) / workload.descriptors).toFixed(1));
  return {
    policy,
    workload: workload.name,
    descriptors: workload.descriptors,
    ioctls,
    entries,
    ioctlsPer1000: per1000(ioctls),
    entriesPer1000: per1000(entries),
    underInvalidated: model ? under : NaN,
    overInvalidatedPages: model ? overPages : NaN,
    escalations: model ? escalations : NaN,
    nsPerDescriptor: Math.round(ns),
  };
}

/** All three policies on one workload. */
export function comparePolicies(workload: Workload, setup: PolicySetup): PolicyResult[] {
  return (["per-descriptor", "batch-to-sync", "iommu-relay"] as const).map((p) => runPolicy(workload, p, setup));
}
