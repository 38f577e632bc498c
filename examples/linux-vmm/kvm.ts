/**
 * KVM for a VMM that boots Linux, over iommu-relay's shim: a VM with the in-kernel interrupt controllers (PIC,
 * IOAPIC, local APIC) and PIT, one memory slot, GSI levels and MSIs; one vCPU entered in 64-bit mode with a CPUID
 * derived from what KVM supports. Everything is disposable; the VM disposes its vCPU first.
 *
 * @module
 */
import { IOCTL, IOCTL_WITH_POINTER, type NativeShim } from "../../ffi/native.ts";
import {
  errnoName,
  KVM_CREATE_IRQCHIP,
  KVM_CREATE_PIT2,
  KVM_CREATE_VCPU,
  KVM_CREATE_VM,
  KVM_GET_API_VERSION,
  KVM_GET_SREGS,
  KVM_GET_SUPPORTED_CPUID,
  KVM_GET_VCPU_MMAP_SIZE,
  KVM_IRQ_LINE,
  KVM_SET_CPUID2,
  KVM_SET_REGS,
  KVM_SET_SREGS,
  KVM_SET_USER_MEMORY_REGION,
  KVM_SIGNAL_MSI,
  KvmBase,
  KvmCpuidEntry2,
  KvmMsi,
  KvmPitConfig,
  KvmRegs,
  KvmSegment,
  KvmSregs,
  KvmUserspaceMemoryRegion,
} from "../../lib/uapi/mod.ts";

/** A KVM call failed: the operation and the errno. */
export class KvmError extends Error {
  override name = "KvmError";
  readonly errno: number;
  constructor(readonly op: string, result: number) {
    super(`${op}: ${errnoName(result)} (${-result})`);
    this.errno = -result;
  }
}

function check(op: string, r: number): number {
  if (r < 0) throw new KvmError(op, r);
  return r;
}

/** One CPUID leaf. */
export interface CpuidLeaf {
  fn: number;
  index: number;
  flags: number;
  eax: number;
  ebx: number;
  ecx: number;
  edx: number;
}

const MAX_CPUID = 256;

/** `/dev/kvm`. */
export class Kvm implements Disposable {
  private constructor(readonly shim: NativeShim, readonly fd: number) {}

  /** Open `path` and check the API version (a missing device is a KvmError with ENOENT). */
  static open(shim: NativeShim, path = "/dev/kvm"): Kvm {
    const fd = check(`open ${path}`, shim.open(path));
    const version = shim[IOCTL](fd, KVM_GET_API_VERSION.request, null);
    if (version !== KvmBase.values.KVM_API_VERSION) {
      shim.close(fd);
      throw new KvmError(`KVM API version ${version}, expected 12`, -22);
    }
    return new Kvm(shim, fd);
  }

  /** What KVM can give a vCPU (KVM_GET_SUPPORTED_CPUID). */
  supportedCpuid(): CpuidLeaf[] {
    const buf = new Uint8Array(8 + MAX_CPUID * KvmCpuidEntry2.size);
    const v = new DataView(buf.buffer);
    v.setUint32(0, MAX_CPUID, true);
    check("KVM_GET_SUPPORTED_CPUID", this.shim[IOCTL](this.fd, KVM_GET_SUPPORTED_CPUID.request, buf));
    const n = Math.min(v.getUint32(0, true), MAX_CPUID);
    const leaves: CpuidLeaf[] = [];
    for (let i = 0; i < n; i++) {
      const at = 8 + i * KvmCpuidEntry2.size;
      leaves.push({
        fn: v.getUint32(at, true),
        index: v.getUint32(at + 4, true),
        flags: v.getUint32(at + 8, true),
        eax: v.getUint32(at + 12, true),
        ebx: v.getUint32(at + 16, true),
        ecx: v.getUint32(at + 20, true),
        edx: v.getUint32(at + 24, true),
      });
    }
    return leaves;
  }

  createVm(): KvmVm {
    return new KvmVm(this, check("KVM_CREATE_VM", this.shim[IOCTL](this.fd, KVM_CREATE_VM.request, null)));
  }

  [Symbol.dispose](): void {
    this.shim.close(this.fd);
  }
}

/** A VM with in-kernel irqchip and PIT. */
export class KvmVm implements Disposable {
  #vcpu: KvmVcpu | undefined;
  readonly #memory: Uint8Array[] = [];
  readonly #irq = new Uint8Array(8);
  readonly #msi = new Uint8Array(KvmMsi.size);

  constructor(readonly kvm: Kvm, readonly fd: number) {}

  /** PIC + IOAPIC + LAPIC in the kernel, then the PIT (its speaker port answered in the kernel too). */
  createIrqchipAndPit(): void {
    const shim = this.kvm.shim;
    check("KVM_CREATE_IRQCHIP", shim[IOCTL](this.fd, KVM_CREATE_IRQCHIP.request, null));
    const pit = KvmPitConfig.buffer().set("flags", 1); // KVM_PIT_SPEAKER_DUMMY
    check("KVM_CREATE_PIT2", shim[IOCTL](this.fd, KVM_CREATE_PIT2.request, pit.bytes));
  }

