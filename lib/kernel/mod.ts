/**
 * The kernel layer: one disposable object per iommufd / VFIO kernel object over the native shim, typed errors,
 * run-time feature detection, dirty bitmaps, memfds and their passing, and the selftest mock's commands.
 *
 * @module
 */
export * from "./iommufd.ts";
export * from "./vfio.ts";
export * from "./selftest.ts";
export * from "./features.ts";
export * from "./dirty.ts";
export * from "./memfd.ts";
export { KernelError, UnsupportedError } from "./errors.ts";
export * from "./sysfs.ts";
export * from "./streams.ts";
export * from "./kvm.ts";
