/**
 * The ACPI tables the Linux guest needs: RSDP → XSDT → FADT (+ FACS, an empty DSDT), MADT (one local APIC, the
 * IOAPIC) and DMAR (one DRHD whose device scope names the virtio device, so Linux's intel-iommu driver translates its
 * DMA). The DSDT describes no PCI host bridge: the VMM boots Linux with `pci=lastbus=1`, whose peer-bridge fixup scans
 * buses 0-1 through the 0xcf8/0xcfc ports (ACPI IRQ routing stays on; the device uses MSI-X, so no INTx is routed).
 *
 * @module
 */

/** The ACPI PM1 register ports the VMM answers (PM1a_CNT reads SCI_EN: ACPI mode is always on). */
export const ACPI_PM = { evt: 0x600, cnt: 0x604 } as const;

/** Where each table goes and what it describes. */
export interface AcpiLayout {
  /** Guest-physical base of the table area (RSDP first, 16-byte aligned). */
  readonly base: number;
  readonly ioapic: number;
  readonly vtdRegisters: number;
  /** The device the DRHD scope names: bus 0, device, function. */
  readonly device: { readonly dev: number; readonly fn: number };
}

function checksum(bytes: Uint8Array, at: number, length: number, field: number): void {
  let sum = 0;
  for (let i = 0; i < length; i++) sum += bytes[at + i];
  bytes[at + field] = (256 - (sum & 0xff)) & 0xff;
}

const ascii = (s: string) => new TextEncoder().encode(s);

/** A table with the standard 36-byte header; `body` after it. */
function table(signature: string, revision: number, body: Uint8Array): Uint8Array {
  const t = new Uint8Array(36 + body.length);
  const v = new DataView(t.buffer);
  t.set(ascii(signature), 0);
  v.setUint32(4, t.length, true);
  t[8] = revision;
  t.set(ascii("IRELAY"), 10); // OEM id
  t.set(ascii("LINUXVMM"), 16); // OEM table id
  v.setUint32(24, 1, true);
  t.set(ascii("IRLY"), 28);
  v.setUint32(32, 1, true);
  t.set(body, 36);
  checksum(t, 0, t.length, 9);
  return t;
}

