/**
 * Linux errno numbers (`asm-generic/errno-base.h`, `asm-generic/errno.h`; x86_64 and arm64 use these) and
 * their names, so every kernel error can say both.
 *
 * @module
 */
import { type ConstantGroup, defineConstants } from "./ioctl.ts";

/** The declaration of `errno` behind {@linkcode Errno}: its one definition. */
export const ErrnoDeclaration = {
  name: "errno",
  header: "asm-generic/errno.h",
  since: "1.0",
  values: {
    EPERM: 1,
    ENOENT: 2,
    ESRCH: 3,
    EINTR: 4,
    EIO: 5,
    ENXIO: 6,
    E2BIG: 7,
    EBADF: 9,
    EAGAIN: 11,
    ENOMEM: 12,
    EACCES: 13,
    EFAULT: 14,
    EBUSY: 16,
    EEXIST: 17,
    ENODEV: 19,
    EINVAL: 22,
    ENFILE: 23,
    EMFILE: 24,
    ENOTTY: 25,
    ENOSPC: 28,
    ERANGE: 34,
    ENOSYS: 38,
    ENODATA: 61,
    EOVERFLOW: 75,
    EMSGSIZE: 90,
    EOPNOTSUPP: 95,
    EADDRINUSE: 98,
    ETIMEDOUT: 110,
  } as const,
} as const;

/** The errno values iommufd, VFIO and the shim can return. */
export const Errno: ConstantGroup<typeof ErrnoDeclaration.values> = defineConstants(ErrnoDeclaration);

/** An errno name known to iommu-relay. */
export type ErrnoName = keyof typeof Errno.values;

const NAMES: Record<number, string> = Object.fromEntries(
  Object.entries(Errno.values).map(([name, value]) => [value, name]),
);

/**
 * The name of an errno value (positive or negated), or `E<n>` for one this table does not know.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { errnoName } from "./errno.ts";
 * assert.equal(errnoName(-25), "ENOTTY");
 * assert.equal(errnoName(95), "EOPNOTSUPP");
 * ```
 */
export function errnoName(errno: number): string {
  const n = Math.abs(errno);
  return NAMES[n] ?? `E${n}`;
}

/** Everything this module defines. */
export const ERRNO_UAPI = { structs: [], constants: [Errno], ioctls: [] } as const;
