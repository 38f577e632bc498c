/**
 * KVM for a Deno VMM, over iommu-relay's shim (which allows `/dev/kvm`, the VM and vCPU fds its own ioctls return,
 * and only KVM request numbers on them): one disposable object per kernel object — `/dev/kvm`, a VM, a vCPU with its
 * `kvm_run` page mapped over a SharedArrayBuffer (so a vCPU Worker and the VMM both see it as bytes). A VM disposes
 * its vCPUs first. Errors are {@linkcode KvmError}s with the operation, the ioctl and the errno.
 *
 * @module
 */
import { IOCTL, IOCTL_WITH_POINTER, type NativeShim } from "../../ffi/native.ts";
import {
  errnoName,
  type Ioctl,
  KVM_CREATE_IRQCHIP,
  KVM_CREATE_PIT2,
  KVM_CREATE_VCPU,
  KVM_CREATE_VM,
  KVM_GET_API_VERSION,
  KVM_GET_DIRTY_LOG,
  KVM_GET_SREGS,
  KVM_GET_SUPPORTED_CPUID,
  KVM_GET_VCPU_MMAP_SIZE,
  KVM_IRQ_LINE,
  KVM_RUN,
  KVM_SET_CPUID2,
  KVM_SET_REGS,
  KVM_SET_SREGS,
  KVM_SET_USER_MEMORY_REGION,
  KVM_SIGNAL_MSI,
  KvmBase,
  KvmCpuidEntry2,
  KvmDirtyLog,
  KvmMemFlags,
  KvmMsi,
  KvmPitConfig,
  KvmRegs,
  KvmSegment,
  KvmSregs,
  KvmUserspaceMemoryRegion,
} from "../uapi/mod.ts";
import type { DirtyBitmap } from "./dirty.ts";

/**
 * A KVM call failed: the operation, the ioctl (if any) and the errno.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { KvmError } from "./kvm.ts";
 * const e = new KvmError("create VM", "KVM_CREATE_VM", -12);
 * assert.deepEqual([e.errno, e.errnoName, e.ioctl], [12, "ENOMEM", "KVM_CREATE_VM"]);
 * ```
 */
export class KvmError extends Error {
  /** Always `KvmError`. */
  override name = "KvmError";
  /** The positive errno. */
  readonly errno: number;
  /** Its name, e.g. `EINVAL`. */
  readonly errnoName: string;
  /** A failed `op` (through `ioctl`, if one) with the kernel's `-errno` `result`. */
  constructor(
    /** What was being done. */
    readonly op: string,
    /** The ioctl's name, if the failure was one. */
    readonly ioctl: string | undefined,
    result: number,
  ) {
    super(`${op}${ioctl ? ` (${ioctl})` : ""}: ${errnoName(result)} (${-result})`);
    this.errno = -result;
    this.errnoName = errnoName(result);
  }
}

function check(op: string, ioctl: Ioctl | undefined, r: number): number {
  if (r < 0) throw new KvmError(op, ioctl?.name, r);
  return r;
}

/** The CPUs' side of a migration's dirty log: a memory slot's `KVM_GET_DIRTY_LOG` ({@linkcode KvmVm.dirtyLog}). */
export interface CpuDirtyLog {
  /** Guest-physical first byte it covers. */
  readonly gpa: number;
  /** Bytes it covers. */
  readonly length: number;
  /** Bytes per bit (KVM: the host page size, 4096). */
  readonly pageSize: number;
  /** Read the pages written since the last read into `into` (a bitmap of {gpa, length, pageSize}) and re-arm. */
  read(into: DirtyBitmap): void;
}

/** One CPUID leaf (`struct kvm_cpuid_entry2` without its padding). */
export interface CpuidLeaf {
  /** The leaf (EAX in). */
  fn: number;
  /** The sub-leaf (ECX in). */
  index: number;
  /** `KVM_CPUID_FLAG_*`. */
  flags: number;
  /** EAX out. */
  eax: number;
  /** EBX out. */
  ebx: number;
  /** ECX out. */
  ecx: number;
  /** EDX out. */
  edx: number;
}

const MAX_CPUID = 256;

/**
 * `/dev/kvm`: checks the API version, answers what KVM supports, creates VMs.
 *
 * @example
 * ```ts ignore
 * using shim = await NativeShim.load();
 * using kvm = Kvm.open(shim);
 * using vm = kvm.createVm();
 * vm.setMemory(0, 0, shim.sharedAlignedBuffer(1 << 20));
 * using vcpu = vm.createVcpu();
 * vcpu.resetRealMode(0x1000);
 * ```
 */
export class Kvm implements Disposable {
  #closed = false;
  private constructor(
    /** The shim the fds belong to. */
    readonly shim: NativeShim,
    /** The `/dev/kvm` fd. */
    readonly fd: number,
  ) {}

