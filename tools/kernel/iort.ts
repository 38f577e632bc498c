/**
 * The arm64 test VM's one firmware fix: QEMU's ACPI IORT says the PCIe root complex cannot write-back snoop (its
 * Memory Access Flags lack CANWBS), and without that claim — or the SMMU's S2FWB, which QEMU's SMMUv3 does not
 * implement — Linux's arm-smmu-v3 driver refuses `IOMMU_VIOMMU_ALLOC` with EOPNOTSUPP (`arm_smmu_get_viommu_size`).
 * Under TCG every DMA is cache coherent, so the claim is true for this platform. The suite reads the guest's own
 * IORT (from `/sys/firmware/acpi/tables/IORT` on a first boot), sets CANWBS on each root complex node, raises the
 * OEM revision (Linux only takes an initrd table that is newer than the firmware's) and fixes the checksum; the
 * result goes to the kernel as `kernel/firmware/acpi/iort.aml` in an uncompressed cpio archive before the
 * initramfs (`CONFIG_ACPI_TABLE_UPGRADE`). Nothing here knows QEMU's table: it is parsed, checked and changed in
 * place, and anything unexpected is an error that names what was wrong.
 *
 * @module
 */

/** `ACPI_IORT_NODE_PCI_ROOT_COMPLEX`. */
export const IORT_NODE_ROOT_COMPLEX = 2;
/** `ACPI_IORT_MF_CANWBS`: the root complex's memory accesses are write-back cacheable and snooped (bit 2). */
export const IORT_MF_CANWBS = 1 << 2;

/** The ACPI table header's length; the IORT's own fields (node count, node offset, reserved) follow it. */
const ACPI_HEADER = 36;
/** A root complex node's Memory Access Flags: node header (16 bytes), then CCA (4), hints (1), reserved (2), flags. */
const RC_MEMORY_FLAGS = 16 + 7;

/** What {@linkcode upgradeIort} changed. */
export interface IortUpgrade {
  /** The upgraded table. */
  readonly table: Uint8Array;
  /** The OEM revision before and after. */
  readonly oemRevision: readonly [number, number];
  /** Memory Access Flags of each root complex node, before and after. */
  readonly rootComplexes: readonly { readonly offset: number; readonly flags: readonly [number, number] }[];
  /** The table's OEM ID and OEM table ID, as the kernel matches an upgrade against the firmware's (e.g. "BOCHS "). */
  readonly oemId: string;
  readonly oemTableId: string;
}

/** The byte sum of an ACPI table modulo 256: 0 for a table whose checksum is right. */
export function acpiByteSum(table: Uint8Array): number {
  let sum = 0;
  for (const b of table) sum = (sum + b) & 0xff;
  return sum;
}

/**
 * Why `table` is not a well-formed IORT, or `undefined`: signature, length, checksum, and every node inside the
 * table with a length of at least its header.
 */
export function iortProblem(table: Uint8Array): string | undefined {
  if (table.length < ACPI_HEADER + 12) return `${table.length} bytes, too short for an IORT`;
  const ascii = String.fromCharCode(...table.subarray(0, 4));
  if (ascii !== "IORT") return `signature "${ascii}", not "IORT"`;
  const v = new DataView(table.buffer, table.byteOffset, table.byteLength);
  const length = v.getUint32(4, true);
  if (length !== table.length) return `the header says ${length} bytes, the table has ${table.length}`;
  if (acpiByteSum(table) !== 0) return `checksum wrong (byte sum ${acpiByteSum(table)})`;
  const count = v.getUint32(36, true);
  let at = v.getUint32(40, true);
  for (let i = 0; i < count; i++) {
    if (at + 16 > length) return `node ${i} at ${at} runs past the table`;
    const nodeLength = v.getUint16(at + 1, true);
    if (nodeLength < 16 || at + nodeLength > length) return `node ${i} at ${at} has a bad length ${nodeLength}`;
    at += nodeLength;
  }
  return undefined;
}

/**
 * The IORT `table` with CANWBS set on every root complex node, its OEM revision raised by one and its checksum
 * fixed. Throws if the table is malformed or has no root complex node (there would be nothing to upgrade).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { acpiByteSum, upgradeIort } from "./iort.ts";
 * // A minimal IORT: the header, one root complex node with Memory Access Flags 0x3 (what QEMU 10 writes).
 * const t = new Uint8Array(48 + 36);
 * const v = new DataView(t.buffer);
 * t.set([..."IORT"].map((c) => c.charCodeAt(0)));
 * v.setUint32(4, t.length, true);
 * v.setUint32(24, 1, true); // OEM revision
 * v.setUint32(36, 1, true); // one node
 * v.setUint32(40, 48, true); // at 48
 * t[48] = 2; // root complex
 * v.setUint16(49, 36, true);
 * t[48 + 23] = 0x3;
 * t[9] = (256 - acpiByteSum(t)) & 0xff;
 * const up = upgradeIort(t);
 * assert.equal(up.table[48 + 23], 0x7);
 * assert.deepEqual(up.oemRevision, [1, 2]);
 * assert.equal(acpiByteSum(up.table), 0);
 * ```
 */
export function upgradeIort(table: Uint8Array): IortUpgrade {
  const problem = iortProblem(table);
  if (problem) throw new Error(`not a usable IORT: ${problem}`);
  const out = table.slice();
  const v = new DataView(out.buffer);
  const rootComplexes: { offset: number; flags: [number, number] }[] = [];
  let at = v.getUint32(40, true);
  for (let i = 0; i < v.getUint32(36, true); i++) {
    const nodeLength = v.getUint16(at + 1, true);
    if (out[at] === IORT_NODE_ROOT_COMPLEX) {
      if (nodeLength <= RC_MEMORY_FLAGS) throw new Error(`root complex node at ${at} is too short (${nodeLength})`);
      const before = out[at + RC_MEMORY_FLAGS];
      out[at + RC_MEMORY_FLAGS] = before | IORT_MF_CANWBS;
      rootComplexes.push({ offset: at, flags: [before, out[at + RC_MEMORY_FLAGS]] });
    }
    at += nodeLength;
  }
  if (rootComplexes.length === 0) throw new Error("the IORT has no root complex node");
  const revision = v.getUint32(24, true);
  if (revision === 0xffff_ffff) throw new Error("the IORT's OEM revision is at its maximum: it cannot be raised");
  v.setUint32(24, revision + 1, true);
  out[9] = 0;
  out[9] = (256 - acpiByteSum(out)) & 0xff;
  const text = (from: number, n: number) => String.fromCharCode(...out.subarray(from, from + n));
  return {
    table: out,
    oemRevision: [revision, revision + 1],
    rootComplexes,
    oemId: text(10, 6),
    oemTableId: text(16, 8),
  };
}