/** Build the tables into `ram` at `layout.base`; returns the RSDP's address and the bytes used. */
export function buildAcpi(ram: Uint8Array, layout: AcpiLayout): { rsdp: number; bytes: number } {
  let at = layout.base + 64; // the RSDP (36 bytes) first
  const place = (t: Uint8Array): number => {
    const addr = at;
    ram.set(t, addr);
    at = Math.ceil((at + t.length) / 16) * 16;
    return addr;
  };
  // DSDT: a definition block with no objects (the FADT must point at one; Linux loads it).
  const dsdt = place(table("DSDT", 2, new Uint8Array(0)));

  // FACS (firmware control; Linux maps it for the global lock and waking vector, neither used here).
  const facsBytes = new Uint8Array(64);
  facsBytes.set(ascii("FACS"), 0);
  new DataView(facsBytes.buffer).setUint32(4, 64, true);
  facsBytes[32] = 2; // version
  const facs = place(facsBytes);

  // FADT (revision 6, 276 bytes), not hardware-reduced: Linux then keeps the legacy PIC and PIT (KVM's), which it
  // calibrates the local APIC timer against. ACPI mode is fixed on (SMI_CMD 0, SCI_EN reads 1 at PM1a_CNT); the PM1
  // event block and control block are ports the VMM answers (ACPI_PM below); no PM timer, no GPE block.
  const fadtBody = new Uint8Array(276 - 36);
  const f = new DataView(fadtBody.buffer);
  const F = (offset: number) => offset - 36;
  f.setUint32(F(36), facs, true); // FIRMWARE_CTRL
  f.setUint32(F(40), dsdt, true); // DSDT (32-bit)
  f.setUint16(F(46), 9, true); // SCI_INT (nothing raises it)
  f.setUint32(F(56), ACPI_PM.evt, true); // PM1a_EVT_BLK
  f.setUint32(F(64), ACPI_PM.cnt, true); // PM1a_CNT_BLK
  f.setUint8(F(88), 4); // PM1_EVT_LEN
  f.setUint8(F(89), 2); // PM1_CNT_LEN
  f.setUint16(F(109), 1 << 2, true); // IAPC_BOOT_ARCH: VGA not present (8042 absent: bit 1 clear; MSI allowed: bit 3 clear)
  f.setUint32(F(112), (1 << 4) | (1 << 5), true); // flags: PWR_BUTTON, SLP_BUTTON (no fixed buttons)
  f.setUint8(F(131), 0); // minor version
  f.setUint32(F(140), dsdt, true); // X_DSDT low
  const fadt = place(table("FACP", 6, fadtBody));

  // MADT: local APIC address, PCAT_COMPAT; one enabled local APIC (id 0); the IOAPIC at GSI 0; IRQ 0 → GSI 2 is
  // not overridden (KVM's PIT drives GSI 0, which the in-kernel IOAPIC has on pin 0).
  const madtBody = new Uint8Array(8 + 8 + 12);
  const m = new DataView(madtBody.buffer);
  m.setUint32(0, 0xfee00000, true);
  m.setUint32(4, 1, true);
  madtBody.set([0, 8, 0, 0], 8); // processor local APIC: uid 0, APIC id 0
  m.setUint32(12, 1, true); // enabled
  madtBody.set([1, 12, 0, 0], 16); // IOAPIC id 0
  m.setUint32(20, layout.ioapic, true);
  m.setUint32(24, 0, true); // GSI base
  const madt = place(table("APIC", 5, madtBody));

  // DMAR: host address width 48 (HAW = 47), flags 0 (no interrupt remapping); one DRHD (segment 0, the register
  // page) whose scope is the one PCI endpoint (type 1) at bus 0.
  const scope = new Uint8Array(8);
  scope.set([1, 8, 0, 0, 0, 0, layout.device.dev, layout.device.fn]); // endpoint, length 8, enum id 0, start bus 0, path
  const drhd = new Uint8Array(16 + scope.length);
  const d = new DataView(drhd.buffer);
  d.setUint16(0, 0, true); // type DRHD
  d.setUint16(2, drhd.length, true);
  drhd[4] = 0; // flags: not INCLUDE_PCI_ALL — only the scope
  drhd[5] = 0; // size: 2^0 pages of registers
  d.setUint16(6, 0, true); // segment
  d.setUint32(8, layout.vtdRegisters, true);
  drhd.set(scope, 16);
  const dmarBody = new Uint8Array(12 + drhd.length);
  dmarBody[0] = 47; // host address width - 1
  dmarBody[1] = 0; // flags
  dmarBody.set(drhd, 12);
  const dmar = place(table("DMAR", 1, dmarBody));

  // XSDT, then the RSDP (revision 2) at the base.
  const entries = [fadt, madt, dmar];
  const xsdtBody = new Uint8Array(entries.length * 8);
  entries.forEach((e, i) => new DataView(xsdtBody.buffer).setUint32(i * 8, e, true));
  const xsdt = place(table("XSDT", 1, xsdtBody));
  const rsdp = new Uint8Array(36);
  const r = new DataView(rsdp.buffer);
  rsdp.set(ascii("RSD PTR "), 0);
  rsdp.set(ascii("IRELAY"), 9);
  rsdp[15] = 2;
  r.setUint32(16, 0, true); // no RSDT
  r.setUint32(20, 36, true);
  r.setUint32(24, xsdt, true);
  checksum(rsdp, 0, 20, 8);
  checksum(rsdp, 0, 36, 32);
  ram.set(rsdp, layout.base);
  return { rsdp: layout.base, bytes: at - layout.base };
}
