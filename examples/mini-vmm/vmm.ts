/**
 * The mini-VMM: one real-mode vCPU under KVM (one Worker) — or, without /dev/kvm, the same guest loop in-process —
 * whose guest programs an emulated VT-d invalidation queue; the VMM thread feeds each doorbell through iommu-relay's
 * VT-d front end and one plugin per assigned device to the host (in-process, or the kernel's iommufd).
 *
 * @example
 * ```ts
 * import { NativeShim } from "../../ffi/native.ts";
 * import { RelayHost } from "../../lib/plugin/plugin.ts";
 * import { runMiniVmm } from "./vmm.ts";
 * using shim = await NativeShim.load();
 * using host = RelayHost.inProcess();
 * const report = await runMiniVmm({ shim, host, doorbells: 20, seed: 1, kvm: "off" });
 * console.log(report.end, report.unit.doorbells, report.underInvalidated); // halted 25 0
 * ```
 *
 * @module
 */
import type { NativeShim } from "../../mod.ts";
import { type DeviceSource, type PluginDefinition, type RelayHost, relayPlugin } from "../../lib/plugin/plugin.ts";
import { guestMemoryOver } from "../../lib/memory/guest_memory.ts";
import { Kvm, KvmError, type KvmVcpu } from "../../mod.ts";
import { guestCode, LAYOUT } from "./layout.ts";
import { buildWorkload, FAULT, FUNCTIONS, type Workload } from "./script.ts";
import { mockIopfChain } from "../../lib/kernel/selftest.ts";
import { hostFaultFromRecord, type HostPageFault } from "../../lib/frontends/vtd/prq.ts";
import { PgfaultConstants } from "../../lib/uapi/mod.ts";
import { type FaultSource, type TableFor, type UnitDevice, type UnitStats, VtdUnit } from "./vtd_unit.ts";
import { type Bus, type GuestEnd, runInterpreted } from "./interpreted.ts";
import { KIND, MB, STATE } from "./mailbox.ts";
import { runVcpuLoop } from "./vcpu_loop.ts";

/** How to run. */
export interface MiniVmmOptions {
  readonly shim: NativeShim;
  /** The VM's host; the caller owns it (the plugins made here are disposed before this returns). */
  readonly host: RelayHost;
  readonly doorbells: number;
  readonly seed: number;
  /** "auto": KVM when /dev/kvm opens, else in-process; "off": in-process; "require": KVM or a KvmError. */
  readonly kvm?: "auto" | "off" | "require";
  /**
   * Where KVM exits are served: "worker" (default) — the vCPU runs in a Worker and hands each exit to this thread,
   * whose event loop stays live; "inline" — the vCPU runs on this thread and exits are served in place, as a
   * one-thread C VMM does (the fastest shape; this thread's event loop waits until the guest ends, and the deadline is
   * a timer signal to this thread).
   */
  readonly vcpuThread?: "worker" | "inline";
  readonly kvmPath?: string;
  /** The two assigned devices (default: model devices in-process, PASID-capable selftest mocks on a kernel). */
  readonly devices?: readonly [DeviceSource, DeviceSource];
  /** PASID entry → host table (default VT-d S1). */
  readonly tableFor?: TableFor;
  /** The plugin (default iommu-relay's own; a third party's from `loadPlugin`). */
  readonly plugin?: PluginDefinition;
  /** Give up on the guest after this long (it is kicked out of KVM_RUN). Default 120 s. */
  readonly timeoutMs?: number;
  /** The guest's script (default: `buildWorkload({ doorbells, seed })`); tests pass altered ones. */
  readonly workload?: Workload;
  /** Called after every doorbell. */
  readonly progress?: (doorbell: number, report: () => MiniVmmReport) => void;
}