  /** Open `path` (default /dev/kvm) and check the API version; a missing device is a KvmError with ENOENT. */
  static open(shim: NativeShim, path = "/dev/kvm"): Kvm {
    const fd = check(`open ${path}`, undefined, shim.open(path));
    const version = shim[IOCTL](fd, KVM_GET_API_VERSION.request, null);
    if (version !== KvmBase.values.KVM_API_VERSION) {
      shim.close(fd);
      throw new KvmError(
        `KVM API version ${version}, expected ${KvmBase.values.KVM_API_VERSION}`,
        KVM_GET_API_VERSION.name,
        -22,
      );
    }
    return new Kvm(shim, fd);
  }

  /** Bytes of a vCPU's `kvm_run` mapping. */
  get vcpuMmapSize(): number {
    return check(
      "vCPU mmap size",
      KVM_GET_VCPU_MMAP_SIZE,
      this.shim[IOCTL](this.fd, KVM_GET_VCPU_MMAP_SIZE.request, null),
    );
  }

  /** The CPUID leaves KVM can give a guest (`KVM_GET_SUPPORTED_CPUID`). */
  supportedCpuid(): CpuidLeaf[] {
    const size = KvmCpuidEntry2.size;
    const buf = new Uint8Array(8 + MAX_CPUID * size);
    new DataView(buf.buffer).setUint32(0, MAX_CPUID, true);
    check("supported CPUID", KVM_GET_SUPPORTED_CPUID, this.shim[IOCTL](this.fd, KVM_GET_SUPPORTED_CPUID.request, buf));
    const v = new DataView(buf.buffer);
    const leaves: CpuidLeaf[] = [];
    for (let i = 0; i < v.getUint32(0, true); i++) {
      const at = 8 + i * size;
      const u = (k: number) => v.getUint32(at + k * 4, true);
      leaves.push({ fn: u(0), index: u(1), flags: u(2), eax: u(3), ebx: u(4), ecx: u(5), edx: u(6) });
    }
    return leaves;
  }

  /** A new VM. */
  createVm(): KvmVm {
    const fd = check("create VM", KVM_CREATE_VM, this.shim[IOCTL](this.fd, KVM_CREATE_VM.request, null));
    return new KvmVm(this, fd);
  }

  /** Close the `/dev/kvm` fd (once). */
  [Symbol.dispose](): void {
    if (this.#closed) return;
    this.#closed = true;
    this.shim.close(this.fd);
  }
}

/** A VM: memory slots, the in-kernel interrupt controllers, interrupts, vCPUs. Made by {@linkcode Kvm.createVm}. */
export class KvmVm implements Disposable {
  #vcpu: KvmVcpu | undefined;
  readonly #memory: Uint8Array[] = [];
  readonly #irq = new Uint8Array(8);
  readonly #msi = new Uint8Array(KvmMsi.size);
  #closed = false;

  /** The VM `fd` of `kvm` (use {@linkcode Kvm.createVm}). */
  constructor(
    /** The `/dev/kvm` it was made from. */
    readonly kvm: Kvm,
    /** The VM fd. */
    readonly fd: number,
  ) {}

  readonly #slots = new Map<number, { gpa: number; length: number }>();

  /**
   * Back guest-physical [gpa, gpa + memory.length) with `memory` (page aligned: `shim.sharedAlignedBuffer`), as memory
   * slot `slot`. `logDirty`: register the slot with `KVM_MEM_LOG_DIRTY_PAGES`, so {@linkcode KvmVm.dirtyLog} reads the
   * guest's writes to it (what a migration copies again).
   */
  setMemory(slot: number, gpa: number, memory: Uint8Array, opts: { logDirty?: boolean } = {}): void {
    const region = KvmUserspaceMemoryRegion.buffer()
      .set("slot", slot)
      .set("flags", opts.logDirty ? KvmMemFlags.values.KVM_MEM_LOG_DIRTY_PAGES : 0)
      .setU64("guest_phys_addr", gpa)
      .setU64("memory_size", memory.byteLength);
    check(
      `memory slot ${slot}`,
      KVM_SET_USER_MEMORY_REGION,
      this.kvm.shim[IOCTL_WITH_POINTER](
        this.fd,
        KVM_SET_USER_MEMORY_REGION.request,
        region.bytes,
        region.offsetOf("userspace_addr"),
        memory,
      ),
    );
    this.#memory.push(memory); // KVM holds the address: keep the buffer alive as long as the VM
    this.#slots.set(slot, { gpa, length: memory.byteLength });
  }

