import assert from "node:assert/strict";
import { defineStruct, readU64Number, UapiError, writePageAddress, writeU64 } from "../../lib/uapi/mod.ts";

const Sample = defineStruct({
  name: "sample",
  since: "proposal",
  inHeaders: false,
  header: "none",
  size: 24,
  minSize: 16,
  doc: "a test struct",
  fields: {
    size: { type: "u32", offset: 0, role: "size", doc: "size" },
    kind: { type: "u16", offset: 4, values: { A: 1, B: 2 }, doc: "enum" },
    pad: { type: "u16", offset: 6, reserved: true, doc: "reserved" },
    fd: { type: "s32", offset: 8, doc: "signed" },
    flags: { type: "u32", offset: 12, flags: { X: 1, Y: 4 }, doc: "flags" },
    words: { type: "u32", offset: 16, count: 2, doc: "array" },
  },
});

Deno.test("struct: encode/decode round trip, size field defaulted", () => {
  const bytes = new Uint8Array(24);
  Sample.encode({ kind: 2, fd: -5, flags: 5, words: [7, 8] }, bytes);
  assert.deepEqual(Sample.decode(bytes), { size: 24, kind: 2, pad: 0, fd: -5, flags: 5, words: [7, 8] });
});

Deno.test("struct: encode refuses out-of-range values, unknown fields, reserved values, short targets", () => {
  const t = new Uint8Array(24);
  const reason = (r: string) => (e: unknown) => e instanceof UapiError && e.reason === r;
  assert.throws(() => Sample.encode({ fd: 2 ** 31 }, t), reason("out-of-range"));
  assert.throws(() => Sample.encode({ kind: 1.5 }, t), reason("out-of-range"));
  assert.throws(() => Sample.encode({ words: [1, 2, 3] }, t), reason("out-of-range"));
  assert.throws(() => Sample.encode({ pad: 1 }, t), reason("reserved-nonzero"));
  assert.throws(() => Sample.encode({ nope: 1 } as never, t), reason("unknown-field"));
  assert.throws(() => Sample.encode({}, new Uint8Array(8)), reason("short-buffer"));
});

Deno.test("struct: a shorter in-band size (older kernel) decodes with the missing fields zero", () => {
  const bytes = new Uint8Array(16);
  Sample.encode({ kind: 1 }, new Uint8Array(24));
  new DataView(bytes.buffer).setUint32(0, 16, true);
  new DataView(bytes.buffer).setUint16(4, 1, true);
  assert.deepEqual(Sample.decode(bytes).words, [0, 0]);
});

Deno.test("struct: layouts are checked when defined", () => {
  const def = (fields: Record<string, { type: "u32" | "u64"; offset: number; doc: string }>, size = 8) =>
    defineStruct({ name: "bad", since: "proposal", inHeaders: false, header: "none", size, doc: "", fields });
  assert.throws(() => def({ a: { type: "u64", offset: 4, doc: "" } }, 16), /misaligned/);
  assert.throws(() => def({ a: { type: "u32", offset: 8, doc: "" } }), /past the end/);
  assert.throws(
    () => def({ a: { type: "u32", offset: 0, doc: "" }, b: { type: "u32", offset: 0, doc: "" } }),
    /overlaps/,
  );
});

Deno.test("struct: StructBuffer set/get, arrays and clear", () => {
  const b = Sample.buffer();
  b.set("kind", 1).set("fd", -1).setAt("words", 1, 9);
  assert.equal(b.get("fd"), -1);
  assert.throws(() => b.setAt("words", 2, 1), UapiError);
  assert.throws(() => b.set("pad", 1), UapiError);
  b.clear();
  assert.equal(b.get("size"), 24);
  assert.equal(b.get("kind"), 0);
});

Deno.test("struct: u64 helpers split and join without BigInt", () => {
  const v = new DataView(new ArrayBuffer(8));
  writeU64(v, 0, 2 ** 53 - 1);
  assert.equal(readU64Number(v, 0), 2 ** 53 - 1);
  assert.equal(v.getBigUint64(0, true), 2n ** 53n - 1n);
});

Deno.test("writePageAddress: the integer fast path below 2^31 pages writes what the general path writes", () => {
  const general = (page: number, low: number) => BigInt(page) * 4096n + BigInt(low & 0xfff);
  const view = new DataView(new ArrayBuffer(8));
  const pages = [0, 1, 0xf_ffff, 0x10_0000, 0x7fff_ffff, 0x8000_0000, 0x8000_0001, 2 ** 40 + 7, 2 ** 52 - 1];
  for (let i = 0; i < 2000; i++) pages.push(Math.floor(Math.random() * 2 ** (1 + (i % 52))));
  for (const page of pages) {
    for (const low of [0, 0x5, 0xfff, 0x1234]) {
      writePageAddress(view, 0, page, low);
      assert.equal(
        view.getBigUint64(0, true),
        general(page, low),
        `page 0x${page.toString(16)} low 0x${low.toString(16)}`,
      );
    }
  }
});
