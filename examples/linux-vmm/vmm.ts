/**
 * The Linux-guest VMM: boots a bzImage + initramfs on one KVM vCPU (inline on this thread) with a 16550 console,
 * ACPI (MADT, DMAR), PCI with a virtio-blk device behind an emulated VT-d whose invalidation queue is iommu-relay's,
 * relayed to the host through one plugin per guest domain. Ends when the guest writes its status to the exit port
 * (0x501), shuts down, or the deadline passes (a timer signal kicks the vCPU out of KVM_RUN).
 *
 * @module
 */
import type { NativeShim } from "../../mod.ts";
import { type PluginDefinition, type RelayHost, relayPlugin } from "../../mod.ts";
import type { RelayPlugin, StageOneTable, VtdPasidEntry } from "../../mod.ts";
import { KvmExitReason } from "../../lib/uapi/mod.ts";
import type { Workload } from "../../lib/testing/mod.ts";
import { ACPI_PM, buildAcpi } from "./acpi.ts";
import { BOOT, type E820Entry, parseBzImage, placeBoot } from "./boot.ts";
import { Kvm, KvmError } from "../../mod.ts";
import { conservativeCpuid } from "./cpuid.ts";
import { Uart16550, UART_BASE, UART_IRQ } from "./uart.ts";
import { hostBridgeConfig, PCI_CONFIG_ADDRESS, VIRTIO_DEV, VirtioBlk } from "./virtio_blk.ts";
import { VtdUnit, watchHostCalls } from "./vtd.ts";

/** The guest's exit port: /init writes its status byte here. */
export const EXIT_PORT = 0x501;
/** How long the run goes on after the exit port for the guest's reboot, which flushes its console backlog. */
const EXIT_DRAIN_MS = 15_000;
const IOAPIC = 0xfec00000;
const VTD_REGISTERS = 0xfed90000;
const ACPI_BASE = 0xe0000;
const MiB = 1 << 20;

export interface LinuxVmmOptions {
  readonly shim: NativeShim;
  readonly host: RelayHost;
  readonly kernel: Uint8Array;
  readonly initrd: Uint8Array;
  /** Extra kernel parameters (e.g. `iommu.strict=1`). */
  readonly append?: string;
  readonly ramMiB?: number;
  /** The RAM disk, MiB (default 1: the guest's /init passes over it three times reading, twice writing). */
  readonly diskMiB?: number;
  readonly timeoutMs?: number;
  /** Host devices behind the guest's domains (default: selftest mocks on a kernel host, model devices in-process). */
  readonly device?: "mock" | "model";
  /** A bound PASID entry → the host's table (default VT-d stage-1; the selftest mock takes its own format). */
  readonly tableFor?: (entry: VtdPasidEntry & { present: true }) => StageOneTable | undefined;
  readonly plugin?: PluginDefinition;
  /** Every console line, as it comes. */
  readonly onConsole?: (line: string) => void;
  readonly kvmPath?: string;
  /** Diagnosis: re-walk the guest's table on every DMA cache hit and report disagreements (slower). */
  readonly verifyHits?: boolean;
}

export type LinuxVmmEnd =
  /** The guest's /init ended with `status`: through the exit port, or by rebooting after its "exit" line. */
  | { readonly kind: "guest-exit"; readonly status: number; readonly via: "port" | "reboot" }
  | { readonly kind: "shutdown" | "timeout" | "halted" }
  | { readonly kind: "error"; readonly detail: string };

export interface LinuxVmmReport {
  readonly end: LinuxVmmEnd;
  readonly console: string[];
  /** The guest's result line (from its /init), if it printed one. */
  readonly result?: Record<string, string>;
  readonly exits: number;
  readonly seconds: number;
  /** Seconds from the start to the first line of /init. */
  readonly initSeconds?: number;
  readonly accessPlatform: boolean;
  readonly blk: VirtioBlk["stats"];
  readonly vtd: Omit<VtdUnit["stats"], "doorbellUs"> & {
    doorbellUs: { p50: number; p99: number; p999: number; max: number };
  };
  readonly relay: { invalidationsIn: number; ioctls: number; entriesOut: number; failures: number };
  /** What the VMM bound from the guest's PASID entries (iommu-relay's VtdPasidBinder). */
  readonly binder: { binds: number; unbinds: number; ridBinds: number; badEntries: string[] };
  /** Descriptors of the guest's invalidation queue, by type. */
  readonly descriptorsByType: Record<string, number>;
  /** The relay requests of the run, doorbell by doorbell (a `lib/testing` workload, for policy replays). */
  readonly workload: Workload;
  /** MSIs KVM refused. */
  readonly msiErrors: number;
  /** Lines of the guest's log that report DMAR faults. */
  readonly dmarFaultLines: string[];
}

