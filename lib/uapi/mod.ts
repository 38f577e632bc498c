/**
 * The uAPI layer: kernel struct layouts, ioctl numbers and constants (Linux 7.3), with encoders into reused
 * buffers and validating decoders. Imports nothing else of iommu-relay.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { IOMMU_HWPT_INVALIDATE, IommuHwptInvalidate } from "./mod.ts";
 * const args = IommuHwptInvalidate.buffer().set("hwpt_id", 3);
 * assert.equal(IOMMU_HWPT_INVALIDATE.request, 0x3b8d);
 * assert.equal(args.bytes.length, 32);
 * ```
 *
 * @module
 */
import { IOMMUFD_UAPI } from "./iommufd.ts";
import { VFIO_UAPI } from "./vfio.ts";
import { SELFTEST_UAPI } from "./selftest.ts";
import { ERRNO_UAPI } from "./errno.ts";
import { PROPOSAL_2017_UAPI } from "./proposal2017.ts";
import { KVM_UAPI } from "./kvm.ts";
import type { FieldSpec, Struct } from "./struct.ts";
import type { ConstantGroup, Ioctl } from "./ioctl.ts";

export * from "./errors.ts";
export * from "./struct.ts";
export * from "./ioctl.ts";
export * from "./errno.ts";
export * from "./iommufd.ts";
export * from "./vfio.ts";
export * from "./selftest.ts";
export * from "./proposal2017.ts";
export * from "./kvm.ts";

/** Every struct, constant group and ioctl the uAPI layer defines: what the golden check walks. */
export interface UapiRegistry {
  /** Struct layouts. */
  readonly structs: readonly Struct<Record<string, FieldSpec>>[];
  /** Constant groups. */
  readonly constants: readonly ConstantGroup<Record<string, number>>[];
  /** ioctls. */
  readonly ioctls: readonly Ioctl[];
}

const parts = [IOMMUFD_UAPI, VFIO_UAPI, SELFTEST_UAPI, ERRNO_UAPI, PROPOSAL_2017_UAPI, KVM_UAPI];

/** The registry of everything in lib/uapi. */
export const UAPI: UapiRegistry = {
  structs: parts.flatMap((p) => p.structs as readonly Struct<Record<string, FieldSpec>>[]),
  constants: parts.flatMap((p) => p.constants as readonly ConstantGroup<Record<string, number>>[]),
  ioctls: parts.flatMap((p) => p.ioctls as readonly Ioctl[]),
};
