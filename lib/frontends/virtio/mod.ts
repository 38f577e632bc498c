/**
 * The virtio-iommu front end: requests, fault reports, shadow map hooks.
 *
 * @module
 */
export * from "./iommu.ts";
export * from "./faults.ts";
export * from "./shadow.ts";
