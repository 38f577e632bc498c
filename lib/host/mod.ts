/**
 * The host boundaries: `Backend` (invalidation batches) and `DeviceHost` (parents, nested tables, vIOMMU, attach), implemented by the kernel and by the in-process host; fault injection.
 *
 * @module
 */
export * from "./backend.ts";
export * from "./device_host.ts";
export * from "./kernel.ts";
export * from "./kernel_device_host.ts";
export * from "./ports.ts";
export * from "./model.ts";
export * from "./model_device_host.ts";
export * from "./faults.ts";
