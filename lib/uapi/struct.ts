/**
 * Declarative layouts of kernel structs: one definition per struct (field name, type, offset, reserved
 * fields, allowed values), used to encode into caller-owned reusable buffers and to decode with validation.
 *
 * Scalars up to 32 bits are plain numbers. 64-bit fields are set from a number (exact up to 2^53, written as
 * two 32-bit halves, so no BigInt on the hot path) or a bigint, and read back as bigint.
 *
 * @module
 */
import { UapiError } from "./errors.ts";

/** Scalar C types used by the kernel uAPI headers iommu-relay speaks. */
export type ScalarType = "u8" | "u16" | "u32" | "s32" | "u64";

const SCALAR_SIZE: Record<ScalarType, number> = { u8: 1, u16: 2, u32: 4, s32: 4, u64: 8 };

/** One field of a struct, as declared in the kernel header. */
export interface FieldSpec {
  /** The C type (`__aligned_u64` and `__aligned_le64` are both `u64`; the uAPI is little-endian on every target we build for). */
  readonly type: ScalarType;
  /** Byte offset from the start of the struct. */
  readonly offset: number;
  /** Element count for an array member such as `__u32 idr[6]`. */
  readonly count?: number;
  /** The field must be zero (on encode it is always written zero; on decode non-zero is an error). */
  readonly reserved?: boolean;
  /** This field is the in-band size (`size` / `argsz`) of the struct. */
  readonly role?: "size";
  /** Allowed values (a C enum): anything else is rejected on decode. */
  readonly values?: Readonly<Record<string, number>>;
  /** Known flag bits: unknown bits are rejected on decode. */
  readonly flags?: Readonly<Record<string, number>>;
  /** The C member designator when it differs from the field name (union members, nested structs). */
  readonly c?: string;
  /** Another field this one shares its bytes with (a C union of two names). */
  readonly aliasOf?: string;
  /** What the field means. */
  readonly doc: string;
}

/** A struct definition as written in `lib/uapi/*.ts`. */
export interface StructSpec<F extends Record<string, FieldSpec>> {
  /** Unique name; `struct.variant` for one arm of a union-carrying struct (`iommu_test_cmd.mock_domain`). */
  readonly name: string;
  /** The C type the golden check compares with, e.g. `struct iommu_test_cmd`; default `struct <name>`. */
  readonly cType?: string;
  /** Kernel release that introduced this layout, or `proposal` for never-merged ones. */
  readonly since: string;
  /** `sizeof` the struct. */
  readonly size: number;
  /** For size-prefixed structs: the smallest size the kernel accepts (its `min_size`). Default: `size`. */
  readonly minSize?: number;
  /** Whether the kernel headers declare it (false for the 2017 proposals); the golden check skips it when false. */
  readonly inHeaders?: boolean;
  /** The header that declares it. */
  readonly header: string;
  /** What the struct is for. */
  readonly doc: string;
  /** Fields in declaration order. */
  readonly fields: F;
}

/** `true` when field spec `S` is a 64-bit scalar or array (read back as bigint), else `false`. */
export type IsU64<S> = S extends { type: "u64" } ? true : false;
/** `true` when field spec `S` is an array member (it has a `count`), else `false`. */
export type IsArray<S> = S extends { count: number } ? true : false;

/** Names of the scalar fields up to 32 bits. */
export type NumberField<F> =
  & {
    [K in keyof F]: IsArray<F[K]> extends true ? never : IsU64<F[K]> extends true ? never : K;
  }[keyof F]
  & string;
/** Names of the scalar 64-bit fields. */
export type U64Field<F> =
  & {
    [K in keyof F]: IsArray<F[K]> extends true ? never : IsU64<F[K]> extends true ? K : never;
  }[keyof F]
  & string;
/** Names of the array fields. */
export type ArrayField<F> = { [K in keyof F]: IsArray<F[K]> extends true ? K : never }[keyof F] & string;

/** The decoded form of a struct: numbers, bigints for 64-bit fields, arrays for array members. */
export type Decoded<F> = {
  -readonly [K in keyof F]: IsArray<F[K]> extends true ? (IsU64<F[K]> extends true ? bigint[] : number[])
    : IsU64<F[K]> extends true ? bigint
    : number;
};

/** Input to {@linkcode Struct.encode}: any subset of the fields; missing ones are zero. */
export type EncodeInput<F> = {
  [K in keyof F]?: IsArray<F[K]> extends true ? readonly (number | bigint)[]
    : IsU64<F[K]> extends true ? number | bigint
    : number;
};

