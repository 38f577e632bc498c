// A vCPU Worker for tests/relay/shared_sink_test.ts and bench/vcpu_workers_bench.ts: it serves its own doorbell
// exits — its own VT-d invalidation queue model over the shared guest RAM, with a SharedRelay as the queue's sink —
// and rings `doorbells` doorbells of (1–3 PASID-IOTLBs of pages in its own region, a wait). The backend records what
// it invalidated in shared memory (one Int32 per page), so every wait's status write checks, at that moment, that
// the pages of its doorbell were invalidated on the host — by whichever Worker sent them.
import type { Backend, Format, InvalidateStatus } from "../../lib/host/backend.ts";
import { RelayQueue } from "../../lib/relay/queue.ts";
import { SharedRelay, type SharedRelayLayout } from "../../lib/relay/shared.ts";
import { VtdInvalidationQueue } from "../../lib/frontends/vtd/queue.ts";
import { guestMemoryOver } from "../../lib/memory/guest_memory.ts";
import { NativeShim } from "../../ffi/native.ts";
import { CheapIoctlBackend } from "./paths.ts";

/** What the Worker is told. */
export interface VcpuStart {
  readonly sab: SharedArrayBuffer;
  readonly layout: SharedRelayLayout;
  /** Guest RAM, shared by every vCPU. */
  readonly ram: SharedArrayBuffer;
  /** Int32 per page: 1 once invalidated; [0] ioctls, [1] entries (pages start at COVERAGE_PAGES_AT). */
  readonly coverage: SharedArrayBuffer;
  readonly vcpu: number;
  readonly doorbells: number;
  /** Invalidations per doorbell: fixed, or 0 for 1–3 (the test's mix). */
  readonly invalidations: number;
  /** Host time per ioctl, µs (a busy wait: the ioctl in flight). */
  readonly ioctlUs: number;
  /** Also make the pipeline bench's real cheap ioctl per batch (needs /dev/kvm). */
  readonly cheapIoctl?: boolean;
  /** Start together: every Worker waits on [2] of coverage until it is 1. */
  readonly barrier: boolean;
}

/** What the Worker answers. */
export interface VcpuReport {
  readonly vcpu: number;
  readonly waits: number;
  readonly statusErrors: number;
  /** Pages a wait found not invalidated when its status was written. */
  readonly uncovered: number;
  readonly iqErrors: number;
  readonly invalidations: number;
  /** This Worker's queue's own ioctls (for every Worker's requests it combined). */
  readonly ioctls: number;
  readonly elapsedMs: number;
  /** Per-doorbell latency, ns: p50, p99, p99.9. */
  readonly p50: number;
  readonly p99: number;
  readonly p999: number;
}

export const COVERAGE_PAGES_AT = 16;
/** Pages of guest address space each vCPU invalidates in (its region). */
export const REGION_PAGES = 4096;

class SharedCoverageBackend implements Backend {
  constructor(readonly cells: Int32Array, readonly ioctlUs: number, readonly cheap?: CheapIoctlBackend) {}
  invalidate(_t: number, _f: Format, entries: Uint8Array, count: number, status: InvalidateStatus): void {
    const v = new DataView(entries.buffer, entries.byteOffset);
    const pages = this.cells.length - COVERAGE_PAGES_AT;
    for (let i = 0; i < count; i++) {
      const first = v.getUint32(i * 24, true) / 4096 + v.getUint32(i * 24 + 4, true) * 0x10_0000;
      const lo = v.getUint32(i * 24 + 8, true), hi = v.getUint32(i * 24 + 12, true);
      const all = lo === 0xffff_ffff && hi === 0xffff_ffff;
      const end = all ? pages : Math.min(pages, first + lo);
      for (let p = all ? 0 : first; p < end; p++) Atomics.store(this.cells, COVERAGE_PAGES_AT + p, 1);
    }
    Atomics.add(this.cells, 0, 1);
    Atomics.add(this.cells, 1, count);
    if (this.cheap) this.cheap.invalidate(_t, _f, entries, count, status);
    if (this.ioctlUs > 0) {
      const until = performance.now() + this.ioctlUs / 1000;
      while (performance.now() < until) { /* the ioctl in flight */ }
    }
    status.errno = 0;
    status.handled = count;
  }
}

const QUEUE_ENTRIES = 256;

// The guest's descriptor writes, without BigInt (lib/frontends/vtd/encode.ts writes the same bits): the guest side
// of the loop stays cheap next to the doorbell, so the vCPUs ring as fast as the relay lets them.
/** PASID-IOTLB, page-selective, DID 1, PASID 5, one page, IH=1. */
function putPasidIotlb(v: DataView, at: number, page: number): void {
  v.setUint32(at, (1 << 16) | (3 << 4) | 6, true);
  v.setUint32(at + 4, 5, true);
  v.setUint32(at + 8, (((page % 0x10_0000) << 12) | (1 << 6)) >>> 0, true);
  v.setUint32(at + 12, Math.floor(page / 0x10_0000), true);
}

