/**
 * What the host offers, read from /dev and sysfs through the shim (Deno's own file APIs want `-A` for /sys and
 * /dev): the iommufd node, each VFIO device cdev with its PCI function, driver, IOMMU group and IOMMU, the legacy
 * VFIO group nodes and the IOMMUs the kernel registered. Read-only; nothing is opened for writing.
 *
 * @example
 * ```ts
 * import { NativeShim } from "../../ffi/native.ts";
 * import { describeHost } from "./sysfs.ts";
 * using shim = await NativeShim.load();
 * const host = describeHost(shim);
 * console.log(Array.isArray(host.cdevs), typeof host.iommufd); // true boolean
 * ```
 *
 * @module
 */
import type { NativeShim } from "../../ffi/native.ts";

/** One VFIO device cdev (`/dev/vfio/devices/vfioN`) and what sysfs says of it. */
export interface VfioCdevInfo {
  readonly cdev: string;
  /** PCI address, e.g. `0000:00:03.0` (undefined for a non-PCI device). */
  readonly pci?: string;
  /** The bound driver (`vfio-pci` for an assigned device). */
  readonly driver?: string;
  readonly iommuGroup?: number;
  /** The IOMMU instance (`dmar0`, `smmu3.0x...`). */
  readonly iommu?: string;
  /** PCI vendor and device ids as sysfs prints them (`0x1234`). */
  readonly vendor?: string;
  readonly device?: string;
  /** What could not be read, as `path: errno`. */
  readonly unreadable: readonly string[];
}

/** The host as seen from /dev and sysfs. */
export interface HostDescription {
  /** Whether /dev/iommu exists. */
  readonly iommufd: boolean;
  readonly cdevs: readonly VfioCdevInfo[];
  /** Legacy VFIO group nodes (`/dev/vfio/<group>`). */
  readonly groups: readonly number[];
  /** Registered IOMMU instances (`/sys/class/iommu`). */
  readonly iommus: readonly string[];
}

const basename = (p: string) => p.slice(p.lastIndexOf("/") + 1);

/** Read the host's description. `root` prefixes every path (tests point it at a fake tree). */
export function describeHost(shim: NativeShim, root = ""): HostDescription {
  const list = (path: string) => {
    const r = shim.listDir(root + path);
    return typeof r === "number" ? [] : r.toSorted();
  };
  const cdevs = list("/dev/vfio/devices").filter((n) => /^vfio\d+$/.test(n)).map((name): VfioCdevInfo => {
    const unreadable: string[] = [];
    const link = (path: string) => {
      const r = shim.readlink(root + path);
      if (typeof r === "number") {
        unreadable.push(`${path}: errno ${-r}`);
        return undefined;
      }
      return basename(r);
    };
    const text = (path: string) => {
      const r = shim.readSmallFile(root + path, 256);
      if (typeof r === "number") {
        unreadable.push(`${path}: errno ${-r}`);
        return undefined;
      }
      return r.trim();
    };
    const pci = link(`/sys/class/vfio-dev/${name}/device`);
    const dev = `/sys/bus/pci/devices/${pci}`;
    const group = pci ? link(`${dev}/iommu_group`) : undefined;
    return {
      cdev: `/dev/vfio/devices/${name}`,
      pci,
      driver: pci ? link(`${dev}/driver`) : undefined,
      iommuGroup: group === undefined ? undefined : Number(group),
      iommu: pci ? link(`${dev}/iommu`) : undefined,
      vendor: pci ? text(`${dev}/vendor`) : undefined,
      device: pci ? text(`${dev}/device`) : undefined,
      unreadable,
    };
  });
  return {
    iommufd: list("/dev").includes("iommu"),
    cdevs,
    groups: list("/dev/vfio").filter((n) => /^\d+$/.test(n)).map(Number).toSorted((a, b) => a - b),
    iommus: list("/sys/class/iommu"),
  };
}
