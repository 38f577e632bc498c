// Figures (reported, never asserted): single-entry and 64-entry invalidations of a mock nested HWPT through
// the library's hot path and through the shim's in-process C loop making the same ioctl, in one run.
// Under TCG these are emulated-CPU times: only the ratios mean anything.
import { IOCTL_LOOP, IOCTL_PAIR_LOOP } from "../ffi/native.ts";
import assert from "node:assert/strict";
import {
  IoasMapFlags,
  IOMMU_HWPT_INVALIDATE,
  IOMMU_IOAS_MAP,
  IOMMU_IOAS_UNMAP,
  IommuHwptInvalidate,
  IommuIoasMap,
  IommuIoasUnmap,
  MockConstants,
} from "../lib/uapi/mod.ts";
import { MockDevice } from "../lib/kernel/mod.ts";
import { ShadowDomain } from "../lib/shadow/domain.ts";
import { KernelShadowIoas } from "../lib/shadow/kernel_ioas.ts";
import { GuestPageTables } from "../lib/shadow/page_tables.ts";
import { atLeast, kernelTest, nestedChain, openIommufd, release, shim } from "./harness.ts";
import { assertAllocatesNothing } from "../tests/alloc_probe.ts";
import {
  PIPELINE_ENTRIES,
  type PipelineShape,
  relayStep,
  vtdDoorbellStep,
  vtdPipelineStep,
} from "../bench/probes/paths.ts";
import { KernelBackend } from "../lib/host/kernel.ts";
import { RelayQueue } from "../lib/relay/queue.ts";
import { mockIotlbHolds } from "../lib/kernel/mod.ts";
import { type PolicySetup, runPolicy } from "../lib/testing/policies.ts";
import { cachingWorkload, lazyWorkload, smmuWorkload, strictWorkload, svaWorkload } from "../lib/testing/workloads.ts";

const M = MockConstants.values;

/**
 * Warm-up by time, not by count: under TCG V8's optimizing compiler runs on a background thread for a long while, so a
 * fixed number of warm-up calls can leave the measured ones in unoptimized code.
 */
const WARM_MS = 1500;
function warm(fn: () => void, ms = WARM_MS): void {
  const end = performance.now() + ms;
  while (performance.now() < end) for (let i = 0; i < 100; i++) fn();
}
const TYPE = M.IOMMU_HWPT_INVALIDATE_DATA_SELFTEST;
const ENTRY = 8;

/**
 * Per-call latency percentiles in ns, and the clock's own share of each: the p50 of an empty span between two clock
 * reads (under TCG `performance.now()` costs microseconds, so it is a visible part of a cheap call's sample).
 */
interface Percentiles {
  p50: number;
  p99: number;
  p999: number;
  clockNs: number;
}

/** Time each of `calls` calls of `fn` alone (warm it first): the percentiles a mean hides. */
function percentiles(calls: number, fn: () => void): Percentiles {
  const lat = new Float64Array(calls);
  const at = (p: number) => lat[Math.min(calls - 1, Math.floor(calls * p))] * 1e6;
  for (let i = 0; i < calls; i++) {
    const t = performance.now();
    lat[i] = performance.now() - t;
  }
  lat.sort();
  const clockNs = at(0.5);
  for (let i = 0; i < calls; i++) {
    const t = performance.now();
    fn();
    lat[i] = performance.now() - t;
  }
  lat.sort();
  return { p50: at(0.5), p99: at(0.99), p999: at(0.999), clockNs };
}

/** "p50 / p99 / p99.9" in ns. */
const pct = (p: Percentiles) => `p50 ${p.p50.toFixed(0)} / p99 ${p.p99.toFixed(0)} / p99.9 ${p.p999.toFixed(0)} ns`;

