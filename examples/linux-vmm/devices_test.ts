// The Linux-guest VMM's devices without KVM: ACPI tables, the boot protocol, the UART and virtio-blk driven as
// Linux drives them.
import assert from "node:assert/strict";
import { buildAcpi } from "./acpi.ts";
import { BOOT, BootError, parseBzImage, placeBoot } from "./boot.ts";
import { Uart16550 } from "./uart.ts";
import { diskWord, VIRTIO_BAR, VirtioBlk } from "./virtio_blk.ts";
import { cpioNewc } from "./guest.ts";

const sum = (b: Uint8Array) => b.reduce((a, x) => (a + x) & 0xff, 0);

Deno.test("linux-vmm acpi: every table's checksum is zero; the DMAR's one DRHD names the device", () => {
  const ram = new Uint8Array(0x100000);
  const { rsdp } = buildAcpi(ram, {
    base: 0xe0000,
    ioapic: 0xfec00000,
    vtdRegisters: 0xfed90000,
    device: { dev: 1, fn: 0 },
  });
  const v = new DataView(ram.buffer);
  assert.equal(new TextDecoder().decode(ram.subarray(rsdp, rsdp + 8)), "RSD PTR ");
  assert.equal(sum(ram.subarray(rsdp, rsdp + 20)), 0);
  assert.equal(sum(ram.subarray(rsdp, rsdp + 36)), 0);
  const xsdt = v.getUint32(rsdp + 24, true);
  const tables = new Map<string, number>();
  for (let i = 0; i < (v.getUint32(xsdt + 4, true) - 36) / 8; i++) {
    const t = v.getUint32(xsdt + 36 + i * 8, true);
    tables.set(new TextDecoder().decode(ram.subarray(t, t + 4)), t);
    assert.equal(sum(ram.subarray(t, t + v.getUint32(t + 4, true))), 0);
  }
  assert.deepEqual([...tables.keys()], ["FACP", "APIC", "DMAR"]);
  const dmar = tables.get("DMAR")!;
  assert.equal(v.getUint32(dmar + 48 + 8, true), 0xfed90000, "DRHD register base");
  assert.deepEqual([...ram.subarray(dmar + 48 + 16, dmar + 48 + 24)], [1, 8, 0, 0, 0, 0, 1, 0], "endpoint 00:01.0");
  const fadt = tables.get("FACP")!;
  assert.equal(v.getUint32(fadt + 112, true) & (1 << 20), 0, "not hardware-reduced: the PIC and PIT stay");
});

Deno.test("linux-vmm boot: a bzImage's header is checked; boot_params carries the loader's fields", () => {
  assert.throws(() => parseBzImage(new Uint8Array(0x2000)), BootError);
  const image = new Uint8Array(0x3000);
  const v = new DataView(image.buffer);
  v.setUint8(0x1f1, 4);
  v.setUint8(0x201, 0x6a); // header up to 0x26c
  v.setUint32(0x202, 0x53726448, true);
  v.setUint16(0x206, 0x20f, true);
  v.setUint16(0x236, 1, true); // XLF_KERNEL_64
  v.setUint32(0x22c, 0x7fffffff, true);
  v.setUint32(0x238, 2047, true);
  v.setUint32(0x260, 0x10000, true);
  const bz = parseBzImage(image);
  assert.equal(bz.setupBytes, 5 * 512);
  const ram = new Uint8Array(32 << 20);
  const entry = placeBoot(ram, {
    image: bz,
    cmdline: "console=ttyS0",
    initrd: new Uint8Array(8192).fill(7),
    e820: [{ addr: 0, size: 0x9fc00, type: 1 }],
    rsdp: 0xe0000,
  });
  const r = new DataView(ram.buffer);
  assert.equal(entry.rip, BOOT.kernel + 0x200);
  assert.equal(entry.rsi, BOOT.bootParams);
  assert.equal(r.getUint32(BOOT.bootParams + 0x228, true), BOOT.cmdline);
  assert.equal(r.getUint32(BOOT.bootParams + 0x070, true), 0xe0000);
  assert.equal(r.getUint32(BOOT.bootParams + 0x21c, true), 8192);
  assert.equal(ram[r.getUint32(BOOT.bootParams + 0x218, true)], 7);
  assert.equal(r.getUint8(BOOT.bootParams + 0x1e8), 1);
  assert.throws(() => placeBoot(ram, { image: bz, cmdline: "x".repeat(4096), e820: [], rsdp: 0 }), BootError);
});

