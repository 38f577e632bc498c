/**
 * The mini-VMM guest's memory map and code (guest.S, assembled). Real mode: everything below 1 MiB.
 *
 * @module
 */

/** Guest-physical layout. */
export const LAYOUT = {
  /** Where the vCPU starts (CS:IP = 0000:1000). */
  code: 0x1000,
  /** Wait-status dwords the script's wait descriptors write. */
  status: 0x3000,
  /** The invalidation queue: IQA = 0x8801 (base 0x8000, 256-bit descriptors, QS=1: 8 KiB, 256 entries). */
  queue: 0x8000,
  queueBytes: 0x2000,
  /** PASID directories (one page per device) and PASID tables (one page per 64 PASIDs) the guest fills. */
  pasidDirectories: 0x4000,
  pasidTables: 0xa000,
  /** The workload script. */
  script: 0x10000,
  scriptEnd: 0xd0000,
  /** The emulated VT-d register page: not RAM, so every access exits to the VMM. */
  vtdRegisters: 0xd0000,
  /** RAM size (one slot from 0): ends where the register page begins. */
  ram: 0xd0000,
  /** The page request queue (one page: 128 page request descriptors). */
  prq: 0xc000,
  /** The port the guest reports IQH to when the queue stops with IQE. */
  iqePort: 0x511,
} as const;

/** VT-d register offsets the guest touches (VT-d spec, chapter 11). */
export const VTD_REG = {
  FSTS: 0x34,
  IQH: 0x80,
  IQH_HI: 0x84,
  IQT: 0x88,
  IQT_HI: 0x8c,
  IQA: 0x90,
  IQA_HI: 0x94,
  PQH: 0xc0,
  PQT: 0xc8,
  PQA: 0xd0,
  PRS: 0xdc,
} as const;

/** guest.S assembled with `as --32` and `objcopy -O binary -j .text` (a test reassembles and compares). */
export const GUEST_CODE_HEX =
  "fa31c08ed0bc0010b800d08ee86566c7069000018800006566c706940000000000b800108ed831f66631ff89f0c1e8048cda01c28eda83e6" +
  "0f66ad6683f80174156683f80274446683f80374606683f8047467f4ebfd66ad89c585ed74cdb800088ec0b9080066f3a581e7ff1f4d75f3" +
  "6566893e88006566a13400a81075506566a180006639f875edeba0665766ad6689c366c1eb048ec383e00f89c766ad66c1e80289c166f3a5" +
  "665fe97eff66ad89c366ad65668907e971ff66ad89c366ad6689c165668b076685c874f7e95cff6566a18000ba110566efe977ff";

/** The guest code's bytes. */
export function guestCode(): Uint8Array {
  const hex = GUEST_CODE_HEX;
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}
