/**
 * Typed errors shared by every layer above the uAPI: a kernel call that failed (errno name and number, the
 * operation, the ioctl, the failing entry), and a feature this kernel or device does not have.
 *
 * @module
 */
import { errnoName } from "../uapi/errno.ts";

/**
 * A kernel call failed.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { KernelError } from "./errors.ts";
 * const e = new KernelError(-22, "invalidate", "IOMMU_HWPT_INVALIDATE", 2);
 * assert.equal(e.message, "invalidate: IOMMU_HWPT_INVALIDATE failed with EINVAL (22) at entry 2");
 * ```
 */
export class KernelError extends Error {
  /** Always `"KernelError"`. */
  override name = "KernelError";
  /** The errno, positive. */
  readonly errno: number;
  /** Its name, e.g. `EINVAL`. */
  readonly errnoName: string;
  /** `errno` may be given negative, as ioctl results carry it; it is stored positive. */
  constructor(
    errno: number,
    /** What the library was doing, e.g. `invalidate`, `alloc nested HWPT`. */
    readonly op: string,
    /** The ioctl (or syscall: `open`, `read`) that failed. */
    readonly ioctl: string,
    /** For array ioctls: the index of the entry that failed (= entries handled before it). */
    readonly entryIndex?: number,
  ) {
    const n = Math.abs(errno);
    const name = errnoName(n);
    super(`${op}: ${ioctl} failed with ${name} (${n})${entryIndex === undefined ? "" : ` at entry ${entryIndex}`}`);
    this.errno = n;
    this.errnoName = name;
  }
}

/**
 * Something this kernel, IOMMU or device does not offer (detected at run time).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { UnsupportedError } from "./errors.ts";
 * const e = new UnsupportedError("pasid-attach", "IOMMU_TEST_OP_PASID_ATTACH answered EOPNOTSUPP (Linux 6.15+)");
 * assert.equal(e.feature, "pasid-attach");
 * ```
 */
export class UnsupportedError extends Error {
  /** Always `"UnsupportedError"`. */
  override name = "UnsupportedError";
  /** The message is `unsupported: <feature>: <detail>`. */
  constructor(
    /** The feature's name, as in {@linkcode KernelFeatures}. */
    readonly feature: string,
    /** How it was detected, and what would provide it. */
    readonly detail: string,
  ) {
    super(`unsupported: ${feature}: ${detail}`);
  }
}

/** Features detected on a running kernel; see lib/kernel/features.ts. */
export type KernelFeatures = Readonly<Record<string, boolean>>;

/**
 * A configured cap was hit: the request is refused as a whole (nothing of it was queued or sent).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { LimitError } from "./errors.ts";
 * const e = new LimitError("pending-waits", 65536, "drain the queue");
 * assert.equal(e.message, "limit pending-waits (65536) reached: drain the queue");
 * ```
 */
export class LimitError extends Error {
  /** Always `"LimitError"`. */
  override name = "LimitError";
  /** The message is `limit <limit> (<max>) reached: <hint>`. */
  constructor(
    /** Which cap. */
    readonly limit: "pending-waits" | "pasids-per-device" | "entries-per-call",
    /** Its value. */
    readonly max: number,
    /** What to do about it. */
    readonly hint: string,
  ) {
    super(`limit ${limit} (${max}) reached: ${hint}`);
  }
}