Deno.test("linux-vmm uart: the 8250 driver's loopback test and the THR-empty interrupt", () => {
  const lines: string[] = [], irq: number[] = [];
  const u = new Uart16550((l) => lines.push(l), (level) => irq.push(level));
  u.write(4, 0x1a); // loopback, RTS, OUT2
  assert.equal(u.read(6) & 0xf0, 0x90);
  u.write(4, 0x0b);
  u.write(1, 0x02); // THRI on: THR is empty, so the interrupt is pending at once
  assert.deepEqual(irq, [1]);
  assert.equal(u.read(2), 0xc2);
  assert.deepEqual(irq, [1, 0]);
  for (const c of "hi\n") u.write(0, c.charCodeAt(0));
  assert.deepEqual(lines, ["hi"]);
});

Deno.test("linux-vmm virtio-blk: a read and a write request through the ring, with the MSI", () => {
  const ram = new Uint8Array(1 << 20);
  const v = new DataView(ram.buffer);
  const msis: number[][] = [];
  const blk = new VirtioBlk(1 << 16, { bytes: ram }, { translate: (a) => a }, (a, d) => void msis.push([a, d]));
  blk.configWrite(0x04, 2, 0x6);
  assert.equal(blk.configRead(0x00, 4), 0x10421af4);
  blk.configWrite(0x10, 4, 0xffffffff);
  assert.equal(blk.configRead(0x10, 4), 0xffffc004, "16 KiB, 64-bit memory BAR");
  blk.configWrite(0x10, 4, VIRTIO_BAR | 4);
  blk.configWrite(0x14, 4, 0);
  const w = (off: number, value: number) => blk.mmioWrite(VIRTIO_BAR + off, 4, value);
  w(0x08, 1);
  w(0x0c, 3); // driver features word 1: VERSION_1 | ACCESS_PLATFORM
  assert.ok(blk.accessPlatform);
  blk.configWrite(0x86, 2, 0x8000); // MSI-X on
  blk.mmioWrite(VIRTIO_BAR + 0x3810, 4, 0xfee00000); // vector 1
  blk.mmioWrite(VIRTIO_BAR + 0x3818, 4, 0x31);
  blk.mmioWrite(VIRTIO_BAR + 0x381c, 4, 0); // unmasked
  w(0x16, 0);
  w(0x1a, 1);
  w(0x20, 0x10000); // desc
  w(0x28, 0x11000); // avail
  w(0x30, 0x12000); // used
  w(0x1c, 1);
  w(0x14, 0xf); // DRIVER_OK
  const desc = (i: number, addr: number, len: number, flags: number, next: number) => {
    v.setUint32(0x10000 + i * 16, addr, true);
    v.setUint32(0x10000 + i * 16 + 8, len, true);
    v.setUint16(0x10000 + i * 16 + 12, flags, true);
    v.setUint16(0x10000 + i * 16 + 14, next, true);
  };
  // Read sectors 2-9 (4 KiB) into 0x30000.
  v.setUint32(0x20000, 0, true);
  v.setUint32(0x20008, 2, true);
  desc(0, 0x20000, 16, 1, 1);
  desc(1, 0x30000, 4096, 1 | 2, 2);
  desc(2, 0x20010, 1, 2, 0);
  v.setUint16(0x11004, 0, true);
  v.setUint16(0x11002, 1, true);
  ram[0x20010] = 0xff;
  blk.mmioWrite(VIRTIO_BAR + 0x3000, 2, 0);
  assert.equal(ram[0x20010], 0, "status OK");
  assert.equal(v.getUint32(0x30000, true), diskWord(1024));
  assert.equal(v.getUint16(0x12002, true), 1);
  assert.equal(v.getUint32(0x12008, true), 4097, "used.len: data + status");
  assert.deepEqual(msis, [[0xfee00000, 0x31]]);
  // A write past the disk's end fails the request, and only it.
  v.setUint32(0x20000, 1, true);
  v.setUint32(0x20008, 200, true);
  desc(1, 0x30000, 4096, 1, 2);
  v.setUint16(0x11006, 0, true);
  v.setUint16(0x11002, 2, true);
  blk.mmioWrite(VIRTIO_BAR + 0x3000, 2, 0);
  assert.equal(ram[0x20010], 1, "IOERR");
  assert.equal(blk.stats.errors, 1);
});

Deno.test("linux-vmm guest: the initramfs is a newc cpio the kernel reads (magic, names, trailer)", () => {
  const cpio = cpioNewc([{ path: "init", mode: 0o100755, bytes: new Uint8Array([1, 2, 3]) }]);
  const text = new TextDecoder("latin1").decode(cpio);
  assert.ok(text.startsWith("070701"));
  assert.ok(text.includes("init\0") && text.includes("TRAILER!!!\0"));
  assert.equal(cpio.length % 4, 0);
});
