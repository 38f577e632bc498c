// The second process of tests/frontends/snapshot_test.ts: a fresh in-process host restores the snapshot, the guest
// rings the rest of its queue, and what reached the new host is printed as JSON for the test to check.
// Usage: snapshot_restore_process.ts <snapshot file> <guest RAM file> <clock ms at restore>
import type { GuestIommu } from "../../lib/device/assigned.ts";
import { ModelDeviceHost } from "../../lib/host/model_device_host.ts";
import { ModelHost } from "../../lib/host/model.ts";
import { restoreRelay } from "../../lib/frontends/snapshot.ts";
import type { RelaySink } from "../../lib/frontends/window.ts";
import { DESCRIPTORS, frontends, STATUS, target } from "./snapshot_workload.ts";

const [snapshotPath, ramPath, clock] = Deno.args;
const ram = await Deno.readFile(ramPath);
const host = new ModelDeviceHost(new ModelHost());
const answers: [number, number][] = [];
const now = Number(clock);
// The front ends are made before the relay they feed exists: their sink forwards to the restored queue.
let restored: GuestIommu | undefined;
const sink: RelaySink = { submit: (r) => restored!.queue.submit(r), drain: () => restored!.queue.drain() };
const fe = frontends(ram, sink, (cookie, code) => answers.push([cookie, code]), () => now);
const asked: string[] = [];
try {
  restored = restoreRelay(await Deno.readFile(snapshotPath), host, (d) => {
    asked.push(d.key);
    return host.port({ label: d.key });
  }, fe);
} catch (e) {
  console.log(JSON.stringify({ error: { name: (e as Error).name, message: (e as Error).message } }));
  Deno.exit(0);
}
const doorbell = fe.vtdQueue.writeIqt(DESCRIPTORS * 16);
const covered: Record<number, boolean> = {};
for (let i = 0; i < DESCRIPTORS; i++) {
  const t = target(i);
  if (!t) continue;
  const dev = restored.devices.find((d) => d.key === t.key)!;
  covered[i] = host.model.covered(dev.boundTo(t.pasid)!, t.page);
}
const view = new DataView(ram.buffer);
console.log(JSON.stringify({
  asked,
  doorbell: { processed: doorbell.processed, waitsCompleted: doorbell.waitsCompleted, error: doorbell.error },
  iqh: fe.vtdQueue.iqh,
  covered,
  statuses: Array.from({ length: DESCRIPTORS / 10 }, (_, k) => view.getUint32(STATUS + 4 * k, true)),
  answers,
  prq: fe.vtdPrq.telemetry,
  faults: fe.vtdFaults.saveState(),
  devices: restored.devices.map((d) => d.state()),
}));
restored[Symbol.dispose]();