kernelTest("figures: invalidation cost per entry, library vs in-process C loop", ["hwpt-invalidate"], async () => {
  using iommufd = openIommufd();
  using chain = nestedChain(iommufd, 1);
  const nested = chain.nested;
  const lines: string[] = [];
  for (const batch of [1, 64]) {
    const entries = new Uint8Array(batch * ENTRY);
    for (let i = 0; i < batch; i++) new DataView(entries.buffer).setUint32(i * ENTRY + 4, i % 4, true);
    const calls = batch === 1 ? 4000 : 500;
    let failures = 0;
    const call = () => void (failures += nested.invalidateRaw(TYPE, entries, ENTRY, batch) === 0 ? 0 : 1);
    warm(call);
    const args = IommuHwptInvalidate.buffer().set("hwpt_id", nested.id).set("data_type", TYPE).set("entry_len", ENTRY)
      .set("entry_num", batch);
    let lib = Infinity, c = Infinity;
    for (let round = 0; round < 3; round++) {
      lib = Math.min(lib, timeNs(calls, call) / batch);
      const t0 = performance.now();
      const rc = shim[IOCTL_LOOP](iommufd.fd, IOMMU_HWPT_INVALIDATE.request, args.bytes, 8, entries, calls);
      c = Math.min(c, ((performance.now() - t0) * 1e6) / (calls * batch));
      assert.equal(rc, 0);
    }
    const p = percentiles(calls, call);
    assert.equal(failures, 0);
    lines.push(
      `figures: ${batch}-entry invalidate: library ${lib.toFixed(0)} ns/entry, C loop ${c.toFixed(0)} ns/entry, ` +
        `ratio ${(lib / c).toFixed(2)} (best of 3 x ${calls} calls after ${WARM_MS} ms of warm-up, TCG); ` +
        `library per ioctl ${pct(p)} (empty span ${p.clockNs.toFixed(0)} ns)`,
    );
  }
  // The standalone C program (bench/hwpt_invalidate_loop.c: its own chain, no Deno runtime), for reference; it is
  // built against the 7.3 headers, so 6.x boots skip it.
  const standalone = Deno.env.get("IOMMU_RELAY_C_INVALIDATE");
  if (standalone && atLeast(7, 0)) {
    const out = await new Deno.Command(standalone, { args: ["4000", "3"], stdout: "piped" }).output();
    const r = JSON.parse(new TextDecoder().decode(out.stdout));
    assert.ok(out.success, `standalone C program: ${r.error}`);
    lines.push(
      `figures: standalone C program: 1-entry ${r.oneEntryNs.toFixed(0)} ns/ioctl, 64-entry ${
        r.perEntryNs64.toFixed(0)
      } ns/entry (best of 3 x ${r.calls})`,
    );
  } else lines.push(`figures: standalone C program not run (${standalone ? `Linux ${release}` : "not built"})`);
  for (const l of lines) console.log(l);
});

kernelTest(
  "figures: shadow mode, (map-side, unmap-side) invalidation pair vs a C loop making the same IOAS calls",
  [],
  () => {
    using iommufd = openIommufd();
    using ioas = iommufd.allocIoas();
    using _dev = MockDevice.create(iommufd, ioas.id); // a mock domain on the IOAS, so maps reach a page table
    const ram = shim.alignedBuffer(16 << 20);
    const tables = new GuestPageTables(ram, { format: "vtd-sl", levels: 4, tablesAt: 0xc0_0000 });
    const port = new KernelShadowIoas(ioas, ram);
    const domain = new ShadowDomain({ read: (a, n) => ram.subarray(a, a + n) }, ram.byteLength, port, tables.config);
    const PAGE = 0x1000, GPA = 0x200; // IOVA 16 MiB (the mock aperture), guest page 0x200
    const pair = () => {
      tables.map(PAGE, GPA, { read: true, write: true });
      const a = domain.sync(PAGE, 1);
      tables.unmap(PAGE);
      const b = domain.sync(PAGE, 1);
      return a.errno || b.errno || (a.maps === 1 && b.unmaps === 1 ? 0 : -1);
    };
    let failures = 0;
    warm(() => void (failures += pair() ? 1 : 0));
    const n = 2000;
    const t0 = performance.now();
    for (let i = 0; i < n; i++) failures += pair() ? 1 : 0;
    const t1 = performance.now();
    const f = IoasMapFlags.values;
    const map = IommuIoasMap.buffer()
      .set("flags", f.IOMMU_IOAS_MAP_FIXED_IOVA | f.IOMMU_IOAS_MAP_READABLE | f.IOMMU_IOAS_MAP_WRITEABLE)
      .set("ioas_id", ioas.id).setU64("length", 4096).setU64("iova", PAGE * 4096);
    const unmap = IommuIoasUnmap.buffer().set("ioas_id", ioas.id).setU64("iova", PAGE * 4096).setU64("length", 4096);
    const memory = ram.subarray(GPA * 4096, GPA * 4096 + 4096);
    const rc = shim[IOCTL_PAIR_LOOP](
      iommufd.fd,
      IOMMU_IOAS_MAP.request,
      map.bytes,
      map.offsetOf("user_va"),
      memory,
      IOMMU_IOAS_UNMAP.request,
      unmap.bytes,
      n,
    );
    const t2 = performance.now();
    const p = percentiles(n, () => void (failures += pair() ? 1 : 0));
    assert.equal(failures, 0);
    assert.equal(rc, 0);
    const lib = ((t1 - t0) * 1e6) / n, c = ((t2 - t1) * 1e6) / n;
    console.log(
      `figures: shadow pair: library ${lib.toFixed(0)} ns/pair (walk + diff + 2 ioctls), C loop ${
        c.toFixed(0)
      } ns/pair ` +
        `(2 ioctls), ratio ${(lib / c).toFixed(2)} (${n} pairs, TCG); library per pair ${pct(p)} (empty span ${
          p.clockNs.toFixed(0)
        } ns)`,
    );
  },
);

