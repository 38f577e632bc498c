// The in-process host is a second implementation of the kernel's rules. Here the same random scripts run on
// both — raw batches through the backends, and guest request streams through two relay queues — and every
// errno, entry_num and mock IOTLB slot must agree. Scripts are fast-check arbitraries replayed on fresh kernel
// objects, so a disagreement shrinks to a minimal script; fast-check's report gives the seed (IOMMU_RELAY_SEED
// replays it) and the shrunk script.
import assert from "node:assert/strict";
import type * as FastCheck from "fast-check";
import type { Backend, Format, InvalidateStatus } from "../lib/host/backend.ts";
import { KernelBackend } from "../lib/host/kernel.ts";
import { RelayQueue } from "../lib/relay/queue.ts";
import type { InvalidateRequest } from "../lib/request/request.ts";
import { type Iommufd, MockDevice, mockIotlbHolds } from "../lib/kernel/mod.ts";
import { ModelHost } from "../lib/host/model.ts";
import { HwptAllocFlags, MockConstants, selftestHwptData } from "../lib/uapi/mod.ts";
import { atLeast, kernelTest, openIommufd } from "./harness.ts";

const M = MockConstants.values;

type FC = typeof FastCheck;

/**
 * fast-check, loaded when a differential test runs. In the test VM Deno runs with an empty DENO_DIR on a tmpfs
 * (`/run/deno`, set by tools/kernel/run.ts) and without a network, so a static `npm:` import would fail to resolve
 * and take the whole suite's module graph with it (the type-only import above is skipped under `--no-check`).
 * The VM sees the host's root at the same paths, and the host's Deno cache holds the package (run.ts type-checks
 * kernel-suite/ on the host before it boots, which fetches it): the package and its dependencies are copied from
 * there into the VM's cache, then imported through deno.json's import map.
 */
async function fastCheck(): Promise<FC> {
  const vmCache = Deno.env.get("DENO_DIR");
  if (Deno.env.get("IOMMU_RELAY_KERNEL_VM") && vmCache) await seedNpmCache(`${vmCache}/npm/registry.npmjs.org`);
  const specifier = "fast-check"; // not a literal: the module graph must not try to resolve it before the seeding
  return (await import(specifier)).default as FC;
}

/** The host's Deno caches, as the VM sees them: IOMMU_RELAY_HOST_DENO_DIR, else the checkout owner's default. */
function hostDenoDirs(): string[] {
  const dirs: string[] = [];
  const given = Deno.env.get("IOMMU_RELAY_HOST_DENO_DIR");
  if (given) dirs.push(given);
  const owner = Deno.statSync(new URL("..", import.meta.url)).uid;
  for (const line of Deno.readTextFileSync("/etc/passwd").split("\n")) {
    const f = line.split(":");
    if (f.length > 5 && Number(f[2]) === owner) dirs.push(`${f[5]}/.cache/deno`);
  }
  return dirs;
}

/** Copies fast-check and its dependencies from a host Deno cache into `target` (the VM's npm cache). */
async function seedNpmCache(target: string): Promise<void> {
  if (existsSync(`${target}/fast-check`)) return;
  const sources = hostDenoDirs().map((d) => `${d}/npm/registry.npmjs.org`);
  const source = sources.find((s) => existsSync(`${s}/fast-check`));
  if (!source) throw new Error(`fast-check is in none of the host's Deno caches (${sources.join(", ")})`);
  const packages = ["fast-check"];
  for (let i = 0; i < packages.length; i++) {
    for (const version of Deno.readDirSync(`${source}/${packages[i]}`)) {
      const manifest = `${source}/${packages[i]}/${version.name}/package.json`;
      if (!version.isDirectory || !existsSync(manifest)) continue;
      const deps = Object.keys(JSON.parse(Deno.readTextFileSync(manifest)).dependencies ?? {});
      for (const d of deps) if (!packages.includes(d)) packages.push(d);
    }
  }
  Deno.mkdirSync(target, { recursive: true });
  for (const name of packages) {
    const out = await new Deno.Command("cp", { args: ["-a", `${source}/${name}`, `${target}/`] }).output();
    if (!out.success) throw new Error(`copying ${name} from ${source} failed: ${new TextDecoder().decode(out.stderr)}`);
  }
}

