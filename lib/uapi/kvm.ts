/**
 * `include/uapi/linux/kvm.h` and x86's `asm/kvm.h` (Linux 7.3): the few KVM calls a minimal VMM needs to run a
 * real-mode guest — create a VM and a vCPU, give it memory, set its registers, run it and read why it exited — and
 * the few more a VMM booting Linux needs: the in-kernel interrupt controllers and PIT, a GSI level or an MSI, and
 * the vCPU's CPUID. The mini-VMM (examples/mini-vmm/) and the Linux-guest VMM (examples/linux-vmm/) are their users;
 * iommu-relay itself never touches KVM.
 *
 * @module
 */
import { defineStruct, type Struct } from "./struct.ts";
import { type ConstantGroup, defineConstants, defineIoctl, io, type Ioctl, ior, iow, iowr } from "./ioctl.ts";

const H = "linux/kvm.h";

/** The declaration of `kvm_base` behind {@linkcode KvmBase}: its one definition. */
export const KvmBaseDeclaration = {
  name: "kvm_base",
  header: H,
  since: "2.6.20",
  values: { KVMIO: 0xae, KVM_API_VERSION: 12 } as const,
} as const;

/** `KVMIO` and the API version KVM has answered since 2.6.22. */
export const KvmBase: ConstantGroup<typeof KvmBaseDeclaration.values> = defineConstants(KvmBaseDeclaration);

/** The declaration of `kvm_exit_reason` behind {@linkcode KvmExitReason}: its one definition. */
export const KvmExitReasonDeclaration = {
  name: "kvm_exit_reason",
  header: H,
  since: "2.6.20",
  values: {
    KVM_EXIT_UNKNOWN: 0,
    KVM_EXIT_EXCEPTION: 1,
    KVM_EXIT_IO: 2,
    KVM_EXIT_HLT: 5,
    KVM_EXIT_MMIO: 6,
    KVM_EXIT_SHUTDOWN: 8,
    KVM_EXIT_FAIL_ENTRY: 9,
    KVM_EXIT_INTR: 10,
    KVM_EXIT_INTERNAL_ERROR: 17,
    KVM_EXIT_IO_IN: 0,
    KVM_EXIT_IO_OUT: 1,
  } as const,
} as const;

/** `kvm_run.exit_reason` values the mini-VMM handles (anything else stops the vCPU, named). */
export const KvmExitReason: ConstantGroup<typeof KvmExitReasonDeclaration.values> = defineConstants(
  KvmExitReasonDeclaration,
);

/** The declaration of `struct kvm_userspace_memory_region` behind {@linkcode KvmUserspaceMemoryRegion}: its one definition. */
export const KvmUserspaceMemoryRegionLayout = {
  name: "kvm_userspace_memory_region",
  since: "2.6.29",
  header: H,
  size: 32,
  doc: "One memory slot: guest-physical [guest_phys_addr, +memory_size) is backed by userspace_addr.",
  fields: {
    slot: { type: "u32", offset: 0, doc: "slot number (address space in bits 31:16)" },
    flags: { type: "u32", offset: 4, flags: { KVM_MEM_LOG_DIRTY_PAGES: 1, KVM_MEM_READONLY: 2 }, doc: "KVM_MEM_*" },
    guest_phys_addr: { type: "u64", offset: 8, doc: "guest-physical start, page aligned" },
    memory_size: { type: "u64", offset: 16, doc: "bytes, a page multiple; 0 deletes the slot" },
    userspace_addr: { type: "u64", offset: 24, doc: "process address of the backing memory, page aligned" },
  },
} as const;

/** `struct kvm_userspace_memory_region`: back a guest-physical range with process memory. */
export const KvmUserspaceMemoryRegion: Struct<typeof KvmUserspaceMemoryRegionLayout.fields> = defineStruct(
  KvmUserspaceMemoryRegionLayout,
);

/** The declaration of `kvm_mem_flags` behind {@linkcode KvmMemFlags}: its one definition. */
export const KvmMemFlagsDeclaration = {
  name: "kvm_mem_flags",
  header: H,
  since: "2.6.29",
  values: { KVM_MEM_LOG_DIRTY_PAGES: 1 << 0, KVM_MEM_READONLY: 1 << 1 } as const,
} as const;

/** `KVM_MEM_*` flags of a memory slot: log the guest's writes (dirty pages), or read-only. */
export const KvmMemFlags: ConstantGroup<typeof KvmMemFlagsDeclaration.values> = defineConstants(
  KvmMemFlagsDeclaration,
);

