/**
 * iommu-relay: relays a guest's virtual-IOMMU work — cache/TLB invalidations and PASID binds — to the host IOMMU
 * through Linux's iommufd and VFIO, from Deno. A VMM loads it once per assigned PCI device.
 *
 * This entry point is what a VMM author needs: {@linkcode RelayHost} and the plugin API, the guest front ends (VT-d,
 * SMMUv3, virtio-iommu), the request types and the typed errors. Each layer below is a subpath export of its own
 * (`./uapi`, `./kernel`, `./request`, `./compile`, `./host`, `./shadow`, `./relay`, `./device`, `./frontends`,
 * `./broker`, `./testing`, `./ffi`); docs/architecture.md draws them.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { RelayHost, relayPlugin } from "./mod.ts";
 * using host = RelayHost.inProcess(); // or RelayHost.kernel(shim) on a host with /dev/iommu
 * using nic = relayPlugin.create(host, { domain: 1, device: { kind: "model" } });
 * nic.submit({ op: "bind", domain: 1, pasid: "rid", table: { format: "vtd-s1", tableAddress: 0x1000, addressWidth: 48 } });
 * nic.submit({ op: "invalidate", domain: 1, scope: { kind: "range", firstPage: 0x100, pages: 32 }, noPasid: true });
 * nic.submit({ op: "sync" });
 * assert.ok(nic.drain().waits[0].ok);
 * ```
 *
 * @module
 */
export * from "./lib/plugin/mod.ts";
export * from "./lib/frontends/mod.ts";
export type {
  BindRequest,
  InvalidateRequest,
  NestedTable,
  PasidOrRid,
  Request,
  RequestErrorReason,
  RequestLimits,
  Scope,
  SelftestStageOne,
  SmmuStageOne,
  StageOneTable,
  SyncRequest,
  UnbindRequest,
  VendorHints,
  VtdSecondLevel,
  VtdStageOne,
} from "./lib/request/request.ts";
export { PAGE_SPACE, pageRangeOfBytes, PCIE_PASID_BITS, RequestError, validateRequest } from "./lib/request/request.ts";
export { type BoundedGuestMemory, guestMemoryOver } from "./lib/memory/guest_memory.ts";
export { DrainOutcome } from "./lib/relay/outcome.ts";
export type { DrainReport, RequestFailure, WaitOutcome } from "./lib/relay/outcome.ts";
export type { QueueOptions, QueueTelemetry, UnroutedCounts } from "./lib/relay/queue.ts";
export { KernelError, LimitError, UnsupportedError } from "./lib/kernel/errors.ts";
export { type CpuidLeaf, Kvm, KvmError, KvmVcpu, KvmVm, type LongModeEntry, type Segment } from "./lib/kernel/kvm.ts";
export { UapiError, type UapiErrorReason } from "./lib/uapi/errors.ts";
export { NativeShim, ShimClosedError, ShimRefusedError, ShimVersionError } from "./ffi/native.ts";
export { ensureShim, ShimBuildError } from "./ffi/build.ts";
