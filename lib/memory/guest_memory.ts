/**
 * Guest-physical memory over the buffer a VMM keeps as guest RAM (guest-physical 0 at offset 0), bounds-checked: an
 * address outside it — or not an integer — is a RangeError for the caller to turn into the guest's error, never a
 * read or write past the buffer. Structurally the `GuestMemory` the front ends take and the reader shadow mode walks.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { guestMemoryOver } from "./guest_memory.ts";
 * const memory = guestMemoryOver(new Uint8Array(4096));
 * memory.write(8, new Uint8Array([1, 2]));
 * assert.deepEqual(memory.read(8, 2), new Uint8Array([1, 2]));
 * assert.throws(() => memory.read(4095, 2), { message: "guest read outside RAM: 0xfff+2" });

 * ```
 *
 * @module
 */

/** What a page-table walker needs of guest memory: reads, bounds-checked (throws outside guest RAM). */
export interface GuestMemoryReader {
  /** `length` bytes at guest-physical `gpa`; throws for anything outside guest RAM. */
  read(gpa: number, length: number): Uint8Array;
}

/** Guest-physical memory as the front ends use it: reads and writes, bounds-checked by the VMM. */
export interface GuestMemory extends GuestMemoryReader {
  /** Write `bytes` at guest-physical `gpa` (a wait's status, a queue record); throws outside guest RAM. */
  write(gpa: number, bytes: Uint8Array): void;
  /** Copy `out.length` bytes at `gpa` into `out` (optional: lets a doorbell read descriptors without allocating). */
  readInto?(gpa: number, out: Uint8Array): void;
}

/** Bounds-checked guest memory. */
export interface BoundedGuestMemory extends GuestMemory {
  /** Copy `out.length` bytes at `gpa` into `out`: a read that allocates nothing. */
  readInto(gpa: number, out: Uint8Array): void;
}

/**
 * Guest memory over `ram`. Reads return copies, or views into `ram` with `views` (no allocation per read: for walks
 * whose caller only looks before the guest runs again).
 */
export function guestMemoryOver(ram: Uint8Array, opts: { views?: boolean } = {}): BoundedGuestMemory {
  const inside = (gpa: number, n: number) => Number.isInteger(gpa) && gpa >= 0 && n >= 0 && gpa + n <= ram.length;
  const ramView = new DataView(ram.buffer, ram.byteOffset, ram.byteLength);
  // The last buffer read into and a view of it: a doorbell reads every descriptor into one scratch buffer.
  let lastOut: Uint8Array | undefined, outView = ramView;
  return {
    read: (gpa, n) => {
      if (!inside(gpa, n)) throw new RangeError(`guest read outside RAM: 0x${gpa.toString(16)}+${n}`);
      return opts.views ? ram.subarray(gpa, gpa + n) : ram.slice(gpa, gpa + n);
    },
    readInto: (gpa, out) => {
      const n = out.length;
      if (!inside(gpa, n)) throw new RangeError(`guest read outside RAM: 0x${gpa.toString(16)}+${n}`);
      if ((n & 3) === 0) {
        if (out !== lastOut) outView = new DataView(out.buffer, out.byteOffset, out.byteLength), lastOut = out;
        for (let i = 0; i < n; i += 4) outView.setUint32(i, ramView.getUint32(gpa + i, true), true);
        return;
      }
      for (let i = 0; i < n; i++) out[i] = ram[gpa + i];
    },
    write: (gpa, bytes) => {
      if (!inside(gpa, bytes.length)) throw new RangeError(`guest write outside RAM: 0x${gpa.toString(16)}`);
      ram.set(bytes, gpa);
    },
  };
}
