// virtio-iommu batching (issue 21 item 3): host calls when a kick's UNMAPs are handled one request at a time (one IOAS
// unmap per mapping) and as one batch (handleVirtioIommuKick: merged IOAS unmaps), over Linux's recordings and the
// synthetic shapes, printed as a table; and the time per request of each on the in-process IOAS (deno bench).
// Statuses and host mappings of the two are equal request by request (tests/frontends/virtio/batch_test.ts).
import { parseVirtioRecording, type VirtioRecordedRequest, VirtioReplayRig } from "../lib/testing/virtio_replay.ts";
import { readRecordingText } from "../lib/testing/recordings.ts";
import { prng } from "../lib/testing/workloads.ts";

const FIXTURES = new URL("../tests/fixtures/traces/", import.meta.url);
const PAGE = 4096n;

/** A request stream built from (kick, type, first page, pages) tuples, domain 1 attached first. */
function shape(rows: readonly (readonly [number, "MAP" | "UNMAP", number, number])[]): VirtioRecordedRequest[] {
  const out: VirtioRecordedRequest[] = [
    { seq: 0, phase: 0, kick: 0, type: "ATTACH", domain: 1, endpoint: 8, extra: {} },
  ];
  for (const [kick, type, page, pages] of rows) {
    out.push({
      seq: out.length,
      phase: 1,
      kick,
      type,
      domain: 1,
      virtStart: BigInt(page) * PAGE,
      virtEnd: BigInt(page + pages) * PAGE - 1n,
      ...(type === "MAP" ? { physStart: BigInt(page % 0x10000) * PAGE, flags: 3 } : {}),
      extra: {},
    });
  }
  return out;
}

/**
 * Linux's lazy flush queue: each DMA buffer is MAPped in a kick of its own (IOVAs allocated top down), its UNMAP
 * queued without a kick; every `perKick` buffers the queued UNMAPs reach the device with the next MAP. `scatter`:
 * one buffer in two stays mapped (a long-lived one), so no two UNMAPs of a kick touch.
 */
function lazy(buffers: number, perKick: number, pages: number, scatter = false): VirtioRecordedRequest[] {
  const rows: [number, "MAP" | "UNMAP", number, number][] = [];
  const rnd = prng(21);
  let kick = 1, next = 0xfffff, queued: number[] = [];
  for (let b = 0; b < buffers; b++) {
    if (scatter) next -= pages; // a neighbour that stays mapped (never MAPped here: nothing is between)
    next -= pages;
    const page = next;
    if (scatter) rows.push([kick++, "MAP", page + pages, pages]);
    rows.push([kick, "MAP", page, pages]);
    kick++;
    queued.push(page);
    if (queued.length === perKick) {
      // The flush queue frees in completion order, not IOVA order.
      for (let i = queued.length - 1; i > 0; i--) {
        const j = rnd(i + 1);
        [queued[i], queued[j]] = [queued[j], queued[i]];
      }
      for (const p of queued) rows.push([kick, "UNMAP", p, pages]);
      queued = [];
    }
  }
  return shape(rows);
}

/** Strict mode: one MAP per kick, one UNMAP per kick. */
function strict(buffers: number, pages: number): VirtioRecordedRequest[] {
  const rows: [number, "MAP" | "UNMAP", number, number][] = [];
  let kick = 1;
  for (let b = 0; b < buffers; b++) {
    const page = 0xfffff - (b % 64) * pages;
    rows.push([kick++, "MAP", page, pages], [kick++, "UNMAP", page, pages]);
  }
  return shape(rows);
}

function replay(requests: readonly VirtioRecordedRequest[], batchKicks: boolean) {
  return new VirtioReplayRig(2 ** 40, { batchKicks }).replay(requests);
}

const cases: [string, VirtioRecordedRequest[]][] = [];
for (const name of ["virtio-x86-lazy", "virtio-strict-thp"]) {
  cases.push([`recording ${name}`, parseVirtioRecording(await readRecordingText(new URL(`${name}.txt.gz`, FIXTURES)))]);
}
cases.push(
  ["lazy, 4 KiB, 4 UNMAPs + MAP per kick", lazy(20_000, 4, 1)],
  ["lazy, 4 KiB, 35 UNMAPs + MAP per kick", lazy(20_020, 35, 1)],
  ["lazy, 128 KiB, 4 UNMAPs + MAP per kick", lazy(5_000, 4, 32)],
  ["lazy, 4 KiB, a live mapping between UNMAPs", lazy(20_000, 4, 1, true)],
  ["strict, 4 KiB, one request per kick", strict(20_000, 1)],
);

console.log("virtio-iommu: IOAS calls per kick's UNMAPs, one request at a time vs one batch per kick");
console.log(
  "| stream | requests | kicks | UNMAPs | IOAS unmaps, alone | IOAS unmaps, batched | per UNMAP | IOAS maps |",
);
console.log("|---|---:|---:|---:|---:|---:|---:|---:|");
for (const [name, requests] of cases) {
  const alone = replay(requests, false), batched = replay(requests, true);
  const unmaps = requests.filter((r) => r.type === "UNMAP").length;
  if (JSON.stringify(alone.statuses) !== JSON.stringify(batched.statuses) || alone.ioasMaps !== batched.ioasMaps) {
    throw new Error(`${name}: batching changed the statuses or the maps`);
  }
  console.log(
    `| ${name} | ${requests.length} | ${batched.kicks} | ${unmaps} | ${alone.ioasUnmaps} | ${batched.ioasUnmaps} | ` +
      `${(batched.ioasUnmaps / unmaps).toFixed(2)} | ${batched.ioasMaps} |`,
  );
}

const lazyRecording = cases[0][1].slice(0, 8000);
for (const batchKicks of [false, true]) {
  Deno.bench({
    name: batchKicks ? "one batch per kick" : "one request at a time",
    group: "virtio-iommu: 8,000 requests of virtio-x86-lazy, in-process IOAS",
    baseline: !batchKicks,
    n: 20,
    fn() {
      replay(lazyRecording, batchKicks);
    },
  });
}