/** The declaration of `struct kvm_dirty_log` behind {@linkcode KvmDirtyLog}: its one definition. */
export const KvmDirtyLogLayout = {
  name: "kvm_dirty_log",
  since: "2.6.20",
  header: H,
  size: 16,
  doc: "A memory slot's dirty log: one bit per 4 KiB page of the slot (rounded up to 64 bits), read and re-armed.",
  fields: {
    slot: { type: "u32", offset: 0, doc: "slot number (address space in bits 31:16)" },
    padding1: { type: "u32", offset: 4, reserved: true, doc: "0" },
    dirty_bitmap: {
      type: "u64",
      offset: 8,
      c: "padding2",
      doc: "user pointer to the bitmap (a union with padding2, which is what the golden check compares)",
    },
  },
} as const;

/** `struct kvm_dirty_log`: where KVM_GET_DIRTY_LOG writes a slot's bitmap. */
export const KvmDirtyLog: Struct<typeof KvmDirtyLogLayout.fields> = defineStruct(KvmDirtyLogLayout);

/** The declaration of `struct kvm_regs` behind {@linkcode KvmRegs}: its one definition. */
export const KvmRegsLayout = {
  name: "kvm_regs",
  since: "2.6.20",
  header: "asm/kvm.h",
  size: 144,
  doc: "General-purpose registers of a vCPU (KVM_GET_REGS / KVM_SET_REGS).",
  fields: {
    rax: { type: "u64", offset: 0, doc: "RAX" },
    rbx: { type: "u64", offset: 8, doc: "RBX" },
    rcx: { type: "u64", offset: 16, doc: "RCX" },
    rdx: { type: "u64", offset: 24, doc: "RDX" },
    rsi: { type: "u64", offset: 32, doc: "RSI" },
    rdi: { type: "u64", offset: 40, doc: "RDI" },
    rsp: { type: "u64", offset: 48, doc: "RSP" },
    rbp: { type: "u64", offset: 56, doc: "RBP" },
    rip: { type: "u64", offset: 128, doc: "RIP: where the vCPU resumes" },
    rflags: { type: "u64", offset: 136, doc: "RFLAGS (bit 1 always set)" },
  },
} as const;

/** `struct kvm_regs` (x86): the general-purpose registers, RIP and RFLAGS. */
export const KvmRegs: Struct<typeof KvmRegsLayout.fields> = defineStruct(KvmRegsLayout);

/** The declaration of `struct kvm_sregs` behind {@linkcode KvmSregs}: its one definition. */
export const KvmSregsLayout = {
  name: "kvm_sregs",
  since: "2.6.20",
  header: "asm/kvm.h",
  size: 312,
  doc: "Segment and control registers of a vCPU (KVM_GET_SREGS / KVM_SET_SREGS); read, edit, write back.",
  fields: {
    cs_base: { type: "u64", offset: 0, c: "cs.base", doc: "CS base: real-mode code runs at base + IP" },
    cs_limit: { type: "u32", offset: 8, c: "cs.limit", doc: "CS limit" },
    cs_selector: { type: "u16", offset: 12, c: "cs.selector", doc: "CS selector (base >> 4 in real mode)" },
    ds_base: { type: "u64", offset: 24, c: "ds.base", doc: "DS base" },
    ds_selector: { type: "u16", offset: 36, c: "ds.selector", doc: "DS selector" },
    es_base: { type: "u64", offset: 48, c: "es.base", doc: "ES (a kvm_segment at 48)" },
    fs_base: { type: "u64", offset: 72, c: "fs.base", doc: "FS (a kvm_segment at 72)" },
    gs_base: { type: "u64", offset: 96, c: "gs.base", doc: "GS (a kvm_segment at 96)" },
    ss_base: { type: "u64", offset: 120, c: "ss.base", doc: "SS (a kvm_segment at 120)" },
    tr_base: { type: "u64", offset: 144, c: "tr.base", doc: "TR (a kvm_segment at 144)" },
    ldt_base: { type: "u64", offset: 168, c: "ldt.base", doc: "LDTR (a kvm_segment at 168)" },
    gdt_base: { type: "u64", offset: 192, c: "gdt.base", doc: "GDTR (a kvm_dtable at 192)" },
    idt_base: { type: "u64", offset: 208, c: "idt.base", doc: "IDTR (a kvm_dtable at 208)" },
    cr0: { type: "u64", offset: 224, doc: "CR0; PE (bit 0) clear in real mode" },
    cr3: { type: "u64", offset: 240, doc: "CR3: the page-table root" },
    cr4: { type: "u64", offset: 248, doc: "CR4 (PAE is bit 5)" },
    efer: { type: "u64", offset: 264, doc: "EFER (LME bit 8, LMA bit 10)" },
    apic_base: { type: "u64", offset: 272, doc: "the APIC base MSR" },
  },
} as const;

