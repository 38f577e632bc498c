/**
 * The VT-d front end: queued-invalidation descriptors and the invalidation queue model.
 *
 * @module
 */
export * from "./descriptors.ts";
export * from "./queue.ts";
export * from "./prq.ts";
export * from "./encode.ts";
export * from "./pasid.ts";
export * from "./faults.ts";
export * from "./rid_pasid.ts";
export * from "./routing.ts";
export * from "./binder.ts";
