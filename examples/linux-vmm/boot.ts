/**
 * The Linux x86 64-bit boot protocol (Documentation/arch/x86/boot.rst): the bzImage's setup header, the zero page
 * (`boot_params`) with the e820 map, command line, initrd and the ACPI RSDP, an identity map for the first GiB and a
 * GDT with the boot code and data segments; the vCPU then enters the kernel's 64-bit entry at load address + 0x200.
 *
 * The bzImage is input like any other: every field used is range-checked and a bad image is a `BootError`.
 *
 * @module
 */
import type { LongModeEntry } from "../../mod.ts";

/** A bzImage the VMM cannot boot. */
export class BootError extends Error {
  override name = "BootError";
}

/** Guest-physical layout of the boot structures (below 1 MiB, away from the kernel and initrd). */
export const BOOT = {
  gdt: 0x1000,
  bootParams: 0x7000,
  pml4: 0x9000,
  pdpt: 0xa000,
  pd: 0xb000,
  cmdline: 0x20000,
  cmdlineMax: 0x10000,
  /** Where the protected-mode kernel is loaded (its 64-bit entry is 0x200 past it). */
  kernel: 0x100000,
} as const;

/** One e820 range. */
export interface E820Entry {
  readonly addr: number;
  readonly size: number;
  /** 1 RAM, 2 reserved, 3 ACPI reclaimable. */
  readonly type: 1 | 2 | 3;
}

/** What the VMM needs of the bzImage. */
export interface BzImage {
  readonly setupBytes: number;
  readonly protocol: number;
  readonly setupHeader: Uint8Array;
  readonly kernel: Uint8Array;
  readonly initSize: number;
  readonly initrdAddrMax: number;
  readonly cmdlineSize: number;
}

/** Parse a bzImage (boot protocol 2.12+ with a 64-bit entry). */
export function parseBzImage(image: Uint8Array): BzImage {
  if (image.length < 0x1000) throw new BootError(`bzImage of ${image.length} bytes is too short`);
  const v = new DataView(image.buffer, image.byteOffset, image.byteLength);
  if (v.getUint32(0x202, true) !== 0x53726448) throw new BootError("no 'HdrS' magic at 0x202: not a bzImage");
  const protocol = v.getUint16(0x206, true);
  if (protocol < 0x20c) throw new BootError(`boot protocol ${protocol.toString(16)} < 2.12 has no 64-bit entry`);
  const xloadflags = v.getUint16(0x236, true);
  if (!(xloadflags & 1)) throw new BootError("XLF_KERNEL_64 clear: the kernel has no 64-bit entry");
  let setupSects = v.getUint8(0x1f1);
  if (setupSects === 0) setupSects = 4;
  const setupBytes = (setupSects + 1) * 512;
  if (setupBytes >= image.length) throw new BootError(`setup of ${setupBytes} bytes covers the whole image`);
  const headerEnd = 0x202 + v.getUint8(0x201);
  if (headerEnd > 0x290 || headerEnd <= 0x202) throw new BootError(`setup header end 0x${headerEnd.toString(16)}`);
  return {
    setupBytes,
    protocol,
    setupHeader: image.slice(0x1f1, headerEnd),
    kernel: image.subarray(setupBytes),
    initSize: v.getUint32(0x260, true),
    initrdAddrMax: v.getUint32(0x22c, true),
    cmdlineSize: protocol >= 0x206 ? v.getUint32(0x238, true) : 255,
  };
}

/** Everything the boot needs placed in guest RAM. */
export interface BootSetup {
  readonly image: BzImage;
  readonly cmdline: string;
  readonly initrd?: Uint8Array;
  readonly e820: readonly E820Entry[];
  readonly rsdp: number;
}

