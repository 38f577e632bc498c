/**
 * ioctl request numbers (asm-generic encoding: x86_64, arm64, riscv) and the registry of named ioctls and
 * constants that the golden check compares with the kernel's headers.
 *
 * Every request is an unsigned 32-bit number; values above 2^31 (any `_IOR`) stay intact because they are
 * never passed through a signed 32-bit conversion.
 *
 * @module
 */
import type { FieldSpec, Struct } from "./struct.ts";

/** `_IOC_NONE`, `_IOC_WRITE`, `_IOC_READ` of asm-generic. */
export const IOC_NONE = 0;
/** Userspace writes, the kernel reads. */
export const IOC_WRITE = 1;
/** The kernel writes, userspace reads. */
export const IOC_READ = 2;

/**
 * `_IOC(dir, type, nr, size)` for asm-generic: dir in bits 31:30, size in 29:16 (14 bits), type 15:8, nr 7:0.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { ioc, IOC_READ, IOC_WRITE } from "./ioctl.ts";
 * assert.equal(ioc(IOC_READ | IOC_WRITE, 0xae, 0x02, 4), 0xc004ae02);
 * ```
 */
export function ioc(dir: number, type: number, nr: number, size: number): number {
  if (dir < 0 || dir > 3 || type < 0 || type > 0xff || nr < 0 || nr > 0xff || size < 0 || size > 0x3fff) {
    throw new RangeError(`_IOC(${dir}, ${type}, ${nr}, ${size}): a field is out of range`);
  }
  return ((dir << 30) | (size << 16) | (type << 8) | nr) >>> 0;
}

/** `_IO(type, nr)`. @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { io } from "./ioctl.ts";
 * assert.equal(io(0x3b, 0x8d), 0x3b8d);
 * ```
 */
export function io(type: number, nr: number): number {
  return ioc(IOC_NONE, type, nr, 0);
}
/** `_IOR(type, nr, size)`. @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { ior } from "./ioctl.ts";
 * assert.equal(ior(0x54, 0x01, 60), 0x803c5401); // unsigned: above 2 ** 31, never negative
 * ```
 */
export function ior(type: number, nr: number, size: number): number {
  return ioc(IOC_READ, type, nr, size);
}
/** `_IOW(type, nr, size)`. @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { iow } from "./ioctl.ts";
 * assert.equal(iow(0xae, 0x46, 32), 0x4020ae46);
 * ```
 */
export function iow(type: number, nr: number, size: number): number {
  return ioc(IOC_WRITE, type, nr, size);
}
/** `_IOWR(type, nr, size)`. @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { iowr } from "./ioctl.ts";
 * assert.equal(iowr(0xae, 0x02, 4), 0xc004ae02);
 * ```
 */
export function iowr(type: number, nr: number, size: number): number {
  return ioc(IOC_READ | IOC_WRITE, type, nr, size);
}

/** A named ioctl: its request number and the struct it carries. */
export interface Ioctl {
  /** The C macro name, e.g. `IOMMU_HWPT_INVALIDATE`. */
  readonly name: string;
  /** The request number. */
  readonly request: number;
  /** The argument struct (or undefined for argument-less ioctls). */
  // deno-lint-ignore no-explicit-any
  readonly struct: Struct<Record<string, FieldSpec>> | Struct<any> | undefined;
  /** Kernel release that introduced it, or `proposal`. */
  readonly since: string;
  /** Declared by the kernel headers (false for the 2017 proposals). */
  readonly inHeaders: boolean;
}

/**
 * Declare an ioctl.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { defineIoctl, io } from "./ioctl.ts";
 * const X = defineIoctl({ name: "X", request: io(0x3b, 0x80), struct: undefined, since: "6.2" });
 * assert.equal(X.request, 0x3b80);
 * ```
 */
