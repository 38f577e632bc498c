/**
 * Testing tools for VMM authors (`@iommu-relay/core/testing`): scripted guests that write VT-d descriptors and
 * SMMUv3 commands through the front ends into plugins on the in-process host, recorded-shape workloads, and a
 * deterministic replay with a modelled in-flight window.
 *
 * @module
 */
export * from "./guest.ts";
export * from "./workloads.ts";
export * from "./replay.ts";
export * from "./policies.ts";
export * from "../shadow/page_tables.ts";
export * from "./shadow_policies.ts";
export * from "./cmdq_replay.ts";
export * from "./recordings.ts";
export * from "./virtio_replay.ts";
export * from "./vtd_trace.ts";