const TWO_32 = 0x1_0000_0000;

/** Write an unsigned 64-bit value given as a number (must be a safe integer) or bigint. */
export function writeU64(view: DataView, offset: number, value: number | bigint): void {
  if (typeof value === "bigint") {
    view.setBigUint64(offset, value, true);
    return;
  }
  view.setUint32(offset, value % TWO_32, true);
  view.setUint32(offset + 4, Math.floor(value / TWO_32), true);
}

/**
 * Write the byte address of 4 KiB page `page` (an integer below 2^52) as a u64, without BigInt: addresses up
 * to 2^64 - 4096 are exact although most of them are not representable as a JS number. `lowBits` (below 4096) fill
 * bits 11:0, where queue records keep their flags beside the page address (VT-d page requests, SMMUv3 PRI and event
 * records).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { writePageAddress } from "./struct.ts";
 * const v = new DataView(new ArrayBuffer(8));
 * writePageAddress(v, 0, 2 ** 52 - 1, 0x5);
 * assert.equal(v.getBigUint64(0, true), 0xffff_ffff_ffff_f005n);
 * ```
 */
export function writePageAddress(view: DataView, offset: number, page: number, lowBits = 0): void {
  if (page >= 0 && page < 0x8000_0000) {
    // Below 2^31 pages (8 TiB) integer shifts do it: the hot path of every compiled VT-d and SMMUv3 entry.
    view.setUint32(offset, (((page & 0xf_ffff) << 12) | (lowBits & 0xfff)) >>> 0, true);
    view.setUint32(offset + 4, page >>> 20, true);
    return;
  }
  view.setUint32(offset, ((page % 0x10_0000) * 4096 + (lowBits & 0xfff)) >>> 0, true);
  view.setUint32(offset + 4, Math.floor(page / 0x10_0000), true);
}

/** Read an unsigned 64-bit value as a number (exact below 2^53). */
export function readU64Number(view: DataView, offset: number): number {
  return view.getUint32(offset + 4, true) * TWO_32 + view.getUint32(offset, true);
}

function checkRange(struct: string, field: string, type: ScalarType, value: number | bigint): void {
  if (typeof value === "bigint") {
    if (type !== "u64" || value < 0n || value > 0xffff_ffff_ffff_ffffn) {
      throw new UapiError(struct, field, "out-of-range", `${value} does not fit ${type}`);
    }
    return;
  }
  const ok = Number.isInteger(value) && (
    type === "u8"
      ? value >= 0 && value <= 0xff
      : type === "u16"
      ? value >= 0 && value <= 0xffff
      : type === "u32"
      ? value >= 0 && value <= 0xffff_ffff
      : type === "s32"
      ? value >= -0x8000_0000 && value <= 0x7fff_ffff
      : value >= 0 && value <= Number.MAX_SAFE_INTEGER
  );
  if (!ok) throw new UapiError(struct, field, "out-of-range", `${value} does not fit ${type}`);
}

function writeScalar(view: DataView, offset: number, type: ScalarType, value: number | bigint): void {
  switch (type) {
    case "u8":
      view.setUint8(offset, value as number);
      break;
    case "u16":
      view.setUint16(offset, value as number, true);
      break;
    case "u32":
      view.setUint32(offset, value as number, true);
      break;
    case "s32":
      view.setInt32(offset, value as number, true);
      break;
    case "u64":
      writeU64(view, offset, value);
      break;
  }
}

function readScalar(view: DataView, offset: number, type: ScalarType): number | bigint {
  switch (type) {
    case "u8":
      return view.getUint8(offset);
    case "u16":
      return view.getUint16(offset, true);
    case "u32":
      return view.getUint32(offset, true);
    case "s32":
      return view.getInt32(offset, true);
    case "u64":
      return view.getBigUint64(offset, true);
  }
}

/** A field with its derived facts, as the layout keeps it. */
export interface FieldLayout extends FieldSpec {
  /** The field's name. */
  readonly name: string;
  /** Bytes of one element. */
  readonly elementSize: number;
  /** Bytes of the whole member. */
  readonly byteSize: number;
}

/**
 * A checked struct layout. Create with {@linkcode defineStruct}.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { defineStruct } from "./struct.ts";
 * const Pair = defineStruct({
 *   name: "pair", since: "proposal", size: 8, header: "none", doc: "two numbers", inHeaders: false,
 *   fields: {
 *     a: { type: "u32", offset: 0, doc: "first" },
 *     b: { type: "u32", offset: 4, doc: "second" },
 *   },
 * });
 * const bytes = new Uint8Array(8);
 * Pair.encode({ a: 1, b: 2 }, bytes);
 * assert.deepEqual(Pair.decode(bytes), { a: 1, b: 2 });
 * ```
 */
