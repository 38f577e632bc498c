// Run by tests/ffi/adopt_test.ts with fds 3 (/dev/kvm, read-write) and 4 (/dev/null, read-only) opened by its parent
// shell, and only the shim's grant: the shim takes fd 3 after fstat and refuses fd 4; no path is opened here.
import { NativeShim } from "../../ffi/mod.ts";

const IOCTL = Object.getOwnPropertySymbols(NativeShim.prototype).find((s) => s.description === "iommu-relay ioctl")!;
using shim = await NativeShim.load();
const out: Record<string, unknown> = {};
const outcome = (f: () => unknown) => {
  try {
    return f();
  } catch (e) {
    const err = e as Error & { errnoName?: string };
    return `${err.name} ${err.errnoName ?? ""}`.trim();
  }
};
out.beforeAdopt = outcome(() =>
  (shim as unknown as Record<symbol, (...a: unknown[]) => number>)[IOCTL](3, 0xae00, null)
);
out.adoptKvm = outcome(() => shim.adoptFd(3));
out.apiVersion = outcome(() =>
  (shim as unknown as Record<symbol, (...a: unknown[]) => number>)[IOCTL](3, 0xae00, null)
);
out.adoptTwice = outcome(() => shim.adoptFd(3));
out.adoptNull = outcome(() => shim.adoptFd(4));
console.log(JSON.stringify(out));
