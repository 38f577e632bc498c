/**
 * What the running kernel offers, detected at run time: each ioctl or selftest op is probed with arguments the
 * kernel must reject, and the kind of rejection tells whether it exists (ENOTTY / EOPNOTSUPP: absent; anything
 * else, e.g. ENOENT for a missing object: present). Nothing is allocated by a probe.
 *
 * @module
 */
import { Errno } from "../uapi/errno.ts";
import { IOCTL } from "../../ffi/native.ts";
import { UnsupportedError } from "./errors.ts";
import type { Iommufd } from "./iommufd.ts";
import {
  HwCapabilities,
  type Ioctl,
  IOMMU_FAULT_QUEUE_ALLOC,
  IOMMU_GET_HW_INFO,
  IOMMU_HW_QUEUE_ALLOC,
  IOMMU_HWPT_GET_DIRTY_BITMAP,
  IOMMU_HWPT_INVALIDATE,
  IOMMU_HWPT_SET_DIRTY_TRACKING,
  IOMMU_IOAS_MAP_FILE,
  IOMMU_TEST_CMD,
  IOMMU_VDEVICE_ALLOC,
  IOMMU_VEVENTQ_ALLOC,
  IOMMU_VIOMMU_ALLOC,
  IommuFaultAlloc,
  IommuHwInfo,
  IommuHwptGetDirtyBitmap,
  IommuHwptInvalidate,
  IommuHwptSetDirtyTracking,
  IommuHwQueueAlloc,
  IommuIoasMapFile,
  IommuVdeviceAlloc,
  IommuVeventqAlloc,
  IommuViommuAlloc,
  TestCmdPasidCheck,
  TestOp,
} from "../uapi/mod.ts";

const { ENOTTY, EOPNOTSUPP } = Errno.values;

/** A feature, the release that brought it, how it is probed, and which answers mean "absent". */
interface Probe {
  readonly name: string;
  readonly since: string;
  readonly run: (iommufd: Iommufd) => number;
  readonly absent: readonly number[];
}

/**
 * An iommufd ioctl exists unless the kernel answers ENOTTY (an unknown ioctl number). The all-zero argument is
 * refused by every one of them before anything is allocated (id 0 never exists; type 0 / flags are refused).
 */
function ioctlProbe(name: string, since: string, ioctl: Ioctl, bytes: Uint8Array): Probe {
  return {
    name,
    since,
    run: (iommufd) => iommufd.shim[IOCTL](iommufd.fd, ioctl.request, bytes),
    absent: [-ENOTTY],
  };
}

/**
 * A selftest op exists unless the kernel answers EOPNOTSUPP (unknown op) or ENOTTY (no CONFIG_IOMMUFD_TEST).
 * Object id 0 never exists, so a known op fails with ENOENT or EINVAL without doing anything.
 */
function testOpProbe(name: string, since: string, opValue: number): Probe {
  return {
    name,
    since,
    run: (iommufd) => {
      const cmd = TestCmdPasidCheck.buffer();
      cmd.view.setUint32(4, opValue, true);
      return iommufd.shim[IOCTL](iommufd.fd, IOMMU_TEST_CMD.request, cmd.bytes);
    },
    absent: [-ENOTTY, -EOPNOTSUPP],
  };
}

function withWord(bytes: Uint8Array, offset: number, value: number): Uint8Array {
  new DataView(bytes.buffer, bytes.byteOffset).setUint32(offset, value, true);
  return bytes;
}

/**
 * `IOMMU_IOAS_MAP_FILE` exists unless ENOTTY. The shim passes only a memfd of its table, so the probe makes a one-page
 * memfd for the call (IOAS 0 does not exist: nothing is mapped) and closes it.
 */
function mapFileProbe(): Probe {
  return {
    name: "ioas-map-file",
    since: "6.13",
    run: (iommufd) => {
      const fd = iommufd.shim.memfdCreate("iommu-relay-probe", 4096);
      if (fd < 0) return fd;
      try {
        const args = IommuIoasMapFile.buffer().set("fd", fd).setU64("length", 4096);
        return iommufd.shim[IOCTL](iommufd.fd, IOMMU_IOAS_MAP_FILE.request, args.bytes);
      } finally {
        iommufd.shim.close(fd);
      }
    },
    absent: [-ENOTTY],
  };
}