/** Invalidation wait with status write of `data` at `address`. */
function putWait(v: DataView, at: number, address: number, data: number): void {
  v.setUint32(at, (1 << 5) | 5, true);
  v.setUint32(at + 4, data >>> 0, true);
  v.setUint32(at + 8, address, true);
  v.setUint32(at + 12, 0, true);
}

/** Run one vCPU (in a Worker, or inline for a test). */
export async function runVcpu(m: VcpuStart): Promise<VcpuReport> {
  const cells = new Int32Array(m.coverage);
  const cheap = m.cheapIoctl ? new CheapIoctlBackend(await NativeShim.load()) : undefined;
  const relay = new SharedRelay(m.sab, m.layout, new RelayQueue(new SharedCoverageBackend(cells, m.ioctlUs, cheap)));
  const ram = new Uint8Array(m.ram);
  // This vCPU's queue (its own IQ at its own base) and status dword.
  const qBase = 0x10000 + m.vcpu * 0x1000, statusAt = 0x8000 + m.vcpu * 4;
  const region = m.vcpu * REGION_PAGES;
  let pending: number[] = [];
  let uncovered = 0, waits = 0, statusErrors = 0, expected = 0;
  const inner = guestMemoryOver(ram);
  const memory = {
    read: inner.read,
    readInto: inner.readInto,
    write(gpa: number, bytes: Uint8Array) {
      if (gpa === statusAt && bytes.length === 4) {
        // The wait's status write: everything its doorbell invalidated must be on the host now.
        waits++;
        for (const p of pending) if (Atomics.load(cells, COVERAGE_PAGES_AT + p) !== 1) uncovered++;
        if (new DataView(bytes.buffer, bytes.byteOffset, 4).getUint32(0, true) !== expected) statusErrors++;
      }
      inner.write(gpa, bytes);
    },
  };
  const qi = new VtdInvalidationQueue(memory, relay);
  const dv = new DataView(m.ram);
  qi.writeIqa(qBase); // 256 descriptors of 128 bits
  let tail = 0, seed = m.vcpu * 7919 + 1, iqErrors = 0, invalidations = 0;
  const rnd = (n: number) => {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    return (seed >>> 8) % n;
  };
  const lat = new Float64Array(m.doorbells);
  if (m.barrier) {
    Atomics.add(cells, 3, 1);
    while (Atomics.load(cells, 2) !== 1) Atomics.wait(cells, 2, 0, 10);
  }
  const start = performance.now();
  for (let i = 0; i < m.doorbells; i++) {
    const count = m.invalidations > 0 ? m.invalidations : 1 + rnd(3);
    pending = [];
    for (let k = 0; k < count; k++) {
      const page = region + rnd(REGION_PAGES);
      Atomics.store(cells, COVERAGE_PAGES_AT + page, 0); // the guest changed the mapping: not yet invalidated
      pending.push(page);
      putPasidIotlb(dv, qBase + tail * 16, page);
      tail = (tail + 1) % QUEUE_ENTRIES;
    }
    expected = (m.vcpu << 24) | i;
    putWait(dv, qBase + tail * 16, statusAt, expected);
    tail = (tail + 1) % QUEUE_ENTRIES;
    invalidations += count;
    const t = performance.now();
    const r = qi.writeIqt(tail * 16);
    lat[i] = performance.now() - t;
    if (r.error) iqErrors++;
  }
  const elapsedMs = performance.now() - start;
  lat.sort();
  const at = (p: number) => lat[Math.min(lat.length - 1, Math.floor(lat.length * p))] * 1e6;
  return {
    vcpu: m.vcpu,
    waits,
    statusErrors,
    uncovered,
    iqErrors,
    invalidations,
    ioctls: relay.queue.telemetry.ioctls,
    elapsedMs,
    p50: at(0.5),
    p99: at(0.99),
    p999: at(0.999),
  };
}

// Typed as a worker scope (deno check sees the window scope by default).
const scope = self as unknown as {
  onmessage: ((e: MessageEvent<VcpuStart>) => void) | null;
  postMessage(message: unknown): void;
};
if (typeof (self as { WorkerGlobalScope?: unknown }).WorkerGlobalScope !== "undefined") {
  scope.onmessage = async (e: MessageEvent<VcpuStart>) => scope.postMessage(await runVcpu(e.data));
}
