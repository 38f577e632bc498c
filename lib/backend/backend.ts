/**
 * The narrow boundary every host implements: send one batch of entries of one format to one target.
 * The kernel backend does it with `IOMMU_HWPT_INVALIDATE`; the in-process host (lib/model) follows the kernel's
 * rules in software.
 *
 * @module
 */

/**
 * Host entry formats: VT-d stage-1 entries and selftest mock entries go to a nested HWPT; SMMUv3 commands and
 * selftest vIOMMU entries (`iommu_viommu_invalidate_selftest`, per virtual device) go to a vIOMMU; shadow entries
 * (iommu-relay's own: a page range to re-walk) go to a shadowed domain, which turns them into IOAS map/unmap.
 */
export type Format = "vtd-s1" | "smmuv3" | "selftest" | "selftest-viommu" | "shadow";

/** What one batch did: the errno (0 = success) and how many entries were handled (the kernel's entry_num). */
export interface InvalidateStatus {
  errno: number;
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

/** Bytes per entry of each format, as the 7.3 kernel requires them (exactly). */
export const ENTRY_LENGTH: Readonly<Record<Format, number>> = {
  "vtd-s1": 24,
  smmuv3: 16,
  selftest: 8,
  "selftest-viommu": 12,
  shadow: 16,
};

/** The kernel's cap on entries per IOMMU_HWPT_INVALIDATE (`IOMMU_HWPT_INVALIDATE_ENTRY_NUM_MAX`, 7.3). */
export const MAX_ENTRIES_PER_CALL = 1 << 19;
