/**
 * Guest-facing front ends: the VT-d invalidation and page request queues, the SMMUv3 command, event and PRI queues, virtio-iommu; the relay window they share.
 *
 * @module
 */
export * from "./vtd/mod.ts";
export * from "./smmuv3/mod.ts";
export * from "./virtio/mod.ts";
export * from "./window.ts";
export * from "./page_requests.ts";
export * from "./snapshot.ts";
