/**
 * The device layer: assigned devices behind a guest vIOMMU, over a VFIO cdev or the selftest mock.
 *
 * @module
 */
export * from "./assigned.ts";
export * from "./capabilities.ts";
export * from "./port.ts";