/** Place kernel, initrd, command line, boot_params, page tables and GDT in `ram`; returns the vCPU's entry state. */
export function placeBoot(ram: Uint8Array, setup: BootSetup): LongModeEntry & { initrdAt: number } {
  const { image } = setup;
  const v = new DataView(ram.buffer, ram.byteOffset, ram.byteLength);
  const end = BOOT.kernel + Math.max(image.kernel.length, image.initSize);
  if (end > ram.length) throw new BootError(`the kernel needs RAM up to 0x${end.toString(16)}`);
  ram.set(image.kernel, BOOT.kernel);

  // Command line.
  const cmd = new TextEncoder().encode(setup.cmdline);
  if (cmd.length + 1 > Math.min(image.cmdlineSize + 1, BOOT.cmdlineMax)) {
    throw new BootError(`command line of ${cmd.length} bytes exceeds the kernel's ${image.cmdlineSize}`);
  }
  ram.fill(0, BOOT.cmdline, BOOT.cmdline + cmd.length + 1);
  ram.set(cmd, BOOT.cmdline);

  // initrd: at the top of RAM (below initrd_addr_max), page aligned, above the kernel's decompression area.
  let initrdAt = 0;
  if (setup.initrd) {
    const top = Math.min(ram.length, image.initrdAddrMax + 1);
    initrdAt = Math.floor((top - setup.initrd.length) / 4096) * 4096;
    if (initrdAt < end) throw new BootError("no room for the initrd above the kernel");
    ram.set(setup.initrd, initrdAt);
  }

  // boot_params: zeroed, the bzImage's setup header copied in, then the loader's fields.
  const bp = BOOT.bootParams;
  ram.fill(0, bp, bp + 4096);
  ram.set(image.setupHeader, bp + 0x1f1);
  v.setUint8(bp + 0x210, 0xff); // type_of_loader: undefined loader
  v.setUint8(bp + 0x211, v.getUint8(bp + 0x211) | 0x01); // loadflags: LOADED_HIGH
  v.setUint32(bp + 0x214, BOOT.kernel, true); // code32_start
  v.setUint32(bp + 0x218, initrdAt, true); // ramdisk_image
  v.setUint32(bp + 0x21c, setup.initrd?.length ?? 0, true); // ramdisk_size
  v.setUint32(bp + 0x228, BOOT.cmdline, true); // cmd_line_ptr
  v.setUint32(bp + 0x070, setup.rsdp, true); // acpi_rsdp_addr (protocol 2.14)
  if (setup.e820.length > 128) throw new BootError("more than 128 e820 entries");
  v.setUint8(bp + 0x1e8, setup.e820.length);
  setup.e820.forEach((e, i) => {
    const at = bp + 0x2d0 + i * 20;
    v.setUint32(at, e.addr % 2 ** 32, true);
    v.setUint32(at + 4, Math.floor(e.addr / 2 ** 32), true);
    v.setUint32(at + 8, e.size % 2 ** 32, true);
    v.setUint32(at + 12, Math.floor(e.size / 2 ** 32), true);
    v.setUint32(at + 16, e.type, true);
  });

  // Identity map of the first GiB with 2 MiB pages (the kernel builds its own tables at once).
  ram.fill(0, BOOT.pml4, BOOT.pd + 4096);
  v.setUint32(BOOT.pml4, BOOT.pdpt | 3, true);
  v.setUint32(BOOT.pdpt, BOOT.pd | 3, true);
  for (let i = 0; i < 512; i++) v.setUint32(BOOT.pd + i * 8, (i << 21) | 0x83, true); // P | RW | PS

  // GDT: null, null, __BOOT_CS (0x10, 64-bit code), __BOOT_DS (0x18), a TSS (0x20) for TR.
  const gdt = [0n, 0n, 0x00af9b000000ffffn, 0x00cf93000000ffffn, 0x00008b0000000fffn];
  gdt.forEach((d, i) => v.setBigUint64(BOOT.gdt + i * 8, d, true));
  const flat = { base: 0, limit: 0xffffffff, present: 1, dpl: 0, s: 1, g: 1 };
  return {
    rip: BOOT.kernel + 0x200,
    rsi: bp,
    cr3: BOOT.pml4,
    gdtBase: BOOT.gdt,
    gdtLimit: gdt.length * 8 - 1,
    code: { ...flat, selector: 0x10, type: 11, db: 0, l: 1 },
    data: { ...flat, selector: 0x18, type: 3, db: 1, l: 0 },
    tss: { base: 0, limit: 0xfff, selector: 0x20, type: 11, present: 1, dpl: 0, db: 0, s: 0, l: 0, g: 0 },
    initrdAt,
  };
}
