/**
 * iommu-relay: relays a guest's virtual-IOMMU work (cache/TLB invalidations, PASID binds) to the host IOMMU
 * through Linux iommufd and VFIO, from Deno.
 *
 * This entry point re-exports the public layers: the uAPI layer (kernel structs, ioctl numbers, constants)
 * and the native shim.
 *
 * @example
 * ```ts
 * import { IOMMU_HWPT_INVALIDATE, IommuHwptInvalidate } from "./mod.ts";
 * const args = IommuHwptInvalidate.buffer().set("hwpt_id", 2).set("entry_num", 1);
 * console.log(IOMMU_HWPT_INVALIDATE.name, args.get("entry_num")); // IOMMU_HWPT_INVALIDATE 1
 * ```
 *
 * @module
 */
export * from "./lib/uapi/mod.ts";
export { NativeShim, NO_POINTER, POLL, ShimClosedError, ShimVersionError } from "./ffi/native.ts";
export { ensureShim, ShimBuildError } from "./ffi/build.ts";