/** ns per call of `fn` over `calls` calls (warm it first). */
function timeNs(calls: number, fn: () => void): number {
  const t0 = performance.now();
  for (let i = 0; i < calls; i++) fn();
  return ((performance.now() - t0) * 1e6) / calls;
}

kernelTest(
  "figures: one guest invalidation end to end (VT-d descriptors in guest RAM → decode → request → compile → ioctl) vs the C loop",
  ["hwpt-invalidate"],
  () => {
    using iommufd = openIommufd();
    using chain = nestedChain(iommufd, 0x77);
    const nested = chain.nested;
    const backend = new KernelBackend(iommufd);
    const queue = new RelayQueue(backend);
    queue.bind(1, 5, { targetId: nested.id, format: "selftest" });
    // The guest's ring of (PASID-IOTLB of one page of PASID 5, wait with status write) pairs, a doorbell per call;
    // and the relay alone, the request already decoded (each step throws if anything fails).
    const doorbell = vtdDoorbellStep(queue), relay = relayStep(queue);
    // The same ioctl from the C loop: one selftest entry zeroing slot 1 (PASID 5 mod 4) of the nested HWPT.
    const entry = new Uint8Array(8);
    new DataView(entry.buffer).setUint32(4, 1, true);
    const args = IommuHwptInvalidate.buffer().set("hwpt_id", nested.id).set("data_type", TYPE).set("entry_len", ENTRY)
      .set("entry_num", 1);
    const calls = 4000;
    const rounds: { doorbell: number; relay: number; c: number }[] = [];
    warm(doorbell);
    warm(relay);
    for (let round = 0; round < 3; round++) {
      const d = timeNs(calls, doorbell), r = timeNs(calls, relay);
      const t0 = performance.now();
      const rc = shim[IOCTL_LOOP](iommufd.fd, IOMMU_HWPT_INVALIDATE.request, args.bytes, 8, entry, calls);
      const c = ((performance.now() - t0) * 1e6) / calls;
      assert.equal(rc, 0);
      rounds.push({ doorbell: d, relay: r, c });
    }
    const pDoorbell = percentiles(calls, doorbell), pRelay = percentiles(calls, relay);
    assert.ok(mockIotlbHolds(iommufd, nested.id, 1, 0), "the doorbells' invalidations reached the mock IOTLB");
    assert.ok(mockIotlbHolds(iommufd, nested.id, 0, 0x77), "and only the slot of PASID 5");
    const best = (k: "doorbell" | "relay" | "c") => Math.min(...rounds.map((x) => x[k]));
    console.log(
      `figures: end to end per guest invalidation (best of 3 x ${calls} after ${WARM_MS} ms of warm-up, TCG): doorbell (2 descriptors decoded, ` +
        `1 ioctl, wait status written) ${best("doorbell").toFixed(0)} ns, relay only ${best("relay").toFixed(0)} ns, ` +
        `C loop ${best("c").toFixed(0)} ns; ratios ${(best("doorbell") / best("c")).toFixed(2)} and ` +
        `${(best("relay") / best("c")).toFixed(2)}; doorbell ${pct(pDoorbell)}, relay only ${pct(pRelay)} (empty span ${
          pRelay.clockNs.toFixed(0)
        } ns)`,
    );
  },
);