export class Struct<F extends Record<string, FieldSpec>> {
  /** Unique name. */
  readonly name: string;
  /** C type for the golden check. */
  readonly cType: string;
  /** Kernel release that introduced it. */
  readonly since: string;
  /** `sizeof`. */
  readonly size: number;
  /** Smallest accepted in-band size. */
  readonly minSize: number;
  /** Declared by the kernel's headers. */
  readonly inHeaders: boolean;
  /** Declaring header. */
  readonly header: string;
  /** Description. */
  readonly doc: string;
  /** Field specs by name. */
  readonly fields: F;
  /** Fields in declaration order, with derived sizes. */
  readonly layout: readonly FieldLayout[];
  /** The size field, if the struct is size-prefixed. */
  readonly sizeField: FieldLayout | undefined;
  readonly #byName: Record<string, FieldLayout>;

  /**
   * Derive the layout from `spec`; throws if a field is misaligned for its type, runs past `size`, or overlaps
   * another field that is not its declared alias, or if `minSize` exceeds `size`.
   */
  constructor(spec: StructSpec<F>) {
    this.name = spec.name;
    this.cType = spec.cType ?? `struct ${spec.name}`;
    this.since = spec.since;
    this.size = spec.size;
    this.minSize = spec.minSize ?? spec.size;
    this.inHeaders = spec.inHeaders ?? true;
    this.header = spec.header;
    this.doc = spec.doc;
    this.fields = spec.fields;
    const layout: FieldLayout[] = [];
    for (const [name, f] of Object.entries(spec.fields)) {
      const elementSize = SCALAR_SIZE[f.type];
      const byteSize = elementSize * (f.count ?? 1);
      if (f.offset % elementSize !== 0) throw new Error(`${spec.name}.${name}: misaligned offset ${f.offset}`);
      if (f.offset + byteSize > spec.size) throw new Error(`${spec.name}.${name}: past the end of the struct`);
      for (const other of layout) {
        const overlaps = f.offset < other.offset + other.byteSize && other.offset < f.offset + byteSize;
        if (overlaps && f.aliasOf !== other.name && other.aliasOf !== name) {
          throw new Error(`${spec.name}.${name}: overlaps ${other.name}`);
        }
      }
      layout.push({ ...f, name, elementSize, byteSize });
    }
    this.layout = layout;
    this.#byName = Object.fromEntries(layout.map((f) => [f.name, f]));
    this.sizeField = layout.find((f) => f.role === "size");
    if (this.minSize > this.size) throw new Error(`${spec.name}: minSize above size`);
  }

  /** The layout of one field; throws a {@linkcode UapiError} for an unknown name. */
  field(name: string): FieldLayout {
    const f = this.#byName[name];
    if (!f) throw new UapiError(this.name, name, "unknown-field", "no such field");
    return f;
  }

