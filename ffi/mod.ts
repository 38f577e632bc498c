/**
 * The `./ffi` export: the loaded shim and what describes it. The symbol-keyed ioctl entry points stay in
 * ffi/native.ts for iommu-relay's own kernel layer; this module exports none of them. Whatever a script reaches,
 * the shim (ffi/shim.c) allows only a relay's device nodes, fds and ioctls (RELIABILITY.md, "The shim boundary").
 *
 * @module
 */
export {
  CDEV_ATTR,
  FD_KIND,
  FDPASS_PAYLOAD_MAX,
  HOST_LIST,
  NativeShim,
  NO_POINTER,
  POLL,
  REFUSAL_BASE,
  SHIM_ABI_VERSION,
  ShimClosedError,
  ShimRefusedError,
  ShimVersionError,
} from "./native.ts";
