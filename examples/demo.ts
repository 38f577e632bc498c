/**
 * iommu-relay demo. A guest driver's invalidation traffic — written as VT-d queued-invalidation descriptors into
 * guest memory, one doorbell per (invalidate, wait) like a strict-mode Linux guest, plus a burst of an SVA munmap and
 * a PASID rebind — goes through the VT-d front end and iommu-relay's plugins to the host, here the embedded default:
 * the in-process host. Every doorbell is checked for under-invalidation, and a live summary and a final table are
 * printed.
 *
 * The mini-VMM that runs this as a real KVM guest is issue 5's next step; this machine has no /dev/kvm, which the
 * demo says in one line before running the same descriptor script in-process.
 *
 * Run: `npx -y deno@2.9.6 task demo` (options: `--doorbells N`, `--seed N`, `--json`).
 *
 * @module
 */
import { parseArgs } from "node:util";
import { errnoName, NativeShim, runDemoScript, ScriptedGuest } from "../mod.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    doorbells: { type: "string", default: "2000" },
    seed: { type: "string", default: "1" },
    json: { type: "boolean", default: false },
  },
});
const doorbells = Number(values.doorbells), seed = Number(values.seed);
if (!Number.isSafeInteger(doorbells) || doorbells < 1 || !Number.isSafeInteger(seed)) {
  console.error("error: --doorbells takes a positive integer, --seed an integer");
  Deno.exit(2);
}
const say = (line: string) => values.json || console.log(line);

using shim = await NativeShim.load();
const present = (path: string) => {
  const fd = shim.open(path);
  if (fd >= 0) shim.close(fd);
  return fd >= 0 ? "present" : `absent (${errnoName(fd)})`;
};
const kvm = present("/dev/kvm");
say(`host: /dev/kvm ${kvm}, /dev/iommu ${present("/dev/iommu")}, shim ${shim.path}`);
if (!kvm.startsWith("present")) {
  say("no /dev/kvm here: running the guest's descriptor script in-process, on the in-process host");
}

using guest = ScriptedGuest.inProcess();
const vtdTable = (n: number) => ({
  format: "vtd-s1" as const,
  tableAddress: 0x10_0000 * (n + 1),
  addressWidth: 48 as const,
});
const step = Math.max(1, Math.floor(doorbells / 4));
const run = runDemoScript(guest, {
  doorbells,
  seed,
  table: vtdTable,
  progress: (done) => {
    if (done % step !== 0) return;
    const q = guest.host.queue().telemetry;
    say(
      `  ${
        String(done).padStart(6)
      } doorbells: ${q.ioctls} host ioctls, ${q.entriesOut} entries, ${q.failures} failures`,
    );
  },
});
const q = guest.host.queue().telemetry;
const sorted = run.latenciesUs.toSorted((a, b) => a - b);
const pct = (p: number) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
const summary = {
  descriptors: run.descriptors,
  doorbells: run.doorbells,
  guestInvalidations: q.invalidationsIn,
  hostIoctls: q.ioctls,
  hostEntries: q.entriesOut,
  coalescing: Number((q.invalidationsIn / Math.max(1, q.entriesOut)).toFixed(2)),
  svaBurst: run.burst,
  doorbellLatencyUs: { p50: Number(pct(50).toFixed(1)), p99: Number(pct(99).toFixed(1)) },
  failures: run.failures,
  underInvalidated: run.underInvalidated,
};
if (values.json) console.log(JSON.stringify(summary));
else {
  console.log("\n| measure | value |\n|---|---|");
  console.log(`| guest descriptors (VT-d, 256-bit) | ${summary.descriptors} |`);
  console.log(`| doorbells | ${summary.doorbells} |`);
  console.log(`| host ioctls | ${summary.hostIoctls} |`);
  console.log(`| host entries | ${summary.hostEntries} (coalescing ${summary.coalescing}x) |`);
  console.log(`| SVA munmap burst | ${summary.svaBurst.descriptors} descriptors -> ${summary.svaBurst.ioctls} ioctl |`);
  console.log(
    `| doorbell latency (in-process) | p50 ${summary.doorbellLatencyUs.p50} µs, p99 ${summary.doorbellLatencyUs.p99} µs |`,
  );
  console.log(`| failures / under-invalidated pages | ${summary.failures} / ${summary.underInvalidated} |`);
}
if (summary.underInvalidated || summary.failures) Deno.exit(1);
