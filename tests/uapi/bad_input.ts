// Shared by the per-module uAPI tests: feed every decoder of a module the bad inputs the foundation issue
// lists, and check each comes back as a UapiError naming the struct and the field.
import assert from "node:assert/strict";
import { type FieldSpec, type Struct, UapiError } from "../../lib/uapi/mod.ts";

type AnyStruct = Struct<Record<string, FieldSpec>>;

function expectUapiError(fn: () => unknown, struct: string, field: string, reason: string): void {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof UapiError, `expected UapiError, got ${e}`);
    assert.equal(e.struct, struct);
    assert.equal(e.field, field, `${struct}: ${e.message}`);
    assert.equal(e.reason, reason, `${struct}: ${e.message}`);
    return;
  }
  assert.fail(`${struct}.${field}: ${reason} was accepted`);
}

/** A valid encoding of `s`: size field set, everything else zero, enums at their first value. */
export function validBytes(s: AnyStruct): Uint8Array {
  const bytes = new Uint8Array(s.size);
  const view = new DataView(bytes.buffer);
  for (const f of s.layout) {
    if (f.role === "size") view.setUint32(f.offset, s.size, true);
    else if (f.values) {
      const first = Object.values(f.values)[0];
      if (f.type === "u16") view.setUint16(f.offset, first, true);
      else view.setUint32(f.offset, first, true);
    }
  }
  return bytes;
}

/** Check every bad-input rule on every struct of `structs`; returns how many cases ran. */
export function checkBadInputs(structs: readonly AnyStruct[]): number {
  let cases = 0;
  for (const s of structs) {
    const good = validBytes(s);
    s.decode(good); // the baseline is accepted
    // Short buffer.
    expectUapiError(() => s.decode(good.subarray(0, s.minSize - 1)), s.name, "(buffer)", "short-buffer");
    cases++;
    // Oversized buffer: for size-prefixed structs the in-band size no longer covers the buffer.
    const big = new Uint8Array(s.size + 8);
    big.set(good);
    expectUapiError(() => s.decode(big), s.name, "(buffer)", "oversized-buffer");
    cases++;
    if (s.sizeField) {
      const sf = s.sizeField;
      const small = good.slice();
      new DataView(small.buffer).setUint32(sf.offset, s.minSize - 1, true);
      expectUapiError(() => s.decode(small), s.name, sf.name, "size-too-small");
      const large = good.slice();
      new DataView(large.buffer).setUint32(sf.offset, s.size + 1, true);
      expectUapiError(() => s.decode(large), s.name, sf.name, "size-too-large");
      // A larger struct with a non-zero tail, as the kernel refuses with E2BIG.
      const ext = new Uint8Array(s.size + 8);
      ext.set(good);
      new DataView(ext.buffer).setUint32(sf.offset, s.size + 8, true);
      s.decode(ext);
      ext[s.size + 3] = 1;
      expectUapiError(() => s.decode(ext), s.name, "(extension)", "extension-nonzero");
      cases += 3;
    }
    for (const f of s.layout) {
      if (f.reserved) {
        const b = good.slice();
        b[f.offset + f.byteSize - 1] = 1;
        expectUapiError(() => s.decode(b), s.name, f.name, "reserved-nonzero");
        cases++;
      }
      if (f.values) {
        const b = good.slice();
        const bad = Math.max(...Object.values(f.values)) + 1;
        const v = new DataView(b.buffer);
        if (f.type === "u16") v.setUint16(f.offset, bad & 0xffff, true);
        else v.setUint32(f.offset, bad >>> 0, true);
        expectUapiError(() => s.decode(b), s.name, f.name, "unknown-value");
        cases++;
      }
      if (f.flags) {
        const b = good.slice();
        b[f.offset + (f.type === "u64" ? 7 : 3)] = 0x80; // the top bit: no flag set uses it
        expectUapiError(() => s.decode(b), s.name, f.name, "unknown-flags");
        cases++;
      }
    }
  }
  return cases;
}

/** Random and mutated inputs: the decoder may accept or reject, but a rejection is always a UapiError. */
export function fuzzDecoders(structs: readonly AnyStruct[], iterations: number, seed: number): number {
  let state = seed >>> 0;
  const next = () => (state = (Math.imul(state, 1664525) + 1013904223) >>> 0);
  let rejected = 0;
  for (let i = 0; i < iterations; i++) {
    const s = structs[next() % structs.length];
    const len = next() % 3 === 0 ? next() % (s.size * 2 + 1) : s.size;
    const b = next() % 2 === 0 ? new Uint8Array(len) : validBytes(s).slice(0, len);
    const flips = next() % 4;
    for (let k = 0; k < flips && len > 0; k++) b[next() % len] = next() & 0xff;
    try {
      s.decode(b);
    } catch (e) {
      if (!(e instanceof UapiError)) throw new Error(`seed ${seed} iteration ${i}: untyped ${e}`);
      rejected++;
    }
  }
  return rejected;
}
