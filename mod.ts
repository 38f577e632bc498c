/**
 * iommu-relay: relays a guest's virtual-IOMMU work (cache/TLB invalidations, PASID binds) to the host IOMMU
 * through Linux iommufd and VFIO, from Deno.
 *
 * Layers, each usable on its own: the uAPI (kernel structs, ioctl numbers), the native shim, the kernel objects
 * (iommufd, HWPTs, VFIO cdev, the selftest mock), the relay core (vendor-neutral requests, coalescing queue), the
 * compilers to host formats (VT-d, SMMUv3, selftest, the 2017 wire format), backends (kernel, in-process host),
 * the device layer (assigned devices behind a guest vIOMMU) and replay tools for tests.
 *
 * @example
 * ```ts
 * import { ModelHost, RelayQueue } from "./mod.ts";
 * const host = new ModelHost();
 * const hwpt = host.createTarget("vtd-s1");
 * const queue = new RelayQueue(host);
 * queue.bind(1, "rid", { targetId: hwpt, format: "vtd-s1" });
 * queue.submit({ op: "invalidate", domain: 1, scope: { kind: "range", firstPage: 0x100, pages: 32 }, noPasid: true });
 * queue.submit({ op: "sync" });
 * console.log(queue.drain().waits[0].ok); // true
 * ```
 *
 * @module
 */
export * from "./lib/uapi/mod.ts";
export { NativeShim, NO_POINTER, POLL, ShimClosedError, ShimRefusedError, ShimVersionError } from "./ffi/native.ts";
export { ensureShim, ShimBuildError } from "./ffi/build.ts";
export * from "./lib/kernel/errors.ts";
export * from "./lib/request/request.ts";
export * from "./lib/request/pending.ts";
export * from "./lib/relay/queue.ts";
export { DrainOutcome } from "./lib/relay/outcome.ts";
export * from "./lib/host/backend.ts";
export { KernelBackend } from "./lib/host/kernel.ts";
export * from "./lib/compile/formats.ts";
export * from "./lib/host/device_host.ts";
export * from "./lib/host/ports.ts";
export * from "./lib/host/kernel_device_host.ts";
export * from "./lib/host/model_device_host.ts";
export * from "./lib/compile/entries.ts";
export * from "./lib/compile/vtd.ts";
export * from "./lib/compile/smmuv3.ts";
export * from "./lib/compile/selftest.ts";
export * from "./lib/compile/wire2017.ts";
export * from "./lib/host/model.ts";
export * from "./lib/kernel/iommufd.ts";
export * from "./lib/kernel/vfio.ts";
export * from "./lib/kernel/selftest.ts";
export * from "./lib/kernel/features.ts";
export * from "./lib/device/mod.ts";
export * from "./lib/testing/mod.ts";
export * from "./lib/frontends/vtd/mod.ts";
export * from "./lib/frontends/smmuv3/mod.ts";
export * from "./lib/plugin/mod.ts";
export * from "./lib/frontends/virtio/iommu.ts";
export * from "./lib/broker/protocol.ts";
export * from "./lib/broker/client.ts";
export { serveBroker } from "./lib/broker/server.ts";
export * from "./lib/host/faults.ts";
export * from "./lib/shadow/mod.ts";
export { ModelIoas } from "./lib/shadow/model_ioas.ts";
export { shadowMapHooks } from "./lib/frontends/virtio/shadow.ts";
export * from "./lib/kernel/sysfs.ts";