/**
 * `struct kvm_sregs` (x86), the part a real-mode VMM touches: the code segment (a reset vCPU starts at
 * F000:FFF0 with base 0xffff0000) and CR0, whose PE bit says whether the guest is still in real mode.
 */
export const KvmSregs: Struct<typeof KvmSregsLayout.fields> = defineStruct(KvmSregsLayout);

/** The declaration of `struct kvm_segment` behind {@linkcode KvmSegment}: its one definition. */
export const KvmSegmentLayout = {
  name: "kvm_segment",
  since: "2.6.20",
  header: "asm/kvm.h",
  size: 24,
  doc: "A segment register: base, limit, selector and the descriptor's attribute bits, one byte each.",
  fields: {
    base: { type: "u64", offset: 0, doc: "base address" },
    limit: { type: "u32", offset: 8, doc: "limit in bytes (already scaled by G)" },
    selector: { type: "u16", offset: 12, doc: "selector" },
    type: { type: "u8", offset: 14, doc: "descriptor type (e.g. 11: execute/read, accessed; 3: read/write, accessed)" },
    present: { type: "u8", offset: 15, doc: "P" },
    dpl: { type: "u8", offset: 16, doc: "DPL" },
    db: { type: "u8", offset: 17, doc: "D/B (0 for 64-bit code)" },
    s: { type: "u8", offset: 18, doc: "S: code or data (1), system (0)" },
    l: { type: "u8", offset: 19, doc: "L: 64-bit code" },
    g: { type: "u8", offset: 20, doc: "G: 4 KiB granularity" },
    avl: { type: "u8", offset: 21, doc: "AVL" },
    unusable: { type: "u8", offset: 22, doc: "unusable (a null selector)" },
    padding: { type: "u8", offset: 23, reserved: true, doc: "padding" },
  },
} as const;

/** `struct kvm_segment` (x86): one segment register as KVM_GET_SREGS / KVM_SET_SREGS carry it (8 of them, from 0). */
export const KvmSegment: Struct<typeof KvmSegmentLayout.fields> = defineStruct(KvmSegmentLayout);

/** The declaration of `struct kvm_dtable` behind {@linkcode KvmDtable}: its one definition. */
export const KvmDtableLayout = {
  name: "kvm_dtable",
  since: "2.6.20",
  header: "asm/kvm.h",
  size: 16,
  doc: "A descriptor-table register: base and limit.",
  fields: {
    base: { type: "u64", offset: 0, doc: "base address" },
    limit: { type: "u16", offset: 8, doc: "limit (bytes - 1)" },
    padding: { type: "u16", offset: 10, count: 3, reserved: true, doc: "padding" },
  },
} as const;

/** `struct kvm_dtable` (x86): GDTR or IDTR. */
export const KvmDtable: Struct<typeof KvmDtableLayout.fields> = defineStruct(KvmDtableLayout);

/** The declaration of `struct kvm_run` behind {@linkcode KvmRun}: its one definition. */
export const KvmRunLayout = {
  name: "kvm_run",
  since: "2.6.20",
  header: H,
  size: 2352,
  doc: "Why KVM_RUN returned. Mapped (KVM_GET_VCPU_MMAP_SIZE bytes) from the vCPU fd; the exit union is below.",
  fields: {
    request_interrupt_window: { type: "u8", offset: 0, doc: "in: exit when the guest can take an interrupt" },
    immediate_exit: { type: "u8", offset: 1, doc: "in: return -EINTR at once instead of entering the guest" },
    exit_reason: { type: "u32", offset: 8, doc: "out: KVM_EXIT_*" },
    ready_for_interrupt_injection: { type: "u8", offset: 12, doc: "out" },
    if_flag: { type: "u8", offset: 13, doc: "out: the guest's RFLAGS.IF" },
    flags: { type: "u16", offset: 14, doc: "out: KVM_RUN_X86_*" },
    cr8: { type: "u64", offset: 16, doc: "in/out: CR8" },
    apic_base: { type: "u64", offset: 24, doc: "in/out: APIC base MSR" },
  },
} as const;

