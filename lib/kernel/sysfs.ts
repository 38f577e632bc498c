/**
 * What the host offers, read from /dev and sysfs through the shim (Deno's own file APIs want `-A` for /sys and
 * /dev): the iommufd node, each VFIO device cdev with its PCI function, driver, IOMMU group and IOMMU, the legacy
 * VFIO group nodes and the IOMMUs the kernel registered. Read-only; nothing is opened for writing. The shim reads
 * only these fixed places, by pattern (ffi/shim.c, "host discovery"): no path is chosen here.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { NativeShim } from "../../ffi/native.ts";
 * import { describeHost } from "./sysfs.ts";
 * using shim = await NativeShim.load();
 * const host = describeHost(shim);
 * assert.ok(Array.isArray(host.cdevs));
 * assert.equal(typeof host.iommufd, "boolean");
 * ```
 *
 * @module
 */
import { CDEV_ATTR, HOST_LIST, type NativeShim } from "../../ffi/native.ts";

/** One VFIO device cdev (`/dev/vfio/devices/vfioN`) and what sysfs says of it. */
export interface VfioCdevInfo {
  /** The cdev's path, e.g. `/dev/vfio/devices/vfio0`. */
  readonly cdev: string;
  /** PCI address, e.g. `0000:00:03.0` (undefined for a non-PCI device). */
  readonly pci?: string;
  /** The bound driver (`vfio-pci` for an assigned device). */
  readonly driver?: string;
  /** The device's IOMMU group number (`iommu_group` link); undefined when it has none. */
  readonly iommuGroup?: number;
  /** The IOMMU instance (`dmar0`, `smmu3.0x...`). */
  readonly iommu?: string;
  /** PCI vendor and device ids as sysfs prints them (`0x1234`). */
  readonly vendor?: string;
  /** PCI device id as sysfs prints it (`0x1234`). */
  readonly device?: string;
  /** What could not be read, as `path: errno`. */
  readonly unreadable: readonly string[];
}

/** The host as seen from /dev and sysfs. */
export interface HostDescription {
  /** Whether /dev/iommu exists. */
  readonly iommufd: boolean;
  /** Every VFIO device cdev under `/dev/vfio/devices`. */
  readonly cdevs: readonly VfioCdevInfo[];
  /** Legacy VFIO group nodes (`/dev/vfio/<group>`). */
  readonly groups: readonly number[];
  /** Registered IOMMU instances (`/sys/class/iommu`). */
  readonly iommus: readonly string[];
}

/** Read the host's description (tests see a fake tree by running this in a mount namespace). */
export function describeHost(shim: NativeShim): HostDescription {
  const list = (which: number) => {
    const r = shim.hostList(which);
    return typeof r === "number" ? [] : r.toSorted();
  };
  const cdevs = list(HOST_LIST.VFIO_CDEVS).map((name): VfioCdevInfo => {
    const n = Number(name.slice(4));
    const unreadable: string[] = [];
    const attr = (which: number, path: string) => {
      const r = shim.cdevAttr(n, which);
      if (typeof r === "number") {
        unreadable.push(`${path}: errno ${-r}`);
        return undefined;
      }
      return r.trim();
    };
    const pci = attr(CDEV_ATTR.PCI, `/sys/class/vfio-dev/${name}/device`);
    const dev = `/sys/bus/pci/devices/${pci}`;
    const group = pci ? attr(CDEV_ATTR.IOMMU_GROUP, `${dev}/iommu_group`) : undefined;
    return {
      cdev: `/dev/vfio/devices/${name}`,
      pci,
      driver: pci ? attr(CDEV_ATTR.DRIVER, `${dev}/driver`) : undefined,
      iommuGroup: group === undefined ? undefined : Number(group),
      iommu: pci ? attr(CDEV_ATTR.IOMMU, `${dev}/iommu`) : undefined,
      vendor: pci ? attr(CDEV_ATTR.VENDOR, `${dev}/vendor`) : undefined,
      device: pci ? attr(CDEV_ATTR.DEVICE, `${dev}/device`) : undefined,
      unreadable,
    };
  });
  return {
    iommufd: shim.hasIommufd(),
    cdevs,
    groups: list(HOST_LIST.VFIO_GROUPS).map(Number).toSorted((a, b) => a - b),
    iommus: list(HOST_LIST.IOMMUS),
  };
}
