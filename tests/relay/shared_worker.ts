// A vCPU Worker for tests/relay/shared_test.ts: relays doorbells through the shared relay onto a backend that
// records coverage in shared memory and takes a while per ioctl (an ioctl in flight).
import type { Backend, Format, InvalidateStatus } from "../../lib/host/backend.ts";
import { RelayQueue } from "../../lib/relay/queue.ts";
import { SharedDoorbell, SharedRelay, type SharedRelayLayout } from "../../lib/relay/shared.ts";

interface Start {
  sab: SharedArrayBuffer;
  layout: SharedRelayLayout;
  coverage: SharedArrayBuffer;
  counters: SharedArrayBuffer;
  vcpu: number;
  doorbells: number;
  region: number;
}

class SharedCoverage implements Backend {
  constructor(readonly bits: Uint8Array, readonly counters: Int32Array) {}
  invalidate(_t: number, _f: Format, entries: Uint8Array, count: number, status: InvalidateStatus): void {
    const v = new DataView(entries.buffer, entries.byteOffset);
    for (let i = 0; i < count; i++) {
      const first = v.getUint32(i * 24, true) / 4096 + v.getUint32(i * 24 + 4, true) * 0x10_0000;
      const lo = v.getUint32(i * 24 + 8, true), hi = v.getUint32(i * 24 + 12, true);
      const all = lo === 0xffff_ffff && hi === 0xffff_ffff;
      const end = all ? this.bits.length : Math.min(this.bits.length, first + lo);
      for (let p = all ? 0 : first; p < end; p++) Atomics.store(this.bits, p, 1);
    }
    Atomics.add(this.counters, 0, 1);
    Atomics.add(this.counters, 1, count);
    const until = performance.now() + 0.05; // 50 µs in flight
    while (performance.now() < until) { /* the ioctl */ }
    status.errno = 0;
    status.handled = count;
  }
}

// Typed as a worker scope (deno check sees the window scope by default).
const scope = self as unknown as {
  onmessage: ((e: MessageEvent<Start>) => void) | null;
  postMessage(message: unknown): void;
};
scope.onmessage = (e: MessageEvent<Start>) => {
  const m = e.data;
  const relay = new SharedRelay(
    m.sab,
    m.layout,
    new RelayQueue(new SharedCoverage(new Uint8Array(m.coverage), new Int32Array(m.counters))),
  );
  let combined = 0, failures = 0;
  // The allocation-free form, as a vCPU loop would use it: one request array and one outcome, refilled.
  const inv = {
    op: "invalidate" as const,
    domain: 1,
    scope: { kind: "range" as const, firstPage: 0, pages: 2 },
    noPasid: true,
  };
  const requests = [inv, { op: "sync" as const }];
  const out = new SharedDoorbell();
  for (let i = 0; i < m.doorbells; i++) {
    inv.scope.firstPage = m.region + (i % 64) * 4;
    relay.doorbellInto(requests, out);
    if (out.combined) combined++;
    for (let k = 0; k < out.count; k++) failures += out.errno(k) !== 0 ? 1 : 0;
  }
  scope.postMessage({ vcpu: m.vcpu, combined, failures });
};
