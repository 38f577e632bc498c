// The mini-VMM's doorbell round trip, Deno vs the same loop in C (issue 8). Both run the same real-mode guest and
// the same script (examples/mini-vmm: strict-mode (IOTLB, wait) doorbells, then a burst, a rebind, a page request and
// the teardown) under KVM, with one vCPU thread handing each exit to the VMM thread:
//
// - Deno: examples/mini-vmm itself — a Worker's KVM_RUN loop, a SharedArrayBuffer mailbox, the VT-d front end, one
//   plugin per device and the relay to the in-process host, every invalidated page checked;
// - C: bench/minivmm.c — a pthread KVM_RUN loop, a futex mailbox and a register model that only walks the
//   descriptors and writes wait status;
// and the one-thread shape of each: the C loop serving exits in place, and the mini-VMM with its vCPU inline.
//
// Time per doorbell is the span from the first doorbell to the last over their count: guest time included (real-mode
// code copying descriptors is emulated on some KVM hosts), so the ratio is the whole round trip's. Rounds are
// interleaved. Without /dev/kvm the comparison is skipped, said so; the in-process cost of one doorbell in TypeScript
// (decode, relay, null backend) is benchmarked either way.
import { ensureBuilt } from "../ffi/build.ts";
import { NativeShim } from "../ffi/native.ts";
import { RelayHost } from "../lib/plugin/plugin.ts";
import { RelayQueue } from "../lib/relay/queue.ts";
import { nullBackend, vtdDoorbellStep } from "./probes/paths.ts";
import { guestCode } from "../examples/mini-vmm/layout.ts";
import { buildWorkload } from "../examples/mini-vmm/script.ts";
import { runMiniVmm } from "../examples/mini-vmm/vmm.ts";

const DOORBELLS = 8000, ROUNDS = 5;
const shim = await NativeShim.load();
const kvmFd = shim.open("/dev/kvm");

interface Sample {
  readonly nsPerDoorbell: number;
  readonly exits: number;
  readonly doorbells: number;
}

async function cLoop(exe: string, code: string, script: string, shape: "threads" | "single"): Promise<Sample> {
  const out = await new Deno.Command(exe, { args: [code, script, shape], stdout: "piped", stderr: "piped" }).output();
  if (!out.success) throw new Error(`minivmm ${shape}: ${new TextDecoder().decode(out.stderr)}`);
  const r = JSON.parse(new TextDecoder().decode(out.stdout));
  return { nsPerDoorbell: r.doorbellSpanNs / (r.doorbells - 1), exits: r.exits, doorbells: r.doorbells };
}

async function denoLoop(vcpuThread: "worker" | "inline"): Promise<Sample> {
  using host = RelayHost.inProcess();
  let first = 0, last = 0, count = 0;
  const report = await runMiniVmm({
    shim,
    host,
    doorbells: DOORBELLS,
    seed: 1,
    kvm: "require",
    vcpuThread,
    progress: () => {
      last = performance.now();
      if (count++ === 0) first = last;
    },
  });
  if (report.end !== "halted" || report.underInvalidated !== 0) throw new Error(`mini-VMM: ${report.end}`);
  return { nsPerDoorbell: ((last - first) * 1e6) / (count - 1), exits: report.exits, doorbells: count };
}

const median = (xs: number[]) => xs.toSorted((a, b) => a - b)[Math.floor(xs.length / 2)];
const min = (xs: number[]) => Math.min(...xs);

if (kvmFd < 0) {
  console.log(`doorbell round trip: skipped, /dev/kvm does not open here (errno ${-kvmFd})`);
} else {
  shim.close(kvmFd);
  const exe = await ensureBuilt({
    source: new URL("./minivmm.c", import.meta.url),
    flags: ["-O2", "-pthread", "-Wall", "-Wextra", "-Werror"],
    prefix: "bench",
    file: "minivmm",
  });
  const dir = await Deno.makeTempDir({ prefix: "iommu-relay-doorbell-" });
  const code = `${dir}/guest.bin`, script = `${dir}/script.bin`;
  await Deno.writeFile(code, guestCode());
  await Deno.writeFile(script, buildWorkload({ doorbells: DOORBELLS, seed: 1 }).bytes);
  const samples: Record<string, Sample[]> = { deno: [], threads: [], single: [], inline: [] };
  await denoLoop("worker"); // warm-up: JIT and the Worker's module graph
  await denoLoop("inline");
  for (let r = 0; r < ROUNDS; r++) {
    samples.threads.push(await cLoop(exe, code, script, "threads"));
    samples.deno.push(await denoLoop("worker"));
    samples.single.push(await cLoop(exe, code, script, "single"));
    samples.inline.push(await denoLoop("inline"));
  }
  await Deno.remove(dir, { recursive: true });
  const same = [...samples.deno, ...samples.inline].every((s) =>
    s.exits === samples.threads[0].exits && s.doorbells === samples.threads[0].doorbells
  );
  if (!same) throw new Error("the Deno and C runs did not make the same exits: not the same guest run");
  const us = (k: string, f: (xs: number[]) => number) => f(samples[k].map((s) => s.nsPerDoorbell)) / 1000;
  const d = samples.deno[0];
  console.log(
    `doorbell round trip, ${d.doorbells} doorbells, ${
      (d.exits / d.doorbells).toFixed(2)
    } exits each, ${ROUNDS} rounds:`,
  );
  console.log("| VMM | µs / doorbell (best) | median | ratio to C, same shape (best / median) |");
  console.log("|---|---:|---:|---:|");
  for (
    const [k, label, c] of [
      ["threads", "C: vCPU thread + VMM thread (futex mailbox)", "threads"],
      ["deno", "Deno mini-VMM: Worker + VMM thread, relay to the in-process host", "threads"],
      ["single", "C: one thread (exits served in place)", "single"],
      ["inline", "Deno mini-VMM, vCPU inline: exits served in place, relay to the in-process host", "single"],
    ] as const
  ) {
    const ratio = `${(us(k, min) / us(c, min)).toFixed(2)} / ${(us(k, median) / us(c, median)).toFixed(2)}`;
    console.log(`| ${label} | ${us(k, min).toFixed(1)} | ${us(k, median).toFixed(1)} | ${ratio} |`);
  }
}

// One strict-mode doorbell handled in TypeScript, no vCPU: decode two descriptors from guest RAM, relay the
// invalidation, complete the wait (the work the Deno VMM thread adds per doorbell over the C register model).
const relay = new RelayQueue(nullBackend);
relay.bind(1, 5, { targetId: 7, format: "vtd-s1" });
Deno.bench({
  name: "VT-d doorbell in TS: decode (IOTLB, wait) + relay + null backend + status write",
  fn: vtdDoorbellStep(relay),
});