/** What happened. */
export interface MiniVmmReport {
  /** Who ran the guest code. */
  readonly vcpu: "kvm" | "in-process";
  /** Where KVM exits were served (with `vcpu` "kvm"). */
  readonly vcpuThread?: "worker" | "inline";
  /** Why KVM was not used, when it was not. */
  readonly kvmNote?: string;
  readonly end: GuestEnd;
  /** Where the guest said the queue stopped (IQE), if it did. */
  readonly iqeAt?: number;
  /** vCPU exits (KVM_RUN returns) or, in-process, register accesses. */
  readonly exits: number;
  readonly script: { readonly doorbells: number; readonly descriptors: number; readonly bytes: number };
  readonly unit: UnitStats;
  readonly host: {
    readonly invalidationsIn: number;
    readonly ioctls: number;
    readonly entriesOut: number;
    readonly failures: number;
  };
  /** Guest invalidations per host entry. */
  readonly coalescing: number;
  /** The SVA munmap burst: descriptors in, host ioctls out. */
  readonly burst: { readonly descriptors: number; readonly ioctls: number };
  /** Per-doorbell time spent in the VT-d unit, µs. */
  readonly doorbellUs: { readonly p50: number; readonly p99: number; readonly max: number };
  /**
   * The I/O page fault round trip: where the fault came from (the kernel's fault queue after TRIGGER_IOPF on a
   * selftest host; a stand-in otherwise), whether the guest's answer reached the host, and the time it took.
   */
  readonly faultRoundTrip: {
    readonly source: "kernel" | "stand-in";
    readonly delivered: number;
    readonly answered: number;
    readonly refused: number;
    readonly roundTripUs?: number;
    readonly hostResponses: readonly { cookie: number; code: number }[];
    readonly note?: string;
  };
  /** Pages the in-process host did not see invalidated (checked only there), and how many were checked. */
  readonly underInvalidated: number;
  readonly checked: number;
  readonly seconds: number;
}

