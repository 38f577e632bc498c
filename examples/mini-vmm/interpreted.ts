/**
 * The guest without KVM: guest.S's loop carried out in TypeScript over the same guest RAM, with the same register
 * accesses in the same order through the same bus. Used where /dev/kvm is missing; a test runs both and compares.
 *
 * @module
 */
import { LAYOUT, VTD_REG } from "./layout.ts";
import { OP } from "./script.ts";

/** What a vCPU's MMIO and port accesses reach. */
export interface Bus {
  mmio(address: number, length: number, write: boolean, value: number): number;
  io(port: number, size: number, write: boolean, value: number): number;
}

/** How a guest run ended. */
export type GuestEnd = "halted" | "cancelled" | { readonly stopped: string };

/** Run the script at LAYOUT.script in `ram`; returns how it ended and the register accesses made (its "exits"). */
export function runInterpreted(ram: Uint8Array, bus: Bus, shouldStop: () => boolean): { end: GuestEnd; exits: number } {
  const v = new DataView(ram.buffer, ram.byteOffset, ram.byteLength);
  let exits = 0;
  const reg = (offset: number, write: boolean, value = 0) => {
    exits++;
    return bus.mmio(LAYOUT.vtdRegisters + offset, 4, write, value);
  };
  reg(VTD_REG.IQA, true, 0x8801);
  reg(VTD_REG.IQA_HI, true, 0);
  let at = LAYOUT.script, tail = 0;
  const inRam = (a: number, n: number) => a >= 0 && a + n <= ram.length;
  for (;;) {
    if (shouldStop()) return { end: "cancelled", exits };
    if (!inRam(at, 8)) return { end: { stopped: `script ran past RAM at 0x${at.toString(16)}` }, exits };
    const op = v.getUint32(at, true);
    at += 4;
    if (op === OP.DESCRIPTORS) {
      const count = v.getUint32(at, true) & 0xffff; // the guest keeps the count in a 16-bit register
      at += 4;
      if (count === 0) continue;
      if (!inRam(at, count * 32)) return { end: { stopped: "descriptors past RAM" }, exits };
      for (let i = 0; i < count; i++) {
        ram.copyWithin(LAYOUT.queue + tail, at, at + 32);
        tail = (tail + 32) & (LAYOUT.queueBytes - 1);
        at += 32;
      }
      reg(VTD_REG.IQT, true, tail);
      for (;;) {
        if (reg(VTD_REG.FSTS, false) & 0x10) {
          exits++;
          bus.io(LAYOUT.iqePort, 4, true, reg(VTD_REG.IQH, false));
          return { end: "halted", exits };
        }
        if (reg(VTD_REG.IQH, false) === tail) break;
        if (shouldStop()) return { end: "cancelled", exits };
      }
    } else if (op === OP.STORE) {
      const gpa = v.getUint32(at, true), words = (v.getUint32(at + 4, true) >>> 2) & 0xffff;
      at += 8;
      if (!inRam(gpa, words * 4) || !inRam(at, words * 4)) return { end: { stopped: "store past RAM" }, exits };
      ram.copyWithin(gpa, at, at + words * 4);
      at += words * 4;
    } else if (op === OP.WRITE_REG) {
      const offset = v.getUint32(at, true) & 0xffff, value = v.getUint32(at + 4, true);
      at += 8;
      reg(offset, true, value);
    } else if (op === OP.WAIT_REG) {
      const offset = v.getUint32(at, true) & 0xffff, mask = v.getUint32(at + 4, true);
      at += 8;
      while ((reg(offset, false) & mask) === 0) if (shouldStop()) return { end: "cancelled", exits };
    } else {
      return { end: "halted", exits };
    }
  }
}
