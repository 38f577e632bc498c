// Guest memory over a VMM's RAM buffer: in-bounds accesses see the buffer, anything else is a RangeError and
// touches nothing.
import assert from "node:assert/strict";
import { guestMemoryOver } from "../../lib/memory/guest_memory.ts";

Deno.test("guest memory: reads and writes land at their guest-physical offset; the last byte is reachable", () => {
  const ram = new Uint8Array(64);
  const memory = guestMemoryOver(ram);
  memory.write(60, new Uint8Array([1, 2, 3, 4]));
  assert.deepEqual([...ram.subarray(60)], [1, 2, 3, 4]);
  assert.deepEqual([...memory.read(62, 2)], [3, 4]);
  const out = new Uint8Array(3);
  memory.readInto(61, out);
  assert.deepEqual([...out], [2, 3, 4]);
  assert.equal(memory.read(64, 0).length, 0, "an empty read at the end is inside");
});

Deno.test("guest memory: reads are copies, unless views are asked for", () => {
  const ram = new Uint8Array(16);
  const copy = guestMemoryOver(ram).read(0, 4);
  copy[0] = 9;
  assert.equal(ram[0], 0);
  const view = guestMemoryOver(ram, { views: true }).read(0, 4);
  ram[1] = 7;
  assert.equal(view[1], 7);
});

Deno.test("guest memory: out of range, negative, fractional and NaN addresses are RangeErrors and touch nothing", () => {
  const ram = new Uint8Array(32).fill(0xaa);
  const memory = guestMemoryOver(ram);
  for (const [gpa, n] of [[31, 2], [32, 1], [-1, 1], [0.5, 1], [NaN, 1], [2 ** 53, 1], [0, 33]]) {
    assert.throws(() => memory.read(gpa, n), RangeError, `read ${gpa}+${n}`);
    assert.throws(() => memory.readInto(gpa, new Uint8Array(n)), RangeError, `readInto ${gpa}+${n}`);
  }
  assert.throws(() => memory.read(0, -1), RangeError, "a negative length");
  for (const gpa of [31, 32, -1, 0.5, NaN]) {
    assert.throws(() => memory.write(gpa, new Uint8Array(2)), RangeError, `write ${gpa}`);
  }
  assert.ok(ram.every((b) => b === 0xaa), "no refused write changed a byte");
});