  /**
   * The CPUs' dirty log of `slot` (registered with `logDirty`): each read is `KVM_GET_DIRTY_LOG`, which returns the
   * pages the guest wrote since the previous read and re-arms the log. The shim lets the kernel write only as many
   * bytes as the slot it recorded needs.
   */
  dirtyLog(slot: number): CpuDirtyLog {
    const s = this.#slots.get(slot);
    if (!s) throw new RangeError(`memory slot ${slot} was not set on this VM`);
    const args = KvmDirtyLog.buffer().set("slot", slot);
    const shim = this.kvm.shim, fd = this.fd;
    return {
      gpa: s.gpa,
      length: s.length,
      pageSize: 4096,
      read(into: DirtyBitmap): void {
        if (into.iova !== s.gpa || into.length !== s.length || into.pageSize !== 4096) {
          throw new RangeError(`the dirty log of slot ${slot} is read into a bitmap of the whole slot at 4 KiB`);
        }
        check(
          `dirty log of slot ${slot}`,
          KVM_GET_DIRTY_LOG,
          shim[IOCTL_WITH_POINTER](
            fd,
            KVM_GET_DIRTY_LOG.request,
            args.bytes,
            args.offsetOf("dirty_bitmap"),
            into.bytes,
          ),
        );
      },
    };
  }

  /** PIC + IOAPIC + LAPIC in the kernel, then the PIT (its speaker port answered in the kernel too). */
  createIrqchipAndPit(): void {
    const shim = this.kvm.shim;
    check("in-kernel irqchip", KVM_CREATE_IRQCHIP, shim[IOCTL](this.fd, KVM_CREATE_IRQCHIP.request, null));
    const pit = KvmPitConfig.buffer().set("flags", 1); // KVM_PIT_SPEAKER_DUMMY
    check("in-kernel PIT", KVM_CREATE_PIT2, shim[IOCTL](this.fd, KVM_CREATE_PIT2.request, pit.bytes));
  }

