/**
 * The device layer: assigned devices behind a guest vIOMMU, nested or shadowed, on the kernel (VFIO cdev or the
 * selftest mock) or the in-process host.
 *
 * @module
 */
export * from "./assigned.ts";
export * from "./capabilities.ts";
export * from "./migration.ts";
export * from "./shadow.ts";
export * from "./snapshot.ts";
