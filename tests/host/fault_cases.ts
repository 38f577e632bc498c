// The failure modes the reliability tests inject, shared by the in-process and the kernel runs.
import type { InjectedBackendFault } from "../../lib/host/faults.ts";

export interface FaultCase {
  readonly name: string;
  readonly format: "vtd-s1" | "smmuv3";
  readonly faults: InjectedBackendFault[];
  /** Requests (by index 0..3) the guest must see failed. */
  readonly failed: number[];
}

export const FAULT_CASES: FaultCase[] = [
  { name: "EINTR is retried", format: "vtd-s1", faults: [{ call: 0, errno: 4, sent: "none" }], failed: [] },
  {
    name: "EAGAIN twice is retried",
    format: "vtd-s1",
    faults: [{ call: 0, errno: 11, sent: "none" }, { call: 1, errno: 11, sent: "none" }],
    failed: [],
  },
  {
    name: "ENOMEM before anything: the whole batch is resent",
    format: "vtd-s1",
    faults: [{ call: 0, errno: 12, sent: "none" }],
    failed: [],
  },
  {
    name: "ENOMEM twice: every request fails, position unknown",
    format: "vtd-s1",
    faults: [{ call: 0, errno: 12, sent: "none" }, { call: 1, errno: 12, sent: "none" }],
    failed: [0, 1, 2, 3],
  },
  {
    name: "EINVAL on entry 2: that request fails, the rest are resent",
    format: "vtd-s1",
    faults: [{ call: 0, errno: 22, sent: 2 }],
    failed: [2],
  },
  { name: "EOPNOTSUPP on entry 0", format: "vtd-s1", faults: [{ call: 0, errno: 95, sent: 0 }], failed: [0] },
  {
    name: "EBUSY during a device reset (FLR) on entry 1",
    format: "vtd-s1",
    faults: [{ call: 0, errno: 16, sent: 1 }],
    failed: [1],
  },
  {
    name: "ENODEV: the device is gone; every request fails",
    format: "vtd-s1",
    faults: [0, 1, 2, 3, 4].map((call) => ({ call, errno: 19, sent: "none" as const })),
    failed: [0, 1, 2, 3],
  },
  {
    name: "EBADF before anything",
    format: "vtd-s1",
    faults: [0, 1, 2, 3, 4].map((call) => ({ call, errno: 9, sent: "none" as const })),
    failed: [0, 1, 2, 3],
  },
  {
    name: "SMMUv3 EIO with an overstated count: resent whole",
    format: "smmuv3",
    faults: [{ call: 0, errno: 5, sent: 1, reportHandled: 3 }],
    failed: [],
  },
  {
    name: "SMMUv3 EINVAL (validation) at entry 1: trusted",
    format: "smmuv3",
    faults: [{ call: 0, errno: 22, sent: 1 }],
    failed: [1],
  },
];
