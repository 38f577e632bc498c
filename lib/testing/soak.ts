/**
 * The soak: a long random stream of guest operations across several devices (each its own guest domain) through
 * iommu-relay's plugins on the in-process host, with injected host failures, and the invariants checked at every
 * drain: no invalidation that was not reported failed is missing on the host (never under-invalidate), a wait is
 * ok exactly when no request before it since the previous drain failed (order across barriers), every failure is
 * reported once, and the queue's PASID table equals what the guest bound. Memory is sampled to show it stays flat.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { soak } from "./soak.ts";
 * const r = soak({ ops: 20_000, seed: 1 });
 * assert.equal(r.violations.length, 0);
 * assert.equal(r.ops, 20_000);
 * ```
 *
 * @module
 */
import { RelayHost, type RelayPlugin, relayPlugin } from "../plugin/plugin.ts";
import type { PasidOrRid, Request, Scope } from "../request/request.ts";
import { prng } from "./workloads.ts";

/** What a soak did. */
export interface SoakReport {
  readonly ops: number;
  readonly seed: number;
  readonly invalidations: number;
  readonly waits: number;
  readonly drains: number;
  readonly injectedFailures: number;
  readonly reportedFailures: number;
  /** Pages checked on the host after their drain. */
  readonly pagesChecked: number;
  /** Heap used (MiB) after each tenth of the run (after a GC when `gc` is exposed). */
  readonly heapMiB: readonly number[];
  /** Invariant violations (empty when all held); the first 20. */
  readonly violations: readonly string[];
}

const PASIDS: PasidOrRid[] = ["rid", 1, 2, 3, 5, 8, 13, 0xfffff];

/** One device's requests since its previous drain. */
interface DeviceLedger {
  /** Invalidations not yet seen complete on the host: what each must reach. */
  unverified: { seq: number; targets: number[]; pages: number[] }[];
  /** Invalidations that were sent but did not reach the host: each must be reported failed at the owner's drain. */
  mustFail: Set<number>;
  waits: number[];
  seqs: Set<number>;
}

/**
 * Run `ops` operations over `devices` devices (default 4). Nothing is drained for the checker's convenience: binds
 * and unbinds are the barriers they are, each device drains when the random stream says so, and the invariants are
 * checked per owner — another device's barrier or drain must never take a device's outcome.
 */