/** `struct kvm_run`: the page shared with KVM, mapped from the vCPU fd; the header part every exit fills. */
export const KvmRun: Struct<typeof KvmRunLayout.fields> = defineStruct(KvmRunLayout);

/** The declaration of `struct kvm_run.io` behind {@linkcode KvmRunIo}: its one definition. */
export const KvmRunIoLayout = {
  name: "kvm_run.io",
  cType: "struct kvm_run",
  since: "2.6.20",
  header: H,
  size: 2352,
  doc: "The io arm of kvm_run's exit union.",
  fields: {
    direction: { type: "u8", offset: 32, c: "io.direction", doc: "KVM_EXIT_IO_IN (0) or KVM_EXIT_IO_OUT (1)" },
    size: { type: "u8", offset: 33, c: "io.size", doc: "bytes per access: 1, 2 or 4" },
    port: { type: "u16", offset: 34, c: "io.port", doc: "the I/O port" },
    count: { type: "u32", offset: 36, c: "io.count", doc: "accesses (string instructions repeat)" },
    data_offset: { type: "u64", offset: 40, c: "io.data_offset", doc: "where in the kvm_run mapping the data is" },
  },
} as const;

/** `kvm_run.io` (KVM_EXIT_IO): a port access; the data lives in the mapping at `data_offset`. */
export const KvmRunIo: Struct<typeof KvmRunIoLayout.fields> = defineStruct(KvmRunIoLayout);

/** The declaration of `struct kvm_run.mmio` behind {@linkcode KvmRunMmio}: its one definition. */
export const KvmRunMmioLayout = {
  name: "kvm_run.mmio",
  cType: "struct kvm_run",
  since: "2.6.20",
  header: H,
  size: 2352,
  doc: "The mmio arm of kvm_run's exit union. For a read, the VMM fills `data` before the next KVM_RUN.",
  fields: {
    phys_addr: { type: "u64", offset: 32, c: "mmio.phys_addr", doc: "guest-physical address accessed" },
    data: { type: "u8", offset: 40, count: 8, c: "mmio.data", doc: "bytes written, or to be read" },
    len: { type: "u32", offset: 48, c: "mmio.len", doc: "access width in bytes (1..8)" },
    is_write: { type: "u8", offset: 52, c: "mmio.is_write", doc: "1 for a write" },
  },
} as const;

/** `kvm_run.mmio` (KVM_EXIT_MMIO): an access to guest-physical memory no slot backs. */
export const KvmRunMmio: Struct<typeof KvmRunMmioLayout.fields> = defineStruct(KvmRunMmioLayout);

/** The declaration of `struct kvm_run.fail_entry` behind {@linkcode KvmRunFailure}: its one definition. */
export const KvmRunFailureLayout = {
  name: "kvm_run.fail_entry",
  cType: "struct kvm_run",
  since: "2.6.20",
  header: H,
  size: 2352,
  doc: "The fail_entry and internal arms of kvm_run's exit union, which overlap.",
  fields: {
    hardware_entry_failure_reason: {
      type: "u64",
      offset: 32,
      c: "fail_entry.hardware_entry_failure_reason",
      doc: "VMX/SVM entry failure code",
    },
    suberror: {
      type: "u32",
      offset: 32,
      c: "internal.suberror",
      aliasOf: "hardware_entry_failure_reason",
      doc: "KVM_INTERNAL_ERROR_*",
    },
  },
} as const;

/** `kvm_run.fail_entry` (KVM_EXIT_FAIL_ENTRY) and `kvm_run.internal` (KVM_EXIT_INTERNAL_ERROR): why it stopped. */
export const KvmRunFailure: Struct<typeof KvmRunFailureLayout.fields> = defineStruct(KvmRunFailureLayout);