/** Run the guest to its end; returns the report. */
export async function runMiniVmm(opts: MiniVmmOptions): Promise<MiniVmmReport> {
  const started = performance.now();
  const workload = opts.workload ?? buildWorkload({ doorbells: opts.doorbells, seed: opts.seed });
  const { shim, host } = opts;
  const ram = shim.sharedAlignedBuffer(LAYOUT.ram);
  ram.set(guestCode(), LAYOUT.code);
  ram.set(workload.bytes, LAYOUT.script);

  using stack = new DisposableStack();
  const definition = opts.plugin ?? relayPlugin;
  const sources = opts.devices ??
    (host.model ? [{ kind: "model" as const }, { kind: "model" as const }] : [
      { kind: "mock" as const, pasid: true },
      { kind: "mock" as const, pasid: true },
    ]);
  const devices = new Map<number, UnitDevice>();
  FUNCTIONS.forEach((fn, i) => {
    const plugin = stack.use(definition.create(host, { domain: fn.did, device: sources[i] }));
    devices.set(fn.did, { plugin, pasidDirectory: fn.pasidDirectory });
  });

  const queue = host.queue();
  const latencies: number[] = [];
  let underInvalidated = 0, checked = 0, ioctlsBefore = 0, burstIoctls = 0, burstDescriptors = 0;
  let expectedAt = 0;
  const model = host.model;
  // The fault source: the kernel's mock raises a real I/O page fault (its own small chain: mock device, nesting
  // parent, fault queue, IOPF-capable nested HWPT); elsewhere a stand-in fault lets the guest's script go on.
  const hostResponses: { cookie: number; code: number }[] = [];
  let faultNote: string | undefined;
  let chain: ReturnType<typeof mockIopfChain> | undefined;
  const standIn = (): HostPageFault => ({
    rid: FAULT.rid,
    pasid: FAULT.pasid,
    page: FAULT.page,
    read: true,
    write: true,
    exec: false,
    priv: false,
    lastInGroup: true,
    grpid: FAULT.grpid,
    cookie: 1,
  });
  const useKernel = host.iommufd !== undefined && !opts.devices;
  const faults: FaultSource = {
    raise() {
      if (!useKernel) return standIn();
      try {
        chain = stack.use(mockIopfChain(host.iommufd!));
        const P = PgfaultConstants.values;
        chain.dev.triggerIopf({
          pasid: FAULT.pasid,
          grpid: FAULT.grpid,
          perm: P.IOMMU_PGFAULT_PERM_READ | P.IOMMU_PGFAULT_PERM_WRITE,
          addr: FAULT.page * 4096,
        });
        if (!chain.queue.pollIn(2000)) throw new Error("no fault record within 2 s");
        return hostFaultFromRecord(chain.queue.readFault(), FAULT.rid);
      } catch (e) {
        chain = undefined;
        faultNote = `the kernel raised no fault (${(e as Error).message}); a stand-in was used`;
        return standIn();
      }
    },
    respond(cookie, code) {
      chain?.queue.respond(cookie, code);
      hostResponses.push({ cookie, code });
    },
  };
  const unit = new VtdUnit(guestMemoryOver(ram), queue, devices, opts.tableFor, (index, result, micros) => {
    latencies.push(micros);
    if (index === workload.burstDoorbell) {
      burstIoctls = queue.telemetry.ioctls - ioctlsBefore;
      burstDescriptors = result.processed;
    }
    ioctlsBefore = queue.telemetry.ioctls;
    while (expectedAt < workload.expected.length && workload.expected[expectedAt].doorbell === index) {
      const e = workload.expected[expectedAt++];
      if (!model) continue;
      checked++;
      const bindings = queue.bindings(e.domain, e.pasid);
      if (!(bindings.length > 0 && bindings.every((b) => model.covered(b.targetId, e.page, b.asid)))) {
        underInvalidated++;
      }
    }
    model?.resetCoverage();
    opts.progress?.(index, build);
  }, faults);
  let iqeAt: number | undefined;
  const bus: Bus = {
    mmio(address, length, write, value) {
      const offset = address - LAYOUT.vtdRegisters;
      if (offset < 0 || offset >= 0x1000) return 0; // nothing else is there
      if (write) {
        unit.write(offset, length, value);
        return 0;
      }
      return unit.read(offset, length);
    },
    io(port, _size, write, value) {
      if (write && port === LAYOUT.iqePort) iqeAt = value;
      return 0;
    },
  };

  let vcpu: "kvm" | "in-process" = "in-process", kvmNote: string | undefined, end: GuestEnd, exits: number;
  const timeoutMs = opts.timeoutMs ?? 120_000;
  const mode = opts.kvm ?? "auto";
  let kvm: Kvm | undefined;
  if (mode !== "off") {
    try {
      kvm = Kvm.open(shim, opts.kvmPath);
    } catch (e) {
      if (mode === "require" || !(e instanceof KvmError)) throw e;
      kvmNote = e.message;
    }
  } else kvmNote = "KVM not requested";
  if (kvm) {
    using _kvm = kvm;
    using vm = kvm.createVm();
    vm.setMemory(0, 0, ram);
    const v = vm.createVcpu();
    v.resetRealMode(LAYOUT.code);
    vcpu = "kvm";
    ({ end, exits } = opts.vcpuThread === "inline"
      ? runInline(shim, v, bus, timeoutMs)
      : await runOnWorker(shim, v, bus, timeoutMs));
  } else {
    const deadline = performance.now() + timeoutMs;
    ({ end, exits } = runInterpreted(ram, bus, () => performance.now() > deadline));
  }

  function build(): MiniVmmReport {
    const t = queue.telemetry;
    const sorted = latencies.toSorted((a, b) => a - b);
    const pct = (p: number) =>
      sorted.length ? Number(sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))].toFixed(1)) : 0;
    return {
      vcpu,
      ...(vcpu === "kvm" ? { vcpuThread: opts.vcpuThread ?? "worker" } : {}),
      kvmNote,
      end: end ?? "cancelled",
      iqeAt,
      exits: exits ?? 0,
      script: { doorbells: workload.doorbells, descriptors: workload.descriptors, bytes: workload.bytes.length },
      unit: structuredClone(unit.stats),
      host: { invalidationsIn: t.invalidationsIn, ioctls: t.ioctls, entriesOut: t.entriesOut, failures: t.failures },
      coalescing: Number((t.invalidationsIn / Math.max(1, t.entriesOut)).toFixed(2)),
      burst: { descriptors: burstDescriptors, ioctls: burstIoctls },
      doorbellUs: { p50: pct(50), p99: pct(99), max: pct(100) },
      faultRoundTrip: {
        source: chain ? "kernel" : "stand-in",
        ...unit.stats.pageRequests,
        hostResponses: [...hostResponses],
        ...(faultNote ? { note: faultNote } : {}),
      },
      underInvalidated,
      checked,
      seconds: Number(((performance.now() - started) / 1000).toFixed(2)),
    };
  }
  return build();
}