export function soak(opts: { ops: number; seed: number; devices?: number }): SoakReport {
  const rnd = prng(opts.seed);
  using host = RelayHost.inProcess();
  const model = host.model!;
  const queue = host.queue();
  const n = opts.devices ?? 4;
  const devs: RelayPlugin[] = [];
  const ledgers = new Map<RelayPlugin, DeviceLedger>();
  for (let d = 1; d <= n; d++) {
    const dev = relayPlugin.create(host, { domain: d, device: { kind: "model" } });
    devs.push(dev);
    ledgers.set(dev, { unverified: [], mustFail: new Set(), waits: [], seqs: new Set() });
  }
  const bound = new Map<string, number>(); // `${domain}/${pasid}` → table number
  const violations: string[] = [];
  const violate = (s: string) => violations.length < 20 && violations.push(s);
  let invalidations = 0, waits = 0, drains = 0, injected = 0, reported = 0, pagesChecked = 0;
  const heap: number[] = [];
  const gc = (globalThis as { gc?: () => void }).gc;
  /**
   * Everything pending was just sent (a drain or a barrier): every device's invalidations are on the host now, or
   * must be reported failed to their owner.
   */
  const sent = () => {
    for (const ledger of ledgers.values()) {
      for (const e of ledger.unverified) {
        let ok = true;
        for (const t of e.targets) {
          for (const p of e.pages) {
            pagesChecked++;
            if (!model.covered(t, p)) ok = false;
          }
        }
        if (!ok) ledger.mustFail.add(e.seq);
      }
      ledger.unverified = [];
    }
    model.resetCoverage();
  };
  const drain = (dev: RelayPlugin) => {
    const r = dev.drain();
    drains++;
    sent();
    const ledger = ledgers.get(dev)!;
    const failed = new Set<number>();
    for (const f of r.failures) {
      if (failed.has(f.seq)) violate(`seq ${f.seq} reported failed twice`);
      failed.add(f.seq);
      if (!ledger.seqs.has(f.seq)) violate(`device ${dev.config.domain} told of seq ${f.seq}, not its own`);
    }
    for (const seq of ledger.mustFail) {
      if (!failed.has(seq)) violate(`device ${dev.config.domain}: seq ${seq} missed the host and was not reported`);
    }
    reported += failed.size;
    if (r.waits.length !== ledger.waits.length) {
      violate(`device ${dev.config.domain}: ${r.waits.length} waits resolved, ${ledger.waits.length} queued`);
    }
    for (const w of r.waits) {
      if (!ledger.seqs.has(w.seq)) violate(`device ${dev.config.domain} got wait ${w.seq}, not its own`);
      const failedBefore = [...failed].some((s) => s < w.seq);
      if (w.ok === failedBefore) violate(`wait ${w.seq} ok=${w.ok} but failed-before=${failedBefore}`);
    }
    ledger.mustFail.clear();
    ledger.waits = [];
    ledger.seqs.clear();
  };
  /** A bind or unbind: a barrier when it changes anything (the queue counts its barriers). */
  const change = (dev: RelayPlugin, request: Request) => {
    const before = queue.telemetry.barriers;
    dev.submit(request);
    if (queue.telemetry.barriers !== before) sent();
  };
  for (let op = 0; op < opts.ops; op++) {
    if (op % Math.max(1, Math.floor(opts.ops / 10)) === 0) {
      gc?.();
      heap.push(Number((Deno.memoryUsage().heapUsed / 2 ** 20).toFixed(1)));
    }
    const dev = devs[rnd(n)];
    const ledger = ledgers.get(dev)!;
    const domain = dev.config.domain;
    const k = rnd(100);
    if (k < 6) {
      const pasid = PASIDS[rnd(PASIDS.length)];
      const table = rnd(6);
      change(dev, {
        op: "bind",
        domain,
        pasid,
        table: { format: "vtd-s1", tableAddress: (table + 1) * 0x1000, addressWidth: 48 },
      });
      bound.set(`${domain}/${pasid}`, table);
    } else if (k < 9) {
      const pasid = PASIDS[rnd(PASIDS.length)];
      change(dev, { op: "unbind", domain, pasid });
      bound.delete(`${domain}/${pasid}`);
    } else if (k < 75) {
      const pasid = PASIDS[rnd(PASIDS.length)];
      const first = rnd(1 << 20), pages = 1 + (rnd(4) === 0 ? rnd(4096) : rnd(8));
      const s = rnd(8);
      let scope: Scope;
      if (s === 0) scope = { kind: "all" };
      else if (pasid === "rid" || s < 3) scope = { kind: "range", firstPage: first, pages };
      else if (s < 5) scope = { kind: "pasid", pasid };
      else scope = { kind: "pasid-range", pasid, firstPage: first, pages };
      const request: Request = { op: "invalidate", domain, scope, ...(rnd(3) === 0 ? { leaf: true } : {}) };
      // The targets this must reach: a range reaches the RID and every PASID; a PASID scope only that PASID.
      const reach = scope.kind === "all" || scope.kind === "range"
        ? PASIDS.flatMap((p) => queue.bindings(domain, p))
        : queue.bindings(domain, scope.pasid);
      const sample = scope.kind === "all" || scope.kind === "pasid"
        ? [rnd(1 << 20)]
        : [scope.firstPage, scope.firstPage + scope.pages - 1];
      if (rnd(200) === 0 && reach.length) {
        model.inject.push({ targetId: reach[0].targetId, atEntry: 0, errno: rnd(2) ? 22 : 16 });
        injected++;
      }
      const before = queue.telemetry.thresholdDrains;
      const seq = dev.submit(request)!;
      ledger.seqs.add(seq);
      invalidations++;
      ledger.unverified.push({ seq, targets: [...new Set(reach.map((b) => b.targetId))], pages: sample });
      if (queue.telemetry.thresholdDrains !== before) sent();
    } else if (k < 95) {
      const seq = dev.submit({ op: "sync" })!;
      ledger.waits.push(seq);
      ledger.seqs.add(seq);
      waits++;
    } else {
      drain(dev);
    }
    if (k < 9) {
      // PASID table consistency: the queue's view equals the guest's after every bind and unbind.
      for (const p of PASIDS) {
        const want = bound.has(`${domain}/${p}`) ? 1 : 0;
        const got = queue.bindings(domain, p).length;
        if (want !== got) violate(`domain ${domain} PASID ${p}: ${got} bindings, guest bound ${want}`);
      }
    }
  }
  for (const d of devs) drain(d);
  for (const d of devs) d[Symbol.dispose]();
  model.inject.length = 0;
  return {
    ops: opts.ops,
    seed: opts.seed,
    invalidations,
    waits,
    drains,
    injectedFailures: injected,
    reportedFailures: reported,
    pagesChecked,
    heapMiB: heap,
    violations,
  };
}
