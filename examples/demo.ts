/**
 * iommu-relay demo: an embedded default guest — one vIOMMU, two devices sharing guest domain 1 and a PASID-bound
 * SVA context in domain 2 — replays recorded-shape workloads through the relay queue onto the in-process host,
 * checks that nothing was under-invalidated, and shows what went to the host. It also probes which host
 * interfaces this machine has, and prints one request in the 2017 wire format and as a VT-d entry.
 *
 * Run: `npx -y deno@2.9.6 task demo` (options: `--doorbells N`, `--vcpus N`, `--seed N`).
 * Needs `--allow-ffi` (the shim), `--allow-read`, `--allow-env`; it changes nothing on the host.
 *
 * @module
 */
import { parseArgs } from "node:util";
import {
  encodeTlbInvalidate2017,
  EntryWriter,
  errnoName,
  type InvalidateRequest,
  lazyWorkload,
  ModelHost,
  NativeShim,
  PAGE_SPACE,
  PendingSet,
  RelayQueue,
  replay,
  strictWorkload,
} from "../mod.ts";
import { compileVtd } from "../lib/compile/vtd.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    doorbells: { type: "string", default: "2000" },
    vcpus: { type: "string", default: "4" },
    seed: { type: "string", default: "1" },
  },
});
const doorbells = Number(values.doorbells), vcpus = Number(values.vcpus), seed = Number(values.seed);
if (![doorbells, vcpus, seed].every(Number.isSafeInteger) || doorbells < 1 || vcpus < 1) {
  console.error("error: --doorbells, --vcpus and --seed take positive integers");
  Deno.exit(2);
}

using shim = await NativeShim.load();
console.log(`shim: ${shim.path}`);
for (const path of ["/dev/iommu", "/dev/vfio/devices/vfio0", "/dev/kvm"]) {
  const fd = shim.open(path);
  console.log(`  ${path.padEnd(24)} ${fd >= 0 ? "present" : `absent (${errnoName(fd)})`}`);
  if (fd >= 0) shim.close(fd);
}

// The embedded default guest, on the in-process host.
const host = new ModelHost();
const sharedHwpt = host.createTarget("vtd-s1"); // both devices' RIDs: one nested HWPT
const svaHwpt = host.createTarget("vtd-s1"); // PASID 5 of domain 2
const queue = new RelayQueue(host);
queue.bind(1, "rid", { targetId: sharedHwpt, format: "vtd-s1" });
queue.bind(1, "rid", { targetId: sharedHwpt, format: "vtd-s1" });
queue.bind(2, 5, { targetId: svaHwpt, format: "vtd-s1" });
const probe = (r: InvalidateRequest) => {
  const s = r.scope;
  const target = r.domain === 1 ? sharedHwpt : svaHwpt;
  const pages = s.kind === "range" || s.kind === "pasid-range"
    ? [s.firstPage, s.firstPage + s.pages - 1]
    : [0, PAGE_SPACE - 1];
  return [{ targetId: target, pages }];
};

console.log(`\nguest: ${vcpus} vCPU(s) on emulated VT-d, devices A and B in domain 1, SVA on PASID 5 in domain 2`);
const runs = [
  strictWorkload({ doorbells, vcpus, seed, gapNs: 5000 }),
  lazyWorkload({ flushes: Math.max(1, Math.floor(doorbells / 70)), seed }),
];
for (const w of runs) {
  const r = replay(w, queue, { ioctlNs: 3000, host, probe });
  console.log(
    `  ${w.name.padEnd(20)} ${String(r.descriptors).padStart(6)} guest descriptors -> ${
      String(r.ioctls).padStart(5)
    } ioctls, ` +
      `${String(r.entries).padStart(5)} entries (one ioctl per invalidation would be ${r.descriptors / 2}); ` +
      `${r.checkedDrains} drains checked, no under-invalidation`,
  );
}
queue.submit({
  op: "invalidate",
  domain: 2,
  scope: { kind: "pasid-range", pasid: 5, firstPage: 0x7f000, pages: 512 },
  leaf: true,
});
const wait = queue.submit({ op: "sync" });
const report = queue.drain();
console.log(
  `  SVA munmap of 2 MiB at 0x7f000000 on PASID 5: wait ${wait} ${
    report.waits[0].ok ? "completed" : "failed"
  }, ${report.ioctls} ioctl`,
);
const t = queue.telemetry;
console.log(
  `telemetry: ${t.invalidationsIn} invalidations + ${t.waitsIn} waits in, ${t.ioctls} ioctls, ${t.entriesOut} entries out ` +
    `(coalescing ${(t.invalidationsIn / Math.max(1, t.entriesOut)).toFixed(2)}x), ${t.failures} failures`,
);

// One request, two host formats.
const request: InvalidateRequest = {
  op: "invalidate",
  domain: 2,
  scope: { kind: "pasid-range", pasid: 5, firstPage: 0x7f000, pages: 512 },
  leaf: true,
};
const hex = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join(" ");
console.log(`\n2017 VFIO_IOMMU_TLB_INVALIDATE: ${hex(encodeTlbInvalidate2017(request))}`);
const pending = new PendingSet({ maxRanges: 64, maxPages: 1 << 18 });
pending.addRange(0x7f000, 512, true, 1);
const vtd = new EntryWriter(24);
compileVtd(pending, vtd);
console.log(`VT-d stage-1 entry:            ${hex(vtd.bytes.subarray(0, 24))}`);
console.log("\nThe kernel suite (deno task test:kernel) runs this pipeline against a real kernel's iommufd.");