/** One path's figures for a doorbell: mean (best of three rounds) and every doorbell timed alone. */
interface DoorbellFigures extends Percentiles {
  meanNs: number;
}

/** Doorbells per round and shape: a few ms to tenths of a second each under TCG, and enough for a p99.9. */
const DOORBELLS: Record<PipelineShape, number> = { single: 4000, batch64: 1000 };

kernelTest(
  "figures: the whole VT-d doorbell (VtdInvalidationQueue → RelayQueue → KernelBackend, selftest entries) vs its C twin, relay and per-descriptor policies",
  ["hwpt-invalidate"],
  async () => {
    // The C twin (bench/vtd_doorbell.c, selftest sink): the same descriptors in its own guest RAM, the same decode,
    // routing and batching, selftest entries compiled as lib/compile/selftest.ts does, the real IOMMU_HWPT_INVALIDATE
    // on its own mock nested HWPT; and QEMU's per-descriptor policy in the same program. Built against the 7.3 headers.
    const twinExe = Deno.env.get("IOMMU_RELAY_C_DOORBELL");
    const twinRuns = twinExe !== undefined && twinExe !== "" && atLeast(7, 0);
    const twin = async (shape: PipelineShape, policy: "relay" | "per-descriptor"): Promise<DoorbellFigures> => {
      const n = DOORBELLS[shape];
      const out = await new Deno.Command(twinExe!, {
        args: ["selftest", shape, policy, String(n), "3", "latency"],
        stdout: "piped",
        stderr: "piped",
      }).output();
      const text = new TextDecoder().decode(out.stdout);
      assert.ok(out.success, `vtd_doorbell ${shape} ${policy}: ${text} ${new TextDecoder().decode(out.stderr)}`);
      const r = JSON.parse(text);
      assert.equal(r.iqe, 0);
      assert.equal(r.unexpected, 0, "every ioctl succeeded and the mock IOTLB holds what the doorbells asked");
      const perDoorbell = policy === "relay" ? 1 : PIPELINE_ENTRIES[shape];
      assert.equal(r.ioctls, r.doorbellsRun * perDoorbell, `the twin's ioctls per doorbell (${shape}, ${policy})`);
      return { meanNs: r.bestNs, p50: r.p50Ns, p99: r.p99Ns, p999: r.p999Ns, clockNs: r.clockNs };
    };

    using iommufd = openIommufd();
    using chain = nestedChain(iommufd, 0x77);
    const backend = new KernelBackend(iommufd);
    const queue = new RelayQueue(backend);
    queue.bind(1, 5, { targetId: chain.nested.id, format: "selftest" });
    const typescript = (shape: PipelineShape): DoorbellFigures => {
      const step = vtdPipelineStep(queue, shape), n = DOORBELLS[shape];
      warm(step);
      const calls0 = backend.calls;
      let meanNs = Infinity;
      for (let round = 0; round < 3; round++) meanNs = Math.min(meanNs, timeNs(n, step));
      const p = percentiles(n, step);
      // The relay's policy: one ioctl per doorbell whatever the shape (64 pages collapse into one slot flush).
      assert.equal(backend.calls - calls0, 4 * n, `the relay's ioctls per doorbell (${shape})`);
      return { meanNs, ...p };
    };

    const lines: string[] = [];
    const ns = (x: number) => (x >= 10_000 ? `${(x / 1000).toFixed(1)} µs` : `${x.toFixed(0)} ns`);
    const row = (f: DoorbellFigures, base?: DoorbellFigures) =>
      `mean ${ns(f.meanNs)}, p50 ${ns(f.p50)}, p99 ${ns(f.p99)}, p99.9 ${ns(f.p999)}` +
      (base
        ? `; ratio to the twin ${(f.meanNs / base.meanNs).toFixed(2)} (mean), ${(f.p50 / base.p50).toFixed(2)} (p50)`
        : "");
    for (const shape of ["single", "batch64"] as const) {
      // Interleaved: the twin, the TypeScript doorbell, QEMU's policy, so a change of load touches all three alike.
      const c = twinRuns ? await twin(shape, "relay") : undefined;
      const ts = typescript(shape);
      const qemu = twinRuns ? await twin(shape, "per-descriptor") : undefined;
      const head = `figures: VT-d doorbell ${shape} (${PIPELINE_ENTRIES[shape]} invalidation(s) + wait, ${
        DOORBELLS[shape]
      } doorbells, best of 3 after warm-up, TCG)`;
      lines.push(`${head}, TypeScript relay (1 ioctl/doorbell): ${row(ts, c)}`);
      if (c && qemu) {
        lines.push(
          `${head}, C twin relay (1 ioctl/doorbell): ${row(c)} (one C clock read ${c.clockNs.toFixed(0)} ns)`,
        );
        lines.push(
          `${head}, C per-descriptor (${PIPELINE_ENTRIES[shape]} ioctl(s)/doorbell): ${row(qemu, c)}`,
        );
      }
      lines.push(`${head}: TypeScript empty span between two clock reads ${ts.clockNs.toFixed(0)} ns (p50)`);
    }
    if (!twinRuns) lines.push(`figures: VT-d doorbell: C twin not run (${twinExe ? `Linux ${release}` : "not built"})`);
    assert.ok(mockIotlbHolds(iommufd, chain.nested.id, 1, 0), "the doorbells' invalidations reached the mock IOTLB");
    assert.ok(mockIotlbHolds(iommufd, chain.nested.id, 0, 0x77), "and only the slot of PASID 5");
    for (const l of lines) console.log(l);
  },
);

