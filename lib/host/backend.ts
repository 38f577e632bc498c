/**
 * The narrow boundary every host implements: send one batch of entries of one format to one target.
 * The kernel backend does it with `IOMMU_HWPT_INVALIDATE`; the in-process host (lib/host/model.ts) follows the kernel's
 * rules in software.
 *
 * @module
 */
import type { Format } from "../compile/formats.ts";

export type { Format } from "../compile/formats.ts";

/** What one batch did: the errno (0 = success) and how many entries were handled (the kernel's entry_num). */
export interface InvalidateStatus {
  /** 0 on success, else the positive errno the batch failed with (the kernel's ioctl result). */
  errno: number;
  /** Entries the host handled before stopping: `entry_num` as the kernel wrote it back (all of them on success). */
  handled: number;
}

/** A host IOMMU that takes invalidation batches. */
export interface Backend {
  /**
   * Send `count` entries (each `entryLength(format)` bytes, from the start of `entries`) to target `targetId`.
   * Fills `status`; never throws for a host error.
   */
  invalidate(targetId: number, format: Format, entries: Uint8Array, count: number, status: InvalidateStatus): void;
}