  /** Back guest-physical [gpa, +memory.length) with `memory` (page aligned). */
  setMemory(slot: number, gpa: number, memory: Uint8Array): void {
    const region = KvmUserspaceMemoryRegion.buffer().set("slot", slot).setU64("guest_phys_addr", gpa)
      .setU64("memory_size", memory.byteLength);
    check(
      `memory slot ${slot}`,
      this.kvm.shim[IOCTL_WITH_POINTER](this.fd, KVM_SET_USER_MEMORY_REGION.request, region.bytes, 24, memory),
    );
    this.#memory.push(memory); // KVM holds the address: keep the buffer alive as long as the VM
  }

  /** Set GSI `irq` to `level` (ISA IRQs reach the PIC and the IOAPIC). */
  irqLine(irq: number, level: 0 | 1): void {
    const v = new DataView(this.#irq.buffer);
    v.setUint32(0, irq, true);
    v.setUint32(4, level, true);
    check("KVM_IRQ_LINE", this.kvm.shim[IOCTL](this.fd, KVM_IRQ_LINE.request, this.#irq));
  }

  /** MSIs KVM refused (a guest-programmed address or data it rejects): counted, never thrown into a device. */
  msiErrors = 0;

  /** Deliver the MSI a device writes (`address`, `data`). Returns KVM's answer (>0 delivered, 0 blocked, <0 refused). */
  signalMsi(address: number, data: number): number {
    const v = new DataView(this.#msi.buffer);
    v.setUint32(0, address >>> 0, true);
    v.setUint32(4, Math.floor(address / 2 ** 32), true);
    v.setUint32(8, data >>> 0, true);
    v.setUint32(12, 0, true);
    const r = this.kvm.shim[IOCTL](this.fd, KVM_SIGNAL_MSI.request, this.#msi);
    if (r < 0) this.msiErrors++;
    return r;
  }

  /** The VM's one vCPU (id 0). */
  createVcpu(): KvmVcpu {
    if (this.#vcpu) throw new RangeError("this VMM runs one vCPU");
    const shim = this.kvm.shim;
    const fd = check("KVM_CREATE_VCPU", shim[IOCTL](this.fd, KVM_CREATE_VCPU.request, null));
    const size = check("KVM_GET_VCPU_MMAP_SIZE", shim[IOCTL](this.kvm.fd, KVM_GET_VCPU_MMAP_SIZE.request, null));
    const run = shim.sharedAlignedBuffer(size);
    const r = shim.mapFixed(run, fd, 0);
    if (r < 0) {
      shim.close(fd);
      throw new KvmError("map kvm_run", r);
    }
    return this.#vcpu = new KvmVcpu(shim, fd, run);
  }

  [Symbol.dispose](): void {
    try {
      this.#vcpu?.[Symbol.dispose]();
    } finally {
      this.kvm.shim.close(this.fd);
      this.#memory.length = 0;
    }
  }
}

/** A segment register as KVM takes it. */
export interface Segment {
  base: number;
  limit: number;
  selector: number;
  type: number;
  present: number;
  dpl: number;
  db: number;
  s: number;
  l: number;
  g: number;
}

/** The 64-bit entry state of the Linux boot protocol. */
export interface LongModeEntry {
  readonly rip: number;
  readonly rsi: number;
  readonly cr3: number;
  readonly gdtBase: number;
  readonly gdtLimit: number;
  readonly code: Segment;
  readonly data: Segment;
  readonly tss: Segment;
}

/** A vCPU; `run` is its kvm_run page. */
export class KvmVcpu implements Disposable {
  #closed = false;
  constructor(readonly shim: NativeShim, readonly fd: number, readonly run: Uint8Array) {}

  setCpuid(leaves: readonly CpuidLeaf[]): void {
    const size = KvmCpuidEntry2.size;
    const buf = new Uint8Array(8 + leaves.length * size);
    const v = new DataView(buf.buffer);
    v.setUint32(0, leaves.length, true);
    leaves.forEach((l, i) => {
      const at = 8 + i * size;
      [l.fn, l.index, l.flags, l.eax, l.ebx, l.ecx, l.edx].forEach((x, k) => v.setUint32(at + k * 4, x >>> 0, true));
    });
    check("KVM_SET_CPUID2", this.shim[IOCTL](this.fd, KVM_SET_CPUID2.request, buf));
  }

  /** 64-bit mode, paging on, at `entry.rip` with RSI = boot_params (Documentation/arch/x86/boot.rst). */
  enterLongMode(entry: LongModeEntry): void {
    const sregs = KvmSregs.buffer();
    check("KVM_GET_SREGS", this.shim[IOCTL](this.fd, KVM_GET_SREGS.request, sregs.bytes));
    const bytes = sregs.bytes;
    const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const F = KvmSregs.layout;
    const at = (name: string) => F.find((f) => f.name === name)!.offset;
    const seg = (offset: number, s: Segment) => {
      const S = (name: string) => offset + KvmSegment.layout.find((f) => f.name === name)!.offset;
      v.setUint32(S("base"), s.base, true);
      v.setUint32(S("base") + 4, 0, true);
      v.setUint32(S("limit"), s.limit >>> 0, true);
      v.setUint16(S("selector"), s.selector, true);
      v.setUint8(S("type"), s.type);
      v.setUint8(S("present"), s.present);
      v.setUint8(S("dpl"), s.dpl);
      v.setUint8(S("db"), s.db);
      v.setUint8(S("s"), s.s);
      v.setUint8(S("l"), s.l);
      v.setUint8(S("g"), s.g);
      v.setUint8(S("avl"), 0);
      v.setUint8(S("unusable"), 0);
    };
    seg(at("cs_base"), entry.code);
    for (const name of ["ds_base", "es_base", "fs_base", "gs_base", "ss_base"]) seg(at(name), entry.data);
    seg(at("tr_base"), entry.tss);
    seg(at("ldt_base"), { ...entry.tss, selector: 0, type: 2 });
    v.setUint32(at("gdt_base"), entry.gdtBase, true);
    v.setUint32(at("gdt_base") + 4, 0, true);
    v.setUint16(at("gdt_base") + 8, entry.gdtLimit, true);
    v.setUint32(at("idt_base"), 0, true);
    v.setUint32(at("idt_base") + 4, 0, true);
    v.setUint16(at("idt_base") + 8, 0, true);
    const u64 = (name: string, lo: number, hi = 0) => {
      v.setUint32(at(name), lo >>> 0, true);
      v.setUint32(at(name) + 4, hi >>> 0, true);
    };
    u64("cr0", 0x80050033); // PG | AM | WP | NE | ET | MP | PE
    u64("cr3", entry.cr3);
    u64("cr4", 0x20); // PAE
    u64("efer", 0x500); // LME | LMA
    check("KVM_SET_SREGS", this.shim[IOCTL](this.fd, KVM_SET_SREGS.request, bytes));
    const regs = KvmRegs.buffer().setU64("rip", entry.rip).setU64("rsi", entry.rsi).setU64("rflags", 2);
    check("KVM_SET_REGS", this.shim[IOCTL](this.fd, KVM_SET_REGS.request, regs.bytes));
  }

  [Symbol.dispose](): void {
    if (this.#closed) return;
    this.#closed = true;
    this.shim.unmapFixed(this.run);
    this.shim.close(this.fd);
  }
}

/**
 * A conservative CPUID from KVM's supported list, close to QEMU's `kvm64`: a Linux guest inside the nested test VM
 * crashed early with `-cpu host`-like CPUID (features TCG's emulated SVM does not really carry), and boots with
 * kvm64. Kept: the vendor, family/model, the base x86-64 feature set, NX/LM/SYSCALL, the KVM paravirt clock leaves.
 * Dropped: everything in leaf 7 and above (AVX, SMEP/SMAP, PCID...), XSAVE, x2APIC, TSC-deadline, topology leaves.
 */
export function conservativeCpuid(supported: readonly CpuidLeaf[]): CpuidLeaf[] {
  const out: CpuidLeaf[] = [];
  const LEAF1_EDX = 0x078bfbff; // fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2
  const LEAF1_ECX = (1 << 0) | (1 << 13) | (1 << 31); // sse3, cx16, hypervisor
  // syscall, nx, lm, and AMD's copies of leaf 1's bits 0-24 (not 25-27: FFXSR, 1 GiB pages, RDTSCP)
  const EXT1_EDX = (1 << 11) | (1 << 20) | (1 << 29) | (LEAF1_EDX & 0x01ffffff);
  const EXT1_ECX = 1 << 0; // lahf_lm
  const KVM_FEATURES = (1 << 0) | (1 << 1) | (1 << 3) | (1 << 24); // kvmclock (old, new MSRs), no port-0x80 delay, stable
  for (const l of supported) {
    const leaf = { ...l };
    if (l.fn === 0) leaf.eax = Math.min(l.eax, 1);
    else if (l.fn === 1) {
      leaf.ecx = (l.ecx & LEAF1_ECX) | (1 << 31);
      leaf.edx = l.edx & LEAF1_EDX;
      leaf.ebx = (l.ebx & 0xff00) | (1 << 16); // APIC id 0, one logical processor, CLFLUSH size
    } else if (l.fn === 0x80000000) leaf.eax = Math.min(l.eax, 0x80000008);
    else if (l.fn === 0x80000001) {
      leaf.ecx = l.ecx & EXT1_ECX;
      leaf.edx = l.edx & EXT1_EDX;
    } else if (l.fn === 0x40000001) {
      leaf.eax = l.eax & KVM_FEATURES;
      leaf.edx = 0;
    } else if (l.fn === 0x80000008) {
      leaf.ebx = 0;
      leaf.ecx = 0;
    } else if (!(l.fn === 0x40000000 || (l.fn >= 0x80000002 && l.fn <= 0x80000006))) continue;
    out.push(leaf);
  }
  return out;
}
