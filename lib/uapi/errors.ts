/**
 * Typed errors of the uAPI layer: everything a decoder or encoder rejects names the struct, the field and why.
 *
 * @module
 */

/** Why a uAPI struct was rejected. */
export type UapiErrorReason =
  | "short-buffer"
  | "oversized-buffer"
  | "size-too-small"
  | "size-too-large"
  | "extension-nonzero"
  | "reserved-nonzero"
  | "unknown-value"
  | "unknown-flags"
  | "out-of-range"
  | "unknown-field";

/**
 * A struct could not be encoded or decoded.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { UapiError } from "./errors.ts";
 * const e = new UapiError("iommu_hwpt_invalidate", "__reserved", "reserved-nonzero", "must be zero, was 1");
 * assert.equal(e.message, "iommu_hwpt_invalidate.__reserved: reserved-nonzero (must be zero, was 1)");
 * ```
 */
export class UapiError extends Error {
  /** Always `"UapiError"`. */
  override name = "UapiError";
  /** Builds the message `<struct>.<field>: <reason> (<detail>)` from the four parts. */
  constructor(
    /** The struct's name, e.g. `iommu_hwpt_invalidate`. */
    readonly struct: string,
    /** The field at fault, or `(buffer)` for whole-buffer problems. */
    readonly field: string,
    /** Machine-readable reason. */
    readonly reason: UapiErrorReason,
    /** Human-readable detail. */
    readonly detail: string,
  ) {
    super(`${struct}.${field}: ${reason} (${detail})`);
  }
}