kernelTest("figures: the three policies against the real IOMMU_HWPT_INVALIDATE, time per guest descriptor", [
  "hwpt-invalidate",
], () => {
  using iommufd = openIommufd();
  using chain = nestedChain(iommufd);
  const backend = new KernelBackend(iommufd);
  // Every binding lands on the one mock nested HWPT, in the selftest format (the mock has no VT-d or SMMUv3 entries).
  const host = { invalidate: backend.invalidate.bind(backend), createTarget: () => chain.nested.id };
  const selftest = (pasid: "rid" | number): PolicySetup => ({ bindings: [{ domain: 1, pasid, format: "selftest" }] });
  const cases = [
    [strictWorkload({ doorbells: 1000, seed: 1 }), selftest("rid")],
    [strictWorkload({ doorbells: 1000, vcpus: 4, gapNs: 5000, seed: 2 }), selftest("rid")],
    [cachingWorkload({ pairs: 500, seed: 7 }), selftest("rid")],
    [lazyWorkload({ flushes: 200, seed: 3 }), selftest("rid")],
    [smmuWorkload({ syncs: 30, seed: 5, pasid: 3 }), selftest(3)],
    [svaWorkload({ munmaps: 100, seed: 6, pasid: 5 }), selftest(5)],
  ] as const;
  const policies = ["per-descriptor", "batch-to-sync", "iommu-relay"] as const;
  for (const [w, setup] of cases) {
    for (const policy of policies) warm(() => void runPolicy(w, policy, setup, host), 500);
    // Best of three interleaved rounds: TCG timings swing by tens of percent from run to run.
    const best = policies.map((policy) => ({ policy, ns: Infinity, ioctlsPer1000: 0 }));
    for (let round = 0; round < 3; round++) {
      for (const b of best) {
        const r = runPolicy(w, b.policy, setup, host);
        assert.ok(r.ioctls > 0);
        b.ns = Math.min(b.ns, r.nsPerDescriptor);
        b.ioctlsPer1000 = r.ioctlsPer1000;
      }
    }
    const line = best.map((b) => `${b.policy} ${b.ns} ns (${b.ioctlsPer1000} ioctls/1000)`);
    console.log(`figures: policies on the kernel, ${w.name}: ${line.join(", ")}`);
  }
});

kernelTest(
  "hot path on the kernel: submit + wait + drainInto through KernelBackend and the real IOMMU_HWPT_INVALIDATE allocates nothing after warm-up",
  ["hwpt-invalidate"],
  async () => {
    // 200,000 relays (the CPU is emulated): a boxed number each would be ~3 MiB, three more scavenges.
    await assertAllocatesNothing("kernel", 200_000, 20_000);
  },
);