/** The declaration of `struct kvm_cpuid_entry2` behind {@linkcode KvmCpuidEntry2}: its one definition. */
export const KvmCpuidEntry2Layout = {
  name: "kvm_cpuid_entry2",
  since: "2.6.25",
  header: H,
  size: 40,
  doc: "One CPUID leaf as KVM_GET_SUPPORTED_CPUID reports and KVM_SET_CPUID2 takes it.",
  fields: {
    function: { type: "u32", offset: 0, doc: "EAX in: the leaf" },
    index: { type: "u32", offset: 4, doc: "ECX in: the subleaf" },
    flags: {
      type: "u32",
      offset: 8,
      flags: { KVM_CPUID_FLAG_SIGNIFCANT_INDEX: 1, KVM_CPUID_FLAG_STATEFUL_FUNC: 2, KVM_CPUID_FLAG_STATE_READ_NEXT: 4 },
      doc: "KVM_CPUID_FLAG_*",
    },
    eax: { type: "u32", offset: 12, doc: "EAX out" },
    ebx: { type: "u32", offset: 16, doc: "EBX out" },
    ecx: { type: "u32", offset: 20, doc: "ECX out" },
    edx: { type: "u32", offset: 24, doc: "EDX out" },
    padding: { type: "u32", offset: 28, count: 3, reserved: true, doc: "padding" },
  },
} as const;

/** `struct kvm_cpuid_entry2`: one CPUID leaf (function, index) and its four registers. */
export const KvmCpuidEntry2: Struct<typeof KvmCpuidEntry2Layout.fields> = defineStruct(KvmCpuidEntry2Layout);

/** The declaration of `struct kvm_cpuid2` behind {@linkcode KvmCpuid2}: its one definition. */
export const KvmCpuid2Layout = {
  name: "kvm_cpuid2",
  since: "2.6.25",
  header: H,
  size: 8,
  doc: "nent, then a flexible array of kvm_cpuid_entry2 (40 bytes each) from offset 8.",
  fields: {
    nent: { type: "u32", offset: 0, doc: "entries that follow (in: room for; out: filled)" },
    padding: { type: "u32", offset: 4, reserved: true, doc: "padding" },
  },
} as const;

/** `struct kvm_cpuid2`: the header of a CPUID list; `nent` entries of kvm_cpuid_entry2 follow at offset 8. */
export const KvmCpuid2: Struct<typeof KvmCpuid2Layout.fields> = defineStruct(KvmCpuid2Layout);

/** The declaration of `struct kvm_pit_config` behind {@linkcode KvmPitConfig}: its one definition. */
export const KvmPitConfigLayout = {
  name: "kvm_pit_config",
  since: "2.6.31",
  header: H,
  size: 64,
  doc: "Flags of the in-kernel i8254 PIT.",
  fields: {
    flags: { type: "u32", offset: 0, flags: { KVM_PIT_SPEAKER_DUMMY: 1 }, doc: "KVM_PIT_SPEAKER_DUMMY: port 0x61 too" },
    pad: { type: "u32", offset: 4, count: 15, reserved: true, doc: "padding" },
  },
} as const;

/** `struct kvm_pit_config`: KVM_CREATE_PIT2's argument. */
export const KvmPitConfig: Struct<typeof KvmPitConfigLayout.fields> = defineStruct(KvmPitConfigLayout);

/** The declaration of `struct kvm_irq_level` behind {@linkcode KvmIrqLevel}: its one definition. */
export const KvmIrqLevelLayout = {
  name: "kvm_irq_level",
  since: "2.6.20",
  header: H,
  size: 8,
  doc: "Set a GSI's level on the in-kernel PIC and IOAPIC.",
  fields: {
    irq: { type: "u32", offset: 0, doc: "the GSI (ISA IRQs 0-15 reach both the PIC and the IOAPIC)" },
    level: { type: "u32", offset: 4, doc: "1 asserted, 0 deasserted" },
  },
} as const;

/** `struct kvm_irq_level`: KVM_IRQ_LINE's argument. */
export const KvmIrqLevel: Struct<typeof KvmIrqLevelLayout.fields> = defineStruct(KvmIrqLevelLayout);

/** The declaration of `struct kvm_msi` behind {@linkcode KvmMsi}: its one definition. */
export const KvmMsiLayout = {
  name: "kvm_msi",
  since: "3.5",
  header: H,
  size: 32,
  doc: "One message-signalled interrupt, as a device would write it (address, data).",
  fields: {
    address_lo: { type: "u32", offset: 0, doc: "MSI address, low half (0xfeeXXXXX)" },
    address_hi: { type: "u32", offset: 4, doc: "MSI address, high half" },
    data: { type: "u32", offset: 8, doc: "MSI data (vector, delivery mode)" },
    flags: { type: "u32", offset: 12, flags: { KVM_MSI_VALID_DEVID: 1 }, doc: "KVM_MSI_VALID_DEVID" },
    devid: { type: "u32", offset: 16, doc: "requester id, with KVM_MSI_VALID_DEVID" },
    pad: { type: "u8", offset: 20, count: 12, reserved: true, doc: "padding" },
  },
} as const;