  /**
   * Encode `values` into `target` at `offset`. Missing fields are zero; reserved fields are always zero; the
   * size field defaults to `size`. Values are range-checked.
   */
  encode(values: EncodeInput<F>, target: Uint8Array, offset = 0): void {
    if (target.byteLength - offset < this.size) {
      throw new UapiError(this.name, "(buffer)", "short-buffer", `${target.byteLength - offset} < ${this.size}`);
    }
    const view = new DataView(target.buffer, target.byteOffset + offset, this.size);
    new Uint8Array(target.buffer, target.byteOffset + offset, this.size).fill(0);
    const given = values as Record<string, number | bigint | readonly (number | bigint)[] | undefined>;
    for (const name of Object.keys(given)) if (!this.#byName[name]) this.field(name);
    for (const f of this.layout) {
      if (f.aliasOf && given[f.aliasOf] !== undefined) continue;
      let v = given[f.name];
      if (v === undefined) {
        if (f.role === "size") v = this.size;
        else continue;
      }
      if (f.reserved) {
        const all = Array.isArray(v) ? v : [v];
        if (all.some((x) => x !== 0 && x !== 0n)) {
          throw new UapiError(this.name, f.name, "reserved-nonzero", "reserved fields must be zero");
        }
        continue;
      }
      if (f.count !== undefined) {
        if (!Array.isArray(v) || v.length > f.count) {
          throw new UapiError(this.name, f.name, "out-of-range", `expects at most ${f.count} elements`);
        }
        v.forEach((x, i) => {
          checkRange(this.name, `${f.name}[${i}]`, f.type, x);
          writeScalar(view, f.offset + i * f.elementSize, f.type, x);
        });
      } else {
        if (Array.isArray(v)) throw new UapiError(this.name, f.name, "out-of-range", "not an array field");
        checkRange(this.name, f.name, f.type, v as number | bigint);
        writeScalar(view, f.offset, f.type, v as number | bigint);
      }
    }
  }

  /**
   * Decode and validate. The buffer must hold exactly one struct; for size-prefixed structs the in-band size
   * must lie in [minSize, buffer length], and bytes past `size` must be zero (the kernel's extension rule).
   * Reserved fields must be zero; enum and flag fields must hold known values.
   */
  decode(source: Uint8Array): Decoded<F> {
    const length = source.byteLength;
    if (length < this.minSize) {
      throw new UapiError(this.name, "(buffer)", "short-buffer", `${length} bytes < ${this.minSize}`);
    }
    const view = new DataView(source.buffer, source.byteOffset, length);
    // Without an in-band size, the buffer length is the size (data_len-sized driver data may be shorter).
    let declared = Math.min(length, this.size);
    if (this.sizeField) {
      declared = view.getUint32(this.sizeField.offset, true);
      if (declared < this.minSize) {
        throw new UapiError(this.name, this.sizeField.name, "size-too-small", `${declared} < ${this.minSize}`);
      }
      if (declared > length) {
        throw new UapiError(this.name, this.sizeField.name, "size-too-large", `${declared} > buffer ${length}`);
      }
    }
    if (length > declared) {
      throw new UapiError(this.name, "(buffer)", "oversized-buffer", `${length} bytes > ${declared}`);
    }
    for (let i = this.size; i < declared; i++) {
      if (source[i] !== 0) {
        throw new UapiError(this.name, "(extension)", "extension-nonzero", `byte ${i} past ${this.size} is not zero`);
      }
    }
    const out: Record<string, unknown> = {};
    for (const f of this.layout) {
      // A short (older-kernel) struct: fields past the declared size read as zero, as the kernel does.
      const present = f.offset + f.byteSize <= declared;
      const read = (at: number) => present ? readScalar(view, at, f.type) : f.type === "u64" ? 0n : 0;
      const value = f.count !== undefined
        ? Array.from({ length: f.count }, (_, i) => read(f.offset + i * f.elementSize))
        : read(f.offset);
      if (f.reserved && (Array.isArray(value) ? value : [value]).some((x) => x !== 0 && x !== 0n)) {
        throw new UapiError(this.name, f.name, "reserved-nonzero", "reserved fields must be zero");
      }
      if (f.values && !Object.values(f.values).includes(Number(value))) {
        throw new UapiError(
          this.name,
          f.name,
          "unknown-value",
          `${value} is not one of ${Object.keys(f.values).join(", ")}`,
        );
      }
      if (f.flags) {
        const known = Object.values(f.flags).reduce((a, b) => a | b, 0);
        const bits = Number(value);
        if ((bits & ~known) >>> 0 !== 0 || bits > 0xffff_ffff) {
          throw new UapiError(
            this.name,
            f.name,
            "unknown-flags",
            `0x${bits.toString(16)} has bits outside 0x${known.toString(16)}`,
          );
        }
      }
      out[f.name] = value;
    }
    return out as Decoded<F>;
  }

  /**
   * The shortest prefix of an encoded struct the kernel accepts with the same meaning: at least `minSize`
   * bytes, with only zero bytes dropped. Older kernels refuse driver data longer than their own struct
   * (EINVAL) but zero-extend shorter data, so sending this prefix works on every release that has the fields
   * in use. For size-prefixed structs use the in-band size instead.
   */
  compact(bytes: Uint8Array): Uint8Array {
    let end = Math.min(bytes.byteLength, this.size);
    while (end > this.minSize && bytes[end - 1] === 0) end--;
    return bytes.subarray(0, end);
  }

  /** A reusable buffer holding one of these structs. */
  buffer(): StructBuffer<F> {
    return new StructBuffer(this);
  }
}

/**
 * Define a struct layout. Offsets, alignment and overlaps are checked here, once.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { defineStruct } from "./struct.ts";
 * const S = defineStruct({
 *   name: "s", since: "proposal", size: 4, header: "none", doc: "one u32", inHeaders: false,
 *   fields: { v: { type: "u32", offset: 0, doc: "value" } },
 * });
 * assert.equal(S.size, 4);
 * ```
 */
export function defineStruct<const F extends Record<string, FieldSpec>>(spec: StructSpec<F>): Struct<F> {
  return new Struct(spec);
}

/**
 * One struct's bytes, reused across calls: set fields, pass `bytes` to an ioctl, read fields back. Nothing
 * here allocates after construction except {@linkcode StructBuffer.getU64} (a bigint).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { IommuHwptInvalidate } from "./iommufd.ts";
 * const inv = IommuHwptInvalidate.buffer();
 * inv.set("hwpt_id", 7).set("entry_len", 8).set("entry_num", 1);
 * assert.equal(inv.get("size"), 32);
 * assert.equal(inv.get("entry_num"), 1);
 * ```
 */
export class StructBuffer<F extends Record<string, FieldSpec>> {
  /** The struct's bytes, `layout.size` long. */
  readonly bytes: Uint8Array;
  /** A view on {@linkcode StructBuffer.bytes}. */
  readonly view: DataView;
  /** The layout. */
  readonly layout: Struct<F>;

