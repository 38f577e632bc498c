// Shared setup of the kernel suite. It runs inside the test VM (tools/kernel/run.ts) against a real kernel's
// /dev/iommu; on a host without one every kernel test is reported as ignored, with this reason.
import { NativeShim } from "../ffi/native.ts";
import { mockIopfChain, mockNestedChain } from "../lib/kernel/selftest.ts";
import { detectFeatures, type FeatureName, Iommufd, type KernelFeatureReport } from "../lib/kernel/mod.ts";

export const shim: NativeShim = await NativeShim.load();
export const release: string = Deno.osRelease();

function hasIommu(): boolean {
  const fd = shim.open("/dev/iommu");
  if (fd < 0) return false;
  shim.close(fd);
  return true;
}

/** Why kernel tests do not run here, or undefined when they do. */
export const noKernel: string | undefined = hasIommu()
  ? undefined
  : "no /dev/iommu here: the kernel suite runs in the test VM (deno task test:kernel)";

/** Open the iommufd for one test. */
export function openIommufd(): Iommufd {
  return Iommufd.open(shim);
}

/** What this kernel offers, probed once. */
export const features: KernelFeatureReport | undefined = noKernel ? undefined : (() => {
  using f = openIommufd();
  return detectFeatures(f);
})();

/** `release` as [major, minor]. */
export const version: [number, number] = (() => {
  const m = release.match(/^(\d+)\.(\d+)/);
  return m ? [Number(m[1]), Number(m[2])] : [0, 0];
})();

/** Whether the running kernel is at least major.minor. */
export function atLeast(major: number, minor: number): boolean {
  return version[0] > major || (version[0] === major && version[1] >= minor);
}

const reported = new Set<string>();

/**
 * Options for a kernel test that needs `needs` features: ignored (with the reason printed once) when there is
 * no kernel or the kernel lacks one of them.
 */
export function kernelTest(name: string, needs: FeatureName[], fn: () => void | Promise<void>): void {
  const missing = features ? needs.filter((n) => !features!.has(n)) : [];
  const reason = noKernel ?? (missing.length ? `Linux ${release} lacks ${missing.join(", ")}` : undefined);
  if (reason && !reported.has(reason)) {
    reported.add(reason);
    console.log(`kernel suite: ignoring tests because ${reason}`);
  }
  Deno.test({ name, ignore: reason !== undefined, fn });
}

/** The selftest's nesting chain (lib/kernel/selftest.ts). */
export const nestedChain = mockNestedChain;

/** The I/O page fault chain (lib/kernel/selftest.ts). */
export const iopfChain = mockIopfChain;