/** `struct kvm_msi`: KVM_SIGNAL_MSI's argument. */
export const KvmMsi: Struct<typeof KvmMsiLayout.fields> = defineStruct(KvmMsiLayout);

const K = KvmBase.values.KVMIO;
/** `KVM_GET_API_VERSION` = `_IO(KVMIO, 0x00)`: 12 on every kernel since 2.6.22. */
export const KVM_GET_API_VERSION: Ioctl = defineIoctl({
  name: "KVM_GET_API_VERSION",
  request: io(K, 0x00),
  struct: undefined,
  since: "2.6.20",
});
/** `KVM_CREATE_VM` = `_IO(KVMIO, 0x01)`: returns a VM fd. */
export const KVM_CREATE_VM: Ioctl = defineIoctl({
  name: "KVM_CREATE_VM",
  request: io(K, 0x01),
  struct: undefined,
  since: "2.6.20",
});
/** `KVM_GET_VCPU_MMAP_SIZE` = `_IO(KVMIO, 0x04)`: bytes to map from a vCPU fd. */
export const KVM_GET_VCPU_MMAP_SIZE: Ioctl = defineIoctl({
  name: "KVM_GET_VCPU_MMAP_SIZE",
  request: io(K, 0x04),
  struct: undefined,
  since: "2.6.20",
});
/** `KVM_CREATE_VCPU` = `_IO(KVMIO, 0x41)`: returns a vCPU fd. */
export const KVM_CREATE_VCPU: Ioctl = defineIoctl({
  name: "KVM_CREATE_VCPU",
  request: io(K, 0x41),
  struct: undefined,
  since: "2.6.20",
});
/** `KVM_GET_DIRTY_LOG` = `_IOW(KVMIO, 0x42, struct kvm_dirty_log)` on a VM: a slot's dirty pages since the last call. */
export const KVM_GET_DIRTY_LOG: Ioctl = defineIoctl({
  name: "KVM_GET_DIRTY_LOG",
  request: iow(K, 0x42, KvmDirtyLog.size),
  struct: KvmDirtyLog,
  since: "2.6.20",
});
/** `KVM_SET_USER_MEMORY_REGION` = `_IOW(KVMIO, 0x46, struct kvm_userspace_memory_region)`. */
export const KVM_SET_USER_MEMORY_REGION: Ioctl = defineIoctl({
  name: "KVM_SET_USER_MEMORY_REGION",
  request: iow(K, 0x46, KvmUserspaceMemoryRegion.size),
  struct: KvmUserspaceMemoryRegion,
  since: "2.6.29",
});
/** `KVM_SET_TSS_ADDR` = `_IO(KVMIO, 0x47)`: three pages VMX needs for real mode without unrestricted guest. */
export const KVM_SET_TSS_ADDR: Ioctl = defineIoctl({
  name: "KVM_SET_TSS_ADDR",
  request: io(K, 0x47),
  struct: undefined,
  since: "2.6.24",
});
/** `KVM_RUN` = `_IO(KVMIO, 0x80)`: run the vCPU until an exit userspace must handle. */
export const KVM_RUN: Ioctl = defineIoctl({
  name: "KVM_RUN",
  request: io(K, 0x80),
  struct: undefined,
  since: "2.6.20",
});
/** `KVM_GET_REGS` = `_IOR(KVMIO, 0x81, struct kvm_regs)`. */
export const KVM_GET_REGS: Ioctl = defineIoctl({
  name: "KVM_GET_REGS",
  request: ior(K, 0x81, KvmRegs.size),
  struct: KvmRegs,
  since: "2.6.20",
});
/** `KVM_SET_REGS` = `_IOW(KVMIO, 0x82, struct kvm_regs)`. */
export const KVM_SET_REGS: Ioctl = defineIoctl({
  name: "KVM_SET_REGS",
  request: iow(K, 0x82, KvmRegs.size),
  struct: KvmRegs,
  since: "2.6.20",
});
/** `KVM_GET_SREGS` = `_IOR(KVMIO, 0x83, struct kvm_sregs)`. */
export const KVM_GET_SREGS: Ioctl = defineIoctl({
  name: "KVM_GET_SREGS",
  request: ior(K, 0x83, KvmSregs.size),
  struct: KvmSregs,
  since: "2.6.20",
});
/** `KVM_SET_SREGS` = `_IOW(KVMIO, 0x84, struct kvm_sregs)`. */
export const KVM_SET_SREGS: Ioctl = defineIoctl({
  name: "KVM_SET_SREGS",
  request: iow(K, 0x84, KvmSregs.size),
  struct: KvmSregs,
  since: "2.6.20",
});