function existsSync(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

/** `IOMMU_RELAY_SEED` when set (to replay a reported failure), else the test's own seed. */
function propertySeed(fallback: number): number {
  const env = Deno.env.get("IOMMU_RELAY_SEED");
  return env === undefined ? fallback : Number(env);
}

function kernelIotlb(iommufd: Iommufd, hwpt: number, model: number[]): boolean {
  return model.every((v, slot) => mockIotlbHolds(iommufd, hwpt, slot, v));
}

function setup(iommufd: Iommufd) {
  const stack = new DisposableStack();
  const ioas = stack.use(iommufd.allocIoas());
  const dev = stack.use(MockDevice.create(iommufd, ioas.id));
  const parent = stack.use(
    iommufd.allocHwpt({ devId: dev.devId, ptId: ioas.id, flags: HwptAllocFlags.values.IOMMU_HWPT_ALLOC_NEST_PARENT }),
  );
  const nested = (iotlb: number) =>
    iommufd.allocHwpt({
      devId: dev.devId,
      ptId: parent.id,
      data: selftestHwptData(iotlb),
    });
  return { stack, parent, nested };
}

/** One selftest entry: flags (1: all slots; 2 and bit 31 are unknown flags) and an IOTLB slot (4 is out of range). */
interface SelftestEntry {
  flags: number;
  slot: number;
}

function selftestEntries(fc: FC, maxLength: number): FastCheck.Arbitrary<SelftestEntry[]> {
  return fc.array(
    fc.record({
      flags: fc.oneof(
        { weight: 3, arbitrary: fc.constant(0) },
        fc.constant(1),
        fc.constant(2),
        fc.constant(0x80000000),
      ),
      slot: fc.integer({ min: 0, max: 4 }),
    }),
    { maxLength },
  );
}

kernelTest("differential: 1,000 random batch scripts give identical errno, entry_num and IOTLB on kernel and model", [
  "hwpt-invalidate",
], async () => {
  const fc = await fastCheck();
  using iommufd = openIommufd();
  const { stack, parent, nested } = setup(iommufd);
  using _ = stack;
  const kernel = new KernelBackend(iommufd);
  const kStatus: InvalidateStatus = { errno: 0, handled: 0 };
  const mStatus: InvalidateStatus = { errno: 0, handled: 0 };
  const script = fc.record({
    /** The initial IOTLB value of each nested HWPT. */
    iotlbs: fc.array(fc.integer({ min: 1, max: 0xffff }), { minLength: 1, maxLength: 3 }),
    batches: fc.array(
      fc.record({
        /** Mostly a nested HWPT (index mod their number), sometimes the parent or an id that names nothing. */
        target: fc.oneof(
          { weight: 8, arbitrary: fc.nat() },
          { weight: 1, arbitrary: fc.constant("parent" as const) },
          { weight: 1, arbitrary: fc.constant("missing" as const) },
        ),
        entries: selftestEntries(fc, 5),
        /** A wrong data type now and then. */
        format: fc.oneof({ weight: 19, arbitrary: fc.constant<Format>("selftest") }, fc.constant<Format>("vtd-s1")),
      }),
      { minLength: 1, maxLength: 4 },
    ),
  });
  const seed = propertySeed(0xd1ff);
  let batches = 0;
  fc.assert(
    fc.property(script, ({ iotlbs, batches: plan }) => {
      const model = new ModelHost();
      model.kernel612 = !atLeast(6, 13);
      using scriptStack = new DisposableStack();
      const pairs: [number, number][] = iotlbs.map((iotlb) => [
        scriptStack.use(nested(iotlb)).id,
        model.createTarget("selftest", iotlb),
      ]);
      const parentPair: [number, number] = [parent.id, model.createTarget("paging")];
      const missingPair: [number, number] = [0xfffff, 999_999]; // no such object
      for (const [b, batch] of plan.entries()) {
        const [kid, mid] = batch.target === "parent"
          ? parentPair
          : batch.target === "missing"
          ? missingPair
          : pairs[batch.target % pairs.length];
        const count = batch.entries.length;
        const entries = new Uint8Array(Math.max(1, count) * 8);
        const v = new DataView(entries.buffer);
        batch.entries.forEach((e, i) => {
          v.setUint32(i * 8, e.flags, true);
          v.setUint32(i * 8 + 4, e.slot, true);
        });
        const k = batch.format === "vtd-s1" && count > 0 ? new Uint8Array(count * 24) : entries;
        kernel.invalidate(kid, batch.format, k, count, kStatus);
        model.invalidate(mid, batch.format, k, count, mStatus);
        batches++;
        assert.deepEqual(mStatus, kStatus, `batch ${b} to ${kid}: kernel ${JSON.stringify(kStatus)}`);
        for (const [k2, m2] of pairs) {
          assert.ok(
            kernelIotlb(iommufd, k2, model.iotlb(m2)),
            `IOTLB of ${k2} differs from the model's ${model.iotlb(m2)}`,
          );
        }
      }
    }),
    { seed, numRuns: 1000 },
  );
  console.log(`differential: 1000 scripts, ${batches} batches, seed ${seed}: kernel and model agree`);
});

class Recording implements Backend {
  constructor(readonly inner: Backend, readonly map: (id: number) => number) {}
  invalidate(targetId: number, format: Format, entries: Uint8Array, count: number, status: InvalidateStatus): void {
    this.inner.invalidate(this.map(targetId), format, entries, count, status);
  }
}

kernelTest("differential: 200 random guest request streams through two relay queues give identical reports", [
  "hwpt-invalidate",
], async () => {
  const fc = await fastCheck();
  using iommufd = openIommufd();
  const { stack, nested } = setup(iommufd);
  using _ = stack;
  const pasids = [1, 2, 5, 6] as const;
  const stream = fc.record({
    maxRanges: fc.integer({ min: 1, max: 4 }),
    /** The initial IOTLB value of the nested HWPT at each PASID. */
    iotlbs: fc.array(fc.integer({ min: 1, max: 0xffff }), { minLength: pasids.length, maxLength: pasids.length }),
    ops: fc.array(
      fc.oneof(
        { weight: 2, arbitrary: fc.constant({ op: "sync" as const }) },
        { weight: 2, arbitrary: fc.constant({ op: "drain" as const }) },
        {
          weight: 6,
          arbitrary: fc.record({
            op: fc.constant("invalidate" as const),
            domain: fc.integer({ min: 1, max: 2 }),
            pasid: fc.constantFrom(...pasids),
            kind: fc.constantFrom("all" as const, "pasid" as const, "range" as const, "pasid-range" as const),
            firstPage: fc.integer({ min: 0, max: 999 }),
            pages: fc.integer({ min: 1, max: 64 }),
          }),
        },
      ),
      { maxLength: 12, size: "max" },
    ),
  });
  const seed = propertySeed(0x9ee);
  fc.assert(
    fc.property(stream, ({ maxRanges, iotlbs, ops }) => {
      const model = new ModelHost();
      using scriptStack = new DisposableStack();
      const toKernel = new Map<number, number>();
      const kq = new RelayQueue(new Recording(new KernelBackend(iommufd), (id) => toKernel.get(id)!), { maxRanges });
      const mq = new RelayQueue(model, { maxRanges });
      const targets: number[] = [];
      pasids.forEach((pasid, i) => {
        const mid = model.createTarget("selftest", iotlbs[i]);
        toKernel.set(mid, scriptStack.use(nested(iotlbs[i])).id);
        targets.push(mid);
        for (const q of [kq, mq]) q.bind(1 + (pasid % 2), pasid, { targetId: mid, format: "selftest" });
      });
      for (const [i, op] of ops.entries()) {
        if (op.op === "sync") {
          for (const q of [kq, mq]) q.submit({ op: "sync" });
        } else if (op.op === "drain") {
          assert.deepEqual(kq.drain(), mq.drain(), `drain reports differ at op ${i}`);
        } else {
          const { pasid, firstPage, pages } = op;
          const scope = op.kind === "all"
            ? { kind: "all" as const }
            : op.kind === "pasid"
            ? { kind: "pasid" as const, pasid }
            : op.kind === "range"
            ? { kind: "range" as const, firstPage, pages }
            : { kind: "pasid-range" as const, pasid, firstPage, pages };
          const request: InvalidateRequest = { op: "invalidate", domain: op.domain, scope };
          for (const q of [kq, mq]) q.submit(request);
        }
      }
      assert.deepEqual(kq.drain(), mq.drain(), "final drain reports differ");
      for (const mid of targets) {
        assert.ok(kernelIotlb(iommufd, toKernel.get(mid)!, model.iotlb(mid)), `IOTLB of target ${mid} differs`);
      }
    }),
    { seed, numRuns: 200 },
  );
  console.log(`differential: 200 request streams, seed ${seed}: kernel and model queues agree`);
});

kernelTest("differential: 500 random vIOMMU batch scripts agree on errno, entry_num and device caches", [
  "viommu",
  "vdevice",
  "selftest-dev-cache",
], async () => {
  const fc = await fastCheck();
  using iommufd = openIommufd();
  using stack = new DisposableStack();
  const ioas = stack.use(iommufd.allocIoas());
  const first = stack.use(MockDevice.create(iommufd, ioas.id));
  const parent = stack.use(
    iommufd.allocHwpt({ devId: first.devId, ptId: ioas.id, flags: HwptAllocFlags.values.IOMMU_HWPT_ALLOC_NEST_PARENT }),
  );
  const viommu = stack.use(
    iommufd.allocViommu({ type: M.IOMMU_VIOMMU_TYPE_SELFTEST, devId: first.devId, hwptId: parent.id }),
  );
  const kernel = new KernelBackend(iommufd);
  const k: InvalidateStatus = { errno: 0, handled: 0 };
  const m: InvalidateStatus = { errno: 0, handled: 0 };
  // A script is a few batches on two fresh virtual devices (caches at their default), so changes stay visible
  // and a shrunk script replays from the same state.
  const script = fc.array(
    fc.array(
      fc.record({
        flags: fc.oneof({ weight: 5, arbitrary: fc.constant(0) }, fc.constant(1), fc.constant(2)),
        /** 0x23: no such virtual device. */
        virtId: fc.oneof({ weight: 4, arbitrary: fc.constantFrom(0x21, 0x22) }, fc.constant(0x23)),
        /** 4: no such cache slot. */
        slot: fc.integer({ min: 0, max: 4 }),
      }),
      { maxLength: 3 },
    ),
    { minLength: 1, maxLength: 4 },
  );
  const seed = propertySeed(0x71);
  fc.assert(
    fc.property(script, (batches) => {
      using roundStack = new DisposableStack();
      const devs = [0x21, 0x22].map((virtId) => {
        const dev = roundStack.use(MockDevice.create(iommufd, ioas.id));
        roundStack.use(iommufd.allocVdevice(viommu.id, dev.devId, virtId));
        return { virtId, dev };
      });
      const model = new ModelHost();
      const mv = model.createTarget("selftest-viommu");
      for (const d of devs) model.addVdevice(mv, d.virtId);
      for (const [b, batch] of batches.entries()) {
        const count = batch.length;
        const entries = new Uint8Array(Math.max(1, count) * 12);
        const v = new DataView(entries.buffer);
        batch.forEach((e, i) => {
          v.setUint32(i * 12, e.flags, true);
          v.setUint32(i * 12 + 4, e.virtId, true);
          v.setUint32(i * 12 + 8, e.slot, true);
        });
        kernel.invalidate(viommu.id, "selftest-viommu", entries, count, k);
        model.invalidate(mv, "selftest-viommu", entries, count, m);
        assert.deepEqual(m, k, `batch ${b}`);
        for (const d of devs) {
          model.deviceCache(mv, d.virtId).forEach((value, slot) =>
            assert.ok(d.dev.cacheHolds(slot, value), `batch ${b}: device ${d.virtId} slot ${slot} should hold ${value}`)
          );
        }
      }
    }),
    { seed, numRuns: 500 },
  );
  console.log(`differential: 500 vIOMMU scripts, seed ${seed}: kernel and model agree`);
});