  /**
   * A buffer for `layout` over `bytes` (default: a new `layout.size`-byte array), cleared and with its size field
   * set; throws a {@linkcode UapiError} (`short-buffer`) when `bytes` is shorter than the struct.
   */
  constructor(layout: Struct<F>, bytes?: Uint8Array) {
    this.layout = layout;
    this.bytes = bytes ?? new Uint8Array(layout.size);
    if (this.bytes.byteLength < layout.size) {
      throw new UapiError(layout.name, "(buffer)", "short-buffer", `${this.bytes.byteLength} < ${layout.size}`);
    }
    this.view = new DataView(this.bytes.buffer, this.bytes.byteOffset, layout.size);
    this.clear();
  }

  /** Zero every byte and set the size field to the struct's size. */
  clear(): this {
    this.bytes.fill(0, 0, this.layout.size);
    const sf = this.layout.sizeField;
    if (sf) this.view.setUint32(sf.offset, this.layout.size, true);
    return this;
  }

  /** Set a field of up to 32 bits. */
  set(name: NumberField<F>, value: number): this {
    const f = this.layout.field(name);
    if (f.reserved && value !== 0) throw new UapiError(this.layout.name, name, "reserved-nonzero", "must be zero");
    checkRange(this.layout.name, name, f.type, value);
    writeScalar(this.view, f.offset, f.type, value);
    return this;
  }

  /** Read a field of up to 32 bits. */
  get(name: NumberField<F>): number {
    const f = this.layout.field(name);
    return readScalar(this.view, f.offset, f.type) as number;
  }

  /** Set a 64-bit field from a safe-integer number (no BigInt) or a bigint. */
  setU64(name: U64Field<F>, value: number | bigint): this {
    const f = this.layout.field(name);
    checkRange(this.layout.name, name, "u64", value);
    writeU64(this.view, f.offset, value);
    return this;
  }

  /** Set a 64-bit address field to the byte address of 4 KiB page `page` (below 2^52). */
  setPageAddress(name: U64Field<F>, page: number): this {
    if (!Number.isInteger(page) || page < 0 || page >= 2 ** 52) {
      throw new UapiError(this.layout.name, name, "out-of-range", `page ${page} is outside 0..2^52-1`);
    }
    writePageAddress(this.view, this.layout.field(name).offset, page);
    return this;
  }

  /** Read a 64-bit field as a bigint. */
  getU64(name: U64Field<F>): bigint {
    return this.view.getBigUint64(this.layout.field(name).offset, true);
  }

  /** Set element `index` of an array field. */
  setAt(name: ArrayField<F>, index: number, value: number | bigint): this {
    const f = this.layout.field(name);
    if (!Number.isInteger(index) || index < 0 || index >= (f.count ?? 0)) {
      throw new UapiError(
        this.layout.name,
        `${name}[${index}]`,
        "out-of-range",
        `index outside 0..${(f.count ?? 0) - 1}`,
      );
    }
    checkRange(this.layout.name, name, f.type, value);
    writeScalar(this.view, f.offset + index * f.elementSize, f.type, value);
    return this;
  }

  /** Byte offset of a field, e.g. for the shim's pointer patching. */
  offsetOf(name: keyof F & string): number {
    return this.layout.field(name).offset;
  }

  /** Decode (and validate) the current contents. */
  decode(): Decoded<F> {
    return this.layout.decode(this.bytes.subarray(0, this.layout.size));
  }
}