/** Boot the guest and run it to its end. */
export function runLinuxVmm(opts: LinuxVmmOptions): LinuxVmmReport {
  const started = performance.now();
  const { shim, host } = opts;
  const ramBytes = (opts.ramMiB ?? 256) * MiB;
  const ram = shim.sharedAlignedBuffer(ramBytes, 2 * MiB);
  const consoleLines: string[] = [];
  let initSeconds: number | undefined;
  const onLine = (line: string) => {
    if (initSeconds === undefined && line.includes("linux-guest: init started")) {
      initSeconds = (performance.now() - started) / 1000;
    }
    if (consoleLines.length < 20000) consoleLines.push(line);
    opts.onConsole?.(line);
  };

  const memory = {
    read(gpa: number, length: number): Uint8Array {
      if (!(gpa >= 0 && length >= 0 && gpa + length <= ramBytes)) throw new RangeError(`GPA ${gpa}+${length}`);
      return ram.slice(gpa, gpa + length);
    },
    write(gpa: number, bytes: Uint8Array): void {
      if (!(gpa >= 0 && gpa + bytes.length <= ramBytes)) throw new RangeError(`GPA ${gpa}+${bytes.length}`);
      ram.set(bytes, gpa);
    },
  };

  using stack = new DisposableStack();
  const definition = opts.plugin ?? relayPlugin;
  const deviceKind = opts.device ?? (host.model ? "model" : "mock");
  const plugins: RelayPlugin[] = [];
  // Devices signal MSIs through the VM, which is created after them (they are wired first so a failed KVM open
  // leaves nothing half-made).
  const vmRef: { vm?: ReturnType<Kvm["createVm"]> } = {};
  const msi = (address: number, data: number) => {
    vmRef.vm?.signalMsi(address, data);
  };
  const rid = VIRTIO_DEV << 3;
  const vtd = new VtdUnit(memory, ramBytes, rid, {
    pluginFor(did) {
      const plugin = definition.create(host, {
        domain: did,
        device: deviceKind === "mock" ? { kind: "mock", pasid: true } : { kind: "model" },
      });
      plugins.push(plugin);
      return plugin;
    },
    tableFor: opts.tableFor,
    hostCalls: stack.use(watchHostCalls(host)),
  }, msi);
  stack.defer(() => {
    try {
      vtd.dispose();
    } catch (e) {
      console.error(`linux-vmm: disposing the VT-d unit's plugins failed: ${e}`);
    }
  });
  vtd.verifyHits = opts.verifyHits ?? false;
  const blk = new VirtioBlk((opts.diskMiB ?? 1) * MiB, { bytes: ram }, vtd, msi);

  const kvm = stack.use(Kvm.open(shim, opts.kvmPath));
  const vm = vmRef.vm = stack.use(kvm.createVm());
  vm.createIrqchipAndPit();
  vm.setMemory(0, 0, ram);
  const vcpu = vm.createVcpu();
  vcpu.setCpuid(conservativeCpuid(kvm.supportedCpuid()));
  const uart = new Uart16550(onLine, (level) => vm.irqLine(UART_IRQ, level));

  const image = parseBzImage(opts.kernel);
  const { rsdp } = buildAcpi(ram, {
    base: ACPI_BASE,
    ioapic: IOAPIC,
    vtdRegisters: VTD_REGISTERS,
    device: { dev: VIRTIO_DEV, fn: 0 },
  });
  const e820: E820Entry[] = [
    { addr: 0, size: 0x9fc00, type: 1 },
    { addr: 0x9fc00, size: 0x400, type: 2 },
    { addr: 0xe0000, size: 0x20000, type: 2 },
    { addr: 0x100000, size: ramBytes - 0x100000, type: 1 },
    { addr: IOAPIC, size: 0x1000, type: 2 },
    { addr: VTD_REGISTERS, size: 0x1000, type: 2 },
  ];
  const cmdline = [
    "console=ttyS0",
    "earlyprintk=serial,ttyS0,115200",
    "panic=-1",
    "loglevel=6",
    "intel_iommu=on",
    "pci=lastbus=1",
    "no_timer_check",
    "tsc=reliable",
    opts.append ?? "",
  ].join(" ").trim();
  const entry = placeBoot(ram, { image, cmdline, initrd: opts.initrd, e820, rsdp });
  vcpu.enterLongMode(entry);
  void BOOT;

  // Port and MMIO exits.
  let pciAddress = 0;
  let pm1Enable = 0;
  let end: LinuxVmmEnd | undefined;
  /** The status /init wrote to the exit port, and when: the run ends at the reboot that follows. */
  let portExit: { status: number; at: number } | undefined;
  const io = (port: number, size: number, out: boolean, value: number): number => {
    if (port >= UART_BASE && port < UART_BASE + 8) {
      if (out) uart.write(port - UART_BASE, value & 0xff);
      return out ? 0 : uart.read(port - UART_BASE);
    }
    if (port === PCI_CONFIG_ADDRESS && size === 4) {
      if (out) pciAddress = value >>> 0;
      return out ? 0 : pciAddress;
    }
    if (port >= 0xcfc && port < 0xd00) {
      if (!(pciAddress & 0x80000000)) return out ? 0 : 0xffffffff;
      const bus = (pciAddress >> 16) & 0xff, dev = (pciAddress >> 11) & 0x1f, fn = (pciAddress >> 8) & 7;
      const offset = (pciAddress & 0xfc) + (port - 0xcfc);
      if (bus !== 0 || fn !== 0 || (dev !== 0 && dev !== VIRTIO_DEV)) return out ? 0 : 0xffffffff;
      if (dev === 0) return out ? 0 : hostBridgeConfig(offset, size);
      if (out) blk.configWrite(offset, size, value);
      return out ? 0 : blk.configRead(offset, size);
    }
    if (port === ACPI_PM.cnt && !out) return 1; // SCI_EN: ACPI mode is on
    if (port >= ACPI_PM.evt + 2 && port < ACPI_PM.evt + 4) {
      // PM1 enable: kept (the driver checks its global-lock enable reads back); nothing ever raises an event.
      if (out) pm1Enable = value & 0xffff;
      return out ? 0 : pm1Enable;
    }
    if (port === EXIT_PORT && out) {
      // The status is taken here, but the run goes on until the guest's reboot right after it (or EXIT_DRAIN_MS):
      // the guest kernel prints its console from a backlog, at one emulated UART write per byte, so /init's last
      // lines are still in the guest when it writes the port; the reboot flushes them.
      portExit ??= { status: value & 0xff, at: performance.now() };
      return 0;
    }
    if ((port === 0x64 && out && (value & 0xff) === 0xfe) || (port === 0xcf9 && out && (value & 4))) {
      // Keyboard-controller or PCI reset: the guest rebooted (panic=-1) — after its exit port, the end of the run.
      end = portExit ? { kind: "guest-exit", status: portExit.status, via: "port" } : { kind: "shutdown" };
      return 0;
    }
    // Nothing else is there: reads are 0 (the RTC at 0x70/0x71 then never shows update-in-progress, the PM1 event
    // block no pending event, and probes of absent UARTs fail their scratch test).
    return 0;
  };
  const mmio = (address: number, len: number, write: boolean, lo: number, hi: number): [number, number] => {
    if (address >= VTD_REGISTERS && address < VTD_REGISTERS + 0x1000) {
      if (write) {
        vtd.write(address - VTD_REGISTERS, len, lo, hi);
        return [0, 0];
      }
      return vtd.read(address - VTD_REGISTERS, len);
    }
    if (blk.claims(address)) {
      if (write) blk.mmioWrite(address, len, lo);
      else return [blk.mmioRead(address, len), 0];
      return [0, 0];
    }
    return [write ? 0 : 0xffffffff, write ? 0 : 0xffffffff];
  };

  // The vCPU, inline: a timer signal at the deadline (then every 10 ms) kicks it out of KVM_RUN.
  const timeoutMs = opts.timeoutMs ?? 120_000;
  const deadline = started + timeoutMs;
  shim.kickSetup();
  const armed = shim.deadlineTimer(Math.max(1, Math.ceil(timeoutMs)), 10);
  if (armed < 0) throw new KvmError("arm the deadline timer", undefined, armed);
  const view = new DataView(vcpu.run.buffer, vcpu.run.byteOffset, vcpu.run.byteLength);
  const X = KvmExitReason.values;
  let exits = 0;
  try {
    while (!end) {
      const now = performance.now();
      if (portExit && (now - portExit.at > EXIT_DRAIN_MS || now > deadline)) {
        end = { kind: "guest-exit", status: portExit.status, via: "port" };
        break;
      }
      if (now > deadline) {
        end = { kind: "timeout" };
        break;
      }
      const r = vcpu.runOnce();
      if (r === -4 || r === -11) continue; // EINTR (the deadline's kick), EAGAIN
      if (r < 0) {
        end = { kind: "error", detail: `KVM_RUN: errno ${-r}` };
        break;
      }
      exits++;
      const reason = view.getUint32(8, true);
      if (reason === X.KVM_EXIT_IO) {
        const out = view.getUint8(32) === X.KVM_EXIT_IO_OUT, size = view.getUint8(33);
        const port = view.getUint16(34, true), count = view.getUint32(36, true);
        let at = view.getUint32(40, true);
        for (let i = 0; i < count && at + size <= view.byteLength; i++, at += size) {
          const value = size === 1
            ? view.getUint8(at)
            : size === 2
            ? view.getUint16(at, true)
            : view.getUint32(at, true);
          const answer = io(port, size, out, out ? value : 0);
          if (!out) {
            if (size === 1) view.setUint8(at, answer & 0xff);
            else if (size === 2) view.setUint16(at, answer & 0xffff, true);
            else view.setUint32(at, answer >>> 0, true);
          }
        }
      } else if (reason === X.KVM_EXIT_MMIO) {
        const address = view.getUint32(32, true) + view.getUint32(36, true) * 2 ** 32;
        const len = view.getUint32(48, true), write = view.getUint8(52) === 1;
        const [lo, hi] = mmio(address, len, write, view.getUint32(40, true), view.getUint32(44, true));
        if (!write) {
          view.setUint32(40, lo >>> 0, true);
          view.setUint32(44, hi >>> 0, true);
        }
      } else if (reason === X.KVM_EXIT_SHUTDOWN) {
        end = portExit ? { kind: "guest-exit", status: portExit.status, via: "port" } : { kind: "shutdown" };
      } else if (reason === X.KVM_EXIT_HLT) {
        end = { kind: "halted" };
      } else if (reason !== X.KVM_EXIT_INTR) {
        const detail = reason === X.KVM_EXIT_INTERNAL_ERROR
          ? `internal error, suberror ${view.getUint32(32, true)}`
          : reason === X.KVM_EXIT_FAIL_ENTRY
          ? `entry failed, reason 0x${view.getUint32(32, true).toString(16)}`
          : `exit reason ${reason}`;
        end = { kind: "error", detail };
      }
    }
  } catch (e) {
    // A device model that throws is a VMM bug, not the guest's: the run ends, with the report.
    end = { kind: "error", detail: `VMM: ${(e as Error).stack ?? e}` };
  } finally {
    shim.deadlineTimer(0);
    uart.flush();
  }

  // A reboot right after /init's "exit" line (no panic in between) is its end; any other reboot is a shutdown.
  const exitAt = consoleLines.findLastIndex((l) => /linux-guest: exit \d+$/.test(l));
  if (
    end?.kind === "shutdown" && exitAt >= 0 && !consoleLines.slice(exitAt).some((l) => /Kernel panic|Oops|BUG:/.test(l))
  ) {
    end = { kind: "guest-exit", status: Number(consoleLines[exitAt].match(/exit (\d+)$/)![1]), via: "reboot" };
  }
  const resultLine = consoleLines.findLast((l) => l.includes("linux-guest: result "));
  const result = resultLine
    ? Object.fromEntries(
      resultLine.slice(resultLine.indexOf("result ") + 7).split(/\s+/).map((kv) => kv.split("=") as [string, string]),
    )
    : undefined;
  const t = host.queue().telemetry;
  const sorted = vtd.stats.doorbellUs.toSorted((a, b) => a - b);
  const pct = (p: number) =>
    sorted.length ? Number(sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))].toFixed(1)) : 0;
  const { doorbellUs: _, ...vtdStats } = vtd.stats;
  return {
    end: end ?? { kind: "timeout" },
    console: consoleLines,
    result,
    exits,
    seconds: Number(((performance.now() - started) / 1000).toFixed(2)),
    initSeconds: initSeconds === undefined ? undefined : Number(initSeconds.toFixed(2)),
    accessPlatform: blk.accessPlatform,
    blk: { ...blk.stats },
    vtd: { ...structuredClone(vtdStats), doorbellUs: { p50: pct(50), p99: pct(99), p999: pct(99.9), max: pct(100) } },
    relay: { invalidationsIn: t.invalidationsIn, ioctls: t.ioctls, entriesOut: t.entriesOut, failures: t.failures },
    binder: structuredClone(vtd.binder.telemetry),
    descriptorsByType: { ...vtd.queue.telemetry.byType },
    msiErrors: vm.msiErrors,
    workload: {
      name: `linux-guest ${opts.append ?? ""}`.trim(),
      doorbells: vtd.doorbellLog.map((d, i) => ({ at: i * 1000, vcpu: 0, requests: d.requests })),
      descriptors: vtd.stats.descriptors,
    },
    dmarFaultLines: consoleLines.filter((l) => /DMAR: \[DMA|DRHD: handling fault|fault reason/i.test(l)),
  };
}