  /** Set GSI `irq` to `level` (ISA IRQs reach the PIC and the IOAPIC). */
  irqLine(irq: number, level: 0 | 1): void {
    const v = new DataView(this.#irq.buffer);
    v.setUint32(0, irq, true);
    v.setUint32(4, level, true);
    check(`IRQ ${irq} level ${level}`, KVM_IRQ_LINE, this.kvm.shim[IOCTL](this.fd, KVM_IRQ_LINE.request, this.#irq));
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

  /**
   * The VM's vCPU 0, its `kvm_run` page mapped; a failure leaves nothing open. One vCPU: `KVM_CREATE_VCPU` takes the
   * id as its integer argument, and the shim passes 0 (a null pointer) only — a second vCPU is a `RangeError`.
   */
  createVcpu(): KvmVcpu {
    const shim = this.kvm.shim;
    if (this.#vcpu) throw new RangeError("this VM has its vCPU (the shim creates vCPU 0 only)");
    const fd = check("create vCPU 0", KVM_CREATE_VCPU, shim[IOCTL](this.fd, KVM_CREATE_VCPU.request, null));
    let run: Uint8Array;
    try {
      run = shim.sharedAlignedBuffer(this.kvm.vcpuMmapSize);
    } catch (e) {
      shim.close(fd);
      throw e;
    }
    const r = shim.mapFixed(run, fd, 0);
    if (r < 0) {
      shim.close(fd);
      throw new KvmError("map vCPU 0's kvm_run", undefined, r);
    }
    const vcpu = new KvmVcpu(shim, fd, run, true);
    this.#vcpu = vcpu;
    return vcpu;
  }

  /** Close the vCPU, then the VM fd (once); the memory buffers are released. */
  [Symbol.dispose](): void {
    if (this.#closed) return;
    this.#closed = true;
    const stack = new DisposableStack();
    stack.defer(() => this.kvm.shim.close(this.fd));
    if (this.#vcpu) stack.use(this.#vcpu);
    stack.dispose();
    this.#memory.length = 0;
  }
}

/** A segment register as KVM takes it (`struct kvm_segment`). */
export interface Segment {
  /** Base address. */
  base: number;
  /** Limit. */
  limit: number;
  /** Selector. */
  selector: number;
  /** Descriptor type. */
  type: number;
  /** P. */
  present: number;
  /** DPL. */
  dpl: number;
  /** D/B. */
  db: number;
  /** S (code/data, not system). */
  s: number;
  /** L (64-bit code). */
  l: number;
  /** G (4 KiB granularity). */
  g: number;
}

/** The 64-bit entry state of the Linux x86 boot protocol (Documentation/arch/x86/boot.rst). */
export interface LongModeEntry {
  /** Where to start (the kernel's 64-bit entry). */
  readonly rip: number;
  /** RSI: the address of `boot_params`. */
  readonly rsi: number;
  /** CR3: identity page tables. */
  readonly cr3: number;
  /** GDT base. */
  readonly gdtBase: number;
  /** GDT limit. */
  readonly gdtLimit: number;
  /** CS. */
  readonly code: Segment;
  /** DS, ES, FS, GS, SS. */
  readonly data: Segment;
  /** TR. */
  readonly tss: Segment;
}

/**
 * A vCPU; `run` is its `kvm_run` page. Made by {@linkcode KvmVm.createVcpu}, or taken over in a vCPU Worker with
 * {@linkcode KvmVcpu.inWorker} (the fd and the page belong to the VM's thread, which closes them).
 */
export class KvmVcpu implements Disposable {
  #closed = false;
  /** Vcpu `fd` and its mapped `run` page; `owned`: this object closes them. */
  constructor(
    /** The shim the fd belongs to. */
    readonly shim: NativeShim,
    /** The vCPU fd. */
    readonly fd: number,
    /** The `kvm_run` page. */
    readonly run: Uint8Array,
    /** Whether disposing this object unmaps the page and closes the fd. */
    readonly owned: boolean,
  ) {}

  /** The vCPU `fd` with its `run` page, in a Worker that runs it: disposing it closes nothing. */
  static inWorker(shim: NativeShim, fd: number, run: Uint8Array): KvmVcpu {
    return new KvmVcpu(shim, fd, run, false);
  }

  /**
   * One `KVM_RUN`: 0 at an exit userspace must handle (read it from {@linkcode KvmVcpu.run}), else `-errno` (EINTR at
   * a kick). Allocates nothing and throws only if the shim no longer holds the fd (a `ShimRefusedError`): the vCPU
   * loop's hot path.
   */
  runOnce(): number {
    const r = this.shim[IOCTL](this.fd, KVM_RUN.request, null);
    return r < 0 ? r : 0;
  }

  /** Set the CPUID the guest sees (`KVM_SET_CPUID2`). */
  setCpuid(leaves: readonly CpuidLeaf[]): void {
    const size = KvmCpuidEntry2.size;
    const buf = new Uint8Array(8 + leaves.length * size);
    const v = new DataView(buf.buffer);
    v.setUint32(0, leaves.length, true);
    leaves.forEach((l, i) => {
      const at = 8 + i * size;
      [l.fn, l.index, l.flags, l.eax, l.ebx, l.ecx, l.edx].forEach((x, k) => v.setUint32(at + k * 4, x >>> 0, true));
    });
    check("set CPUID", KVM_SET_CPUID2, this.shim[IOCTL](this.fd, KVM_SET_CPUID2.request, buf));
  }

  /** Real mode at 0000:`ip`: CS base and selector 0, RFLAGS = 2 (interrupts off). */
  resetRealMode(ip: number): void {
    const sregs = KvmSregs.buffer();
    check("get sregs", KVM_GET_SREGS, this.shim[IOCTL](this.fd, KVM_GET_SREGS.request, sregs.bytes));
    sregs.setU64("cs_base", 0).set("cs_selector", 0);
    check("set sregs", KVM_SET_SREGS, this.shim[IOCTL](this.fd, KVM_SET_SREGS.request, sregs.bytes));
    const regs = KvmRegs.buffer().setU64("rip", ip).setU64("rflags", 2);
    check("set regs", KVM_SET_REGS, this.shim[IOCTL](this.fd, KVM_SET_REGS.request, regs.bytes));
  }

  /** 64-bit mode, paging on, at `entry.rip` with RSI = boot_params (the Linux x86 64-bit boot protocol). */
  enterLongMode(entry: LongModeEntry): void {
    const sregs = KvmSregs.buffer();
    check("get sregs", KVM_GET_SREGS, this.shim[IOCTL](this.fd, KVM_GET_SREGS.request, sregs.bytes));
    const bytes = sregs.bytes;
    const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const at = (name: string) => KvmSregs.layout.find((f) => f.name === name)!.offset;
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
    check("set sregs", KVM_SET_SREGS, this.shim[IOCTL](this.fd, KVM_SET_SREGS.request, bytes));
    const regs = KvmRegs.buffer().setU64("rip", entry.rip).setU64("rsi", entry.rsi).setU64("rflags", 2);
    check("set regs", KVM_SET_REGS, this.shim[IOCTL](this.fd, KVM_SET_REGS.request, regs.bytes));
  }

  /** Unmap the `kvm_run` page and close the vCPU fd (once; nothing for a Worker's view). */
  [Symbol.dispose](): void {
    if (this.#closed || !this.owned) return;
    this.#closed = true;
    this.shim.unmapFixed(this.run);
    this.shim.close(this.fd);
  }
}
