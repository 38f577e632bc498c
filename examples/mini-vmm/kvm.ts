/**
 * KVM objects for the mini-VMM, over iommu-relay's shim (no Deno.dlopen here): the system fd, a VM with one memory
 * slot, and vCPUs whose `kvm_run` page is mapped over a SharedArrayBuffer window so a vCPU Worker and the VMM both
 * see it as bytes. Each is disposable; a VM disposes its vCPUs first.
 *
 * @module
 */
import { IOCTL, IOCTL_WITH_POINTER, type NativeShim } from "../../ffi/native.ts";
import type { DirtyBitmap } from "../../lib/kernel/dirty.ts";
import type { CpuDirtyLog } from "../../lib/device/migration.ts";
import {
  errnoName,
  type Ioctl,
  KVM_CREATE_VCPU,
  KVM_CREATE_VM,
  KVM_GET_API_VERSION,
  KVM_GET_DIRTY_LOG,
  KVM_GET_SREGS,
  KVM_GET_VCPU_MMAP_SIZE,
  KVM_SET_REGS,
  KVM_SET_SREGS,
  KVM_SET_USER_MEMORY_REGION,
  KvmBase,
  KvmDirtyLog,
  KvmMemFlags,
  KvmRegs,
  KvmSregs,
  KvmUserspaceMemoryRegion,
} from "../../lib/uapi/mod.ts";

/** A KVM call failed: the operation, the ioctl (if any) and the errno. */
export class KvmError extends Error {
  override name = "KvmError";
  readonly errno: number;
  readonly errnoName: string;
  constructor(readonly op: string, readonly ioctl: string | undefined, result: number) {
    super(`${op}${ioctl ? ` (${ioctl})` : ""}: ${errnoName(result)} (${-result})`);
    this.errno = -result;
    this.errnoName = errnoName(result);
  }
}

function check(op: string, ioctl: Ioctl | undefined, r: number): number {
  if (r < 0) throw new KvmError(op, ioctl?.name, r);
  return r;
}

/** `/dev/kvm`. */
export class Kvm implements Disposable {
  private constructor(readonly shim: NativeShim, readonly fd: number) {}

  /** Open `path` (default /dev/kvm) and check the API version; a missing device is a KvmError with ENOENT. */
  static open(shim: NativeShim, path = "/dev/kvm"): Kvm {
    const fd = check(`open ${path}`, undefined, shim.open(path));
    const version = shim[IOCTL](fd, KVM_GET_API_VERSION.request, null);
    if (version !== KvmBase.values.KVM_API_VERSION) {
      shim.close(fd);
      throw new KvmError(`KVM API version ${version}, expected 12`, KVM_GET_API_VERSION.name, -22);
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

  /** A new VM. */
  createVm(): KvmVm {
    const fd = check("create VM", KVM_CREATE_VM, this.shim[IOCTL](this.fd, KVM_CREATE_VM.request, null));
    return new KvmVm(this, fd);
  }

  [Symbol.dispose](): void {
    this.shim.close(this.fd);
  }
}

/** A VM: memory slots and vCPUs. */
export class KvmVm implements Disposable {
  readonly #vcpus: KvmVcpu[] = [];
  readonly #memory: Uint8Array[] = [];
  constructor(readonly kvm: Kvm, readonly fd: number) {}

  readonly #slots = new Map<number, { gpa: number; length: number }>();

  /**
   * Back guest-physical [gpa, gpa + memory.length) with `memory` (page aligned: `shim.sharedAlignedBuffer`).
   * `logDirty`: register the slot with `KVM_MEM_LOG_DIRTY_PAGES`, so {@linkcode KvmVm.dirtyLog} reads the guest's
   * writes to it (what a migration copies again).
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
      this.kvm.shim[IOCTL_WITH_POINTER](this.fd, KVM_SET_USER_MEMORY_REGION.request, region.bytes, 24, memory),
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
          shim[IOCTL_WITH_POINTER](fd, KVM_GET_DIRTY_LOG.request, args.bytes, 8, into.bytes),
        );
      },
    };
  }

  /** vCPU `id` (the first vCPU of a VM is 0; KVM_CREATE_VCPU's argument is the id, passed as a null pointer for 0). */
  createVcpu(): KvmVcpu {
    if (this.#vcpus.length > 0) throw new RangeError("the mini-VMM runs one vCPU");
    const shim = this.kvm.shim;
    const fd = check("create vCPU", KVM_CREATE_VCPU, shim[IOCTL](this.fd, KVM_CREATE_VCPU.request, null));
    const size = this.kvm.vcpuMmapSize;
    const run = shim.sharedAlignedBuffer(size);
    const r = shim.mapFixed(run, fd, 0);
    if (r < 0) {
      shim.close(fd);
      throw new KvmError("map kvm_run", undefined, r);
    }
    const vcpu = new KvmVcpu(shim, fd, run);
    this.#vcpus.push(vcpu);
    return vcpu;
  }

  [Symbol.dispose](): void {
    const stack = new DisposableStack();
    stack.defer(() => this.kvm.shim.close(this.fd));
    for (const v of this.#vcpus) stack.use(v);
    stack.dispose();
    this.#memory.length = 0;
  }
}

/** A vCPU. `run` is its `kvm_run` page (on a SharedArrayBuffer). */
export class KvmVcpu implements Disposable {
  #closed = false;
  constructor(readonly shim: NativeShim, readonly fd: number, readonly run: Uint8Array) {}

  /** Real mode at 0000:`ip`: CS base and selector 0, RFLAGS = 2 (interrupts off). */
  resetRealMode(ip: number): void {
    const sregs = KvmSregs.buffer();
    check("get sregs", KVM_GET_SREGS, this.shim[IOCTL](this.fd, KVM_GET_SREGS.request, sregs.bytes));
    sregs.setU64("cs_base", 0).set("cs_selector", 0);
    check("set sregs", KVM_SET_SREGS, this.shim[IOCTL](this.fd, KVM_SET_SREGS.request, sregs.bytes));
    const regs = KvmRegs.buffer().setU64("rip", ip).setU64("rflags", 2);
    check("set regs", KVM_SET_REGS, this.shim[IOCTL](this.fd, KVM_SET_REGS.request, regs.bytes));
  }

  [Symbol.dispose](): void {
    if (this.#closed) return;
    this.#closed = true;
    this.shim.unmapFixed(this.run);
    this.shim.close(this.fd);
  }
}