export function defineIoctl(
  spec: Omit<Ioctl, "inHeaders"> & { inHeaders?: boolean },
): Ioctl {
  // Frozen: the kernel layer issues only registered ioctls, recognised by identity, so they must not change.
  return Object.freeze({ ...spec, inHeaders: spec.inHeaders ?? true });
}

/** A group of named integer constants from one header (an enum or a set of `#define`s). */
export interface ConstantGroup<T extends Record<string, number>> {
  /** Group name, e.g. the C enum name. */
  readonly name: string;
  /** Declaring header. */
  readonly header: string;
  /** Kernel release that introduced the group. */
  readonly since: string;
  /** Names of members the 7.3 headers do not declare (the project's own values), skipped by the golden check. */
  readonly ownValues?: readonly string[];
  /** The constants. */
  readonly values: Readonly<T>;
}

/**
 * Declare a constant group; returns it unchanged (typed).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { defineConstants } from "./ioctl.ts";
 * const G = defineConstants({ name: "g", header: "x.h", since: "6.2", values: { A: 1, B: 2 } as const });
 * assert.equal(G.values.B, 2);
 * ```
 */
export function defineConstants<const T extends Record<string, number>>(group: ConstantGroup<T>): ConstantGroup<T> {
  return group;
}

/** How one architecture encodes ioctl request numbers (`asm/ioctl.h`). */
export interface IocArch {
  /** The architecture, as in `arch/<name>`; `generic` is asm-generic (x86_64, arm64, riscv, …). */
  readonly name: "generic" | "powerpc" | "mips" | "sparc";
  /** Bit where the direction field starts (`_IOC_DIRSHIFT`). */
  readonly dirShift: number;
  /** Largest size the encoding carries. sparc's 13-bit field is "actually 14": sizes overlap the direction. */
  readonly maxSize: number;
  /** `_IOC_NONE`: the direction value of an ioctl that passes no data. */
  readonly none: number;
  /** `_IOC_READ`: the direction bit for "the kernel writes, userspace reads". */
  readonly read: number;
  /** `_IOC_WRITE`: the direction bit for "userspace writes, the kernel reads". */
  readonly write: number;
}

/** The four encodings Linux has (see each `arch/<name>/include/uapi/asm/ioctl.h`). */
export const IOC_ARCHES: Readonly<Record<IocArch["name"], IocArch>> = {
  generic: { name: "generic", dirShift: 30, maxSize: 0x3fff, none: 0, read: 2, write: 1 },
  powerpc: { name: "powerpc", dirShift: 29, maxSize: 0x1fff, none: 1, read: 2, write: 4 },
  mips: { name: "mips", dirShift: 29, maxSize: 0x1fff, none: 1, read: 2, write: 4 },
  sparc: { name: "sparc", dirShift: 29, maxSize: 0x3fff, none: 1, read: 2, write: 4 },
};

/** An ioctl direction. */
export type IocDirection = "none" | "read" | "write" | "readwrite";

/**
 * `_IOC` for any architecture: `_IO`, `_IOR`, `_IOW`, `_IOWR` are the four directions.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { IOC_ARCHES, iocFor } from "./ioctl.ts";
 * assert.equal(iocFor(IOC_ARCHES.powerpc, "none", 0x3b, 0x8d, 0), 0x20003b8d);
 * ```
 */
export function iocFor(arch: IocArch, dir: IocDirection, type: number, nr: number, size: number): number {
  if (type < 0 || type > 0xff || nr < 0 || nr > 0xff || size < 0 || size > arch.maxSize || !Number.isInteger(size)) {
    throw new RangeError(`${arch.name} _IOC(${dir}, ${type}, ${nr}, ${size}): a field is out of range`);
  }
  const d = dir === "none"
    ? arch.none
    : dir === "read"
    ? arch.read
    : dir === "write"
    ? arch.write
    : arch.read | arch.write;
  // The C macro ORs the fields, so on sparc a 14-bit size ORs into the direction's low bit.
  return (((d << arch.dirShift) >>> 0) | (size << 16) | (type << 8) | nr) >>> 0;
}