const op = TestOp.values;
const PROBES: readonly Probe[] = [
  // HWPT 0 never exists: ENOENT where the ioctls exist.
  ioctlProbe("dirty-tracking", "6.7", IOMMU_HWPT_SET_DIRTY_TRACKING, IommuHwptSetDirtyTracking.buffer().bytes),
  ioctlProbe("dirty-bitmap", "6.7", IOMMU_HWPT_GET_DIRTY_BITMAP, IommuHwptGetDirtyBitmap.buffer().bytes),
  mapFileProbe(),
  // Type DEFAULT is refused (EOPNOTSUPP) before anything is allocated; only ENOTTY means no such ioctl.
  ioctlProbe("hw-queue", "6.17", IOMMU_HW_QUEUE_ALLOC, IommuHwQueueAlloc.buffer().bytes),
  // Before 6.17 the flag itself is refused (EOPNOTSUPP); with it, device 0 does not exist (ENOENT).
  {
    ...ioctlProbe(
      "hw-info-input-type",
      "6.17",
      IOMMU_GET_HW_INFO,
      withWord(IommuHwInfo.buffer().bytes, 4, HwCapabilities.values.IOMMU_HW_INFO_FLAG_INPUT_TYPE),
    ),
    absent: [-ENOTTY, -EOPNOTSUPP],
  },
  ioctlProbe("hwpt-invalidate", "6.8", IOMMU_HWPT_INVALIDATE, IommuHwptInvalidate.buffer().bytes),
  // Non-zero flags are refused (EOPNOTSUPP) before a queue is allocated.
  ioctlProbe("fault-queue", "6.11", IOMMU_FAULT_QUEUE_ALLOC, withWord(IommuFaultAlloc.buffer().bytes, 4, 1)),
  ioctlProbe("viommu", "6.13", IOMMU_VIOMMU_ALLOC, IommuViommuAlloc.buffer().bytes),
  ioctlProbe("vdevice", "6.13", IOMMU_VDEVICE_ALLOC, IommuVdeviceAlloc.buffer().bytes),
  ioctlProbe("veventq", "6.15", IOMMU_VEVENTQ_ALLOC, IommuVeventqAlloc.buffer().bytes),
  testOpProbe("selftest", "6.2", op.IOMMU_TEST_OP_MD_CHECK_IOTLB),
  testOpProbe("selftest-dirty", "6.7", op.IOMMU_TEST_OP_DIRTY),
  testOpProbe("selftest-trigger-iopf", "6.11", op.IOMMU_TEST_OP_TRIGGER_IOPF),
  testOpProbe("selftest-dev-cache", "6.13", op.IOMMU_TEST_OP_DEV_CHECK_CACHE),
  testOpProbe("selftest-trigger-vevent", "6.15", op.IOMMU_TEST_OP_TRIGGER_VEVENT),
  testOpProbe("selftest-pasid", "6.15", op.IOMMU_TEST_OP_PASID_CHECK_HWPT),
];

/** The names {@linkcode detectFeatures} reports. */
export type FeatureName =
  | "dirty-tracking"
  | "dirty-bitmap"
  | "ioas-map-file"
  | "hw-queue"
  | "hw-info-input-type"
  | "selftest-dirty"
  | "hwpt-invalidate"
  | "fault-queue"
  | "viommu"
  | "vdevice"
  | "veventq"
  | "selftest"
  | "selftest-dev-cache"
  | "selftest-trigger-iopf"
  | "selftest-trigger-vevent"
  | "selftest-pasid";

/**
 * The features of one kernel, with what each probe answered.
 *
 * @example
 * ```ts ignore
 * import { detectFeatures } from "./features.ts";
 * const report = detectFeatures(iommufd);
 * report.require("viommu"); // throws UnsupportedError on 6.12
 * ```
 */
export class KernelFeatureReport {
  /** Made by {@linkcode detectFeatures} from its probes' results. */
  constructor(
    /** Feature → present. */
    readonly present: Readonly<Record<FeatureName, boolean>>,
    /** Feature → the errno its probe got (negative) — the evidence. */
    readonly evidence: Readonly<Record<FeatureName, number>>,
    /** Feature → the release that introduced it. */
    readonly since: Readonly<Record<FeatureName, string>>,
  ) {}

  /** Whether `name` is available. */
  has(name: FeatureName): boolean {
    return this.present[name];
  }

  /** Throw a typed {@linkcode UnsupportedError} unless `name` is available. */
  require(name: FeatureName): void {
    if (!this.present[name]) {
      throw new UnsupportedError(
        name,
        `this kernel answered errno ${-this.evidence[name]} to the probe (needs Linux ${this.since[name]}+)`,
      );
    }
  }

  /** Names of the absent features. */
  get missing(): FeatureName[] {
    return (Object.keys(this.present) as FeatureName[]).filter((n) => !this.present[n]);
  }
}

/** Probe every feature on an open iommufd. */
export function detectFeatures(iommufd: Iommufd): KernelFeatureReport {
  const present = {} as Record<FeatureName, boolean>;
  const evidence = {} as Record<FeatureName, number>;
  const since = {} as Record<FeatureName, string>;
  for (const p of PROBES) {
    const r = p.run(iommufd);
    const name = p.name as FeatureName;
    evidence[name] = r;
    since[name] = p.since;
    present[name] = !p.absent.includes(r);
  }
  return new KernelFeatureReport(present, evidence, since);
}