/** `KVM_GET_SUPPORTED_CPUID` = `_IOWR(KVMIO, 0x05, struct kvm_cpuid2)` on /dev/kvm: what a vCPU can be given. */
export const KVM_GET_SUPPORTED_CPUID: Ioctl = defineIoctl({
  name: "KVM_GET_SUPPORTED_CPUID",
  request: iowr(K, 0x05, KvmCpuid2.size),
  struct: KvmCpuid2,
  since: "2.6.25",
});
/** `KVM_CREATE_IRQCHIP` = `_IO(KVMIO, 0x60)`: the in-kernel PIC, IOAPIC and local APICs (before any vCPU). */
export const KVM_CREATE_IRQCHIP: Ioctl = defineIoctl({
  name: "KVM_CREATE_IRQCHIP",
  request: io(K, 0x60),
  struct: undefined,
  since: "2.6.20",
});
/** `KVM_IRQ_LINE` = `_IOW(KVMIO, 0x61, struct kvm_irq_level)`: set a GSI's level. */
export const KVM_IRQ_LINE: Ioctl = defineIoctl({
  name: "KVM_IRQ_LINE",
  request: iow(K, 0x61, KvmIrqLevel.size),
  struct: KvmIrqLevel,
  since: "2.6.20",
});
/** `KVM_CREATE_PIT2` = `_IOW(KVMIO, 0x77, struct kvm_pit_config)`: the in-kernel i8254 (after the irqchip). */
export const KVM_CREATE_PIT2: Ioctl = defineIoctl({
  name: "KVM_CREATE_PIT2",
  request: iow(K, 0x77, KvmPitConfig.size),
  struct: KvmPitConfig,
  since: "2.6.31",
});
/** `KVM_SET_CPUID2` = `_IOW(KVMIO, 0x90, struct kvm_cpuid2)` on a vCPU: the CPUID leaves the guest sees. */
export const KVM_SET_CPUID2: Ioctl = defineIoctl({
  name: "KVM_SET_CPUID2",
  request: iow(K, 0x90, KvmCpuid2.size),
  struct: KvmCpuid2,
  since: "2.6.25",
});
/** `KVM_SIGNAL_MSI` = `_IOW(KVMIO, 0xa5, struct kvm_msi)`: inject an MSI (needs KVM_CAP_SIGNAL_MSI). */
export const KVM_SIGNAL_MSI: Ioctl = defineIoctl({
  name: "KVM_SIGNAL_MSI",
  request: iow(K, 0xa5, KvmMsi.size),
  struct: KvmMsi,
  since: "3.5",
});

/** Everything this module defines. */
export const KVM_UAPI = {
  structs: [
    KvmUserspaceMemoryRegion,
    KvmDirtyLog,
    KvmRegs,
    KvmSegment,
    KvmDtable,
    KvmSregs,
    KvmRun,
    KvmRunIo,
    KvmRunMmio,
    KvmRunFailure,
    KvmCpuidEntry2,
    KvmCpuid2,
    KvmPitConfig,
    KvmIrqLevel,
    KvmMsi,
  ],
  constants: [KvmBase, KvmExitReason, KvmMemFlags],
  ioctls: [
    KVM_GET_API_VERSION,
    KVM_CREATE_VM,
    KVM_GET_VCPU_MMAP_SIZE,
    KVM_CREATE_VCPU,
    KVM_SET_USER_MEMORY_REGION,
    KVM_GET_DIRTY_LOG,
    KVM_SET_TSS_ADDR,
    KVM_RUN,
    KVM_GET_REGS,
    KVM_SET_REGS,
    KVM_GET_SREGS,
    KVM_SET_SREGS,
    KVM_GET_SUPPORTED_CPUID,
    KVM_CREATE_IRQCHIP,
    KVM_IRQ_LINE,
    KVM_CREATE_PIT2,
    KVM_SET_CPUID2,
    KVM_SIGNAL_MSI,
  ],
} as const;