/** Run `vcpu` on this thread, serving its exits in place until it stops or `timeoutMs` passes. */
function runInline(shim: NativeShim, vcpu: KvmVcpu, bus: Bus, timeoutMs: number): { end: GuestEnd; exits: number } {
  shim.kickSetup();
  const deadline = performance.now() + timeoutMs;
  // No other thread can kick this one out of KVM_RUN: a timer signals it at the deadline, then every 10 ms in case
  // the first signal landed while an exit was being served.
  const armed = shim.deadlineTimer(Math.max(1, Math.ceil(timeoutMs)), 10);
  if (armed < 0) throw new KvmError("arm the deadline timer", undefined, armed);
  try {
    const r = runVcpuLoop(vcpu, {
      mmio: (address, len, write, lo) => bus.mmio(address >>> 0, len, write, lo >>> 0),
      io: (port, size, out, value) => bus.io(port, size, out, value >>> 0),
      stopped: () => performance.now() > deadline,
    });
    return { end: vcpuEnd(r.kind, r.code), exits: r.exits };
  } finally {
    shim.deadlineTimer(0);
  }
}

/** A vCPU loop's end as the report says it. */
function vcpuEnd(kind: number, code: number): GuestEnd {
  if (kind === KIND.HLT) return "halted";
  if (kind === KIND.CANCELLED) return "cancelled";
  if (kind === KIND.ERROR) return { stopped: `KVM_RUN failed: errno ${code}` };
  return { stopped: `unhandled exit reason ${code}` };
}

/** How long the VMM thread blocks in one synchronous wait for the vCPU's next exit, ms. */
const SYNC_WAIT_MS = 1;
/** How long the VMM thread may serve exits without letting the event loop run, ms. */
const SYNC_BUDGET_MS = 10;

/** Run `vcpu` on a Worker, serving its exits on this thread until it stops. */
async function runOnWorker(
  shim: NativeShim,
  vcpu: KvmVcpu,
  bus: Bus,
  timeoutMs: number,
): Promise<{ end: GuestEnd; exits: number }> {
  const mb = new Int32Array(new SharedArrayBuffer(MB.SLOTS * 4));
  const worker = new Worker(new URL("./vcpu_worker.ts", import.meta.url).href, { type: "module" });
  try {
    shim.kickSetup();
    const failed = new Promise<never>((_, reject) => {
      worker.onerror = (e) => {
        e.preventDefault();
        reject(new Error(`vCPU worker: ${e.message}`));
      };
    });
    worker.postMessage({ shimPath: shim.path, vcpuFd: vcpu.fd, run: vcpu.run, mailbox: mb });
    const timer = setTimeout(() => {
      Atomics.store(mb, MB.STOP, 1);
      vcpu.run[1] = 1; // immediate_exit: if the kick lands between two KVM_RUNs, the next one returns at once
      const tid = Atomics.load(mb, MB.TID);
      if (tid > 0) shim.kick(tid);
    }, timeoutMs);
    try {
      let yielded = performance.now();
      for (;;) {
        const s = Atomics.load(mb, MB.STATE);
        if (s === STATE.RUNNING || s === STATE.RESUME) {
          // The next exit usually comes within microseconds: wait for it on this thread (a futex wait, as a C VMM
          // does) for up to SYNC_WAIT_MS. Past that, or once SYNC_BUDGET_MS passed without yielding, wait
          // asynchronously so the event loop runs (the deadline timer, the worker's error event, I/O).
          if (
            performance.now() - yielded < SYNC_BUDGET_MS && Atomics.wait(mb, MB.STATE, s, SYNC_WAIT_MS) !== "timed-out"
          ) {
            continue;
          }
          const w = Atomics.waitAsync(mb, MB.STATE, s);
          if (w.async) await Promise.race([w.value, failed]);
          yielded = performance.now();
          continue;
        }
        if (s === STATE.STOPPED) break;
        // An exit: serve it and let the vCPU go on.
        const kind = mb[MB.KIND], write = mb[MB.WRITE] === 1;
        const value = kind === KIND.MMIO
          ? bus.mmio(mb[MB.ADDR] >>> 0, mb[MB.LEN], write, mb[MB.DATA_LO] >>> 0)
          : bus.io(mb[MB.ADDR], mb[MB.LEN], write, mb[MB.DATA_LO] >>> 0);
        mb[MB.DATA_LO] = value;
        mb[MB.DATA_HI] = 0;
        Atomics.store(mb, MB.STATE, STATE.RESUME);
        Atomics.notify(mb, MB.STATE);
      }
    } finally {
      clearTimeout(timer);
    }
    return { end: vcpuEnd(mb[MB.KIND], mb[MB.CODE]), exits: mb[MB.EXITS] };
  } finally {
    worker.terminate();
  }
}
