/**
 * Dirty pages for live migration: what the guest's CPUs wrote (the VMM's KVM dirty log of a memory slot) and what its
 * assigned devices wrote (the IOMMU's dirty bits on the nesting parents, {@linkcode GuestIommu.dirty}), merged into
 * one bitmap of guest-physical pages per round. A page either side wrote is copied again; a page neither wrote is
 * not. The device side exists only where the host IOMMU tracks dirty bits; shadow mode has none (docs/dirty-tracking.md).
 *
 * @module
 */
import { DirtyBitmap, mergeDirtyBitmaps } from "../kernel/dirty.ts";
import type { CpuDirtyLog } from "../kernel/kvm.ts";
import type { GuestDirtyLog } from "./assigned.ts";

/** A range of guest RAM: guest-physical, and where the guest-RAM IOAS maps it. */
export interface RamRegion {
  /** Guest-physical first byte. */
  readonly gpa: number;
  /** IOVA of that byte in the IOAS the nesting parents are over (equal to `gpa` in most VMMs). */
  readonly iova: number;
  /** Bytes. */
  readonly length: number;
}

/** The CPUs' side of the log (one definition: lib/kernel/kvm.ts). */
export type { CpuDirtyLog } from "../kernel/kvm.ts";

/** Options of {@linkcode MigrationDirtyLog}. */
export interface MigrationDirtyLogOptions {
  /** The guest RAM region a migration copies. */
  readonly region: RamRegion;
  /** The devices' side ({@linkcode GuestIommu.dirty}); without it only CPU writes are seen. */
  readonly devices?: GuestDirtyLog;
  /** The CPUs' side (the VMM's KVM slot over the region); without it only device writes are seen. */
  readonly cpus?: CpuDirtyLog;
  /** Bytes per bit of the merged bitmap and of the device read (default 4096). */
  readonly pageSize?: number;
}

/** Counters of a {@linkcode MigrationDirtyLog}. */
export interface MigrationRound {
  /** Pages the devices wrote this round. */
  readonly devicePages: number;
  /** Pages the CPUs wrote this round. */
  readonly cpuPages: number;
  /** Pages dirty in the merged bitmap (each copied once, however many wrote it). */
  readonly mergedPages: number;
}

/**
 * One guest RAM region's dirty log for migration: each {@linkcode MigrationDirtyLog.collect} reads and clears both
 * sides and returns their union in guest-physical pages.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { DirtyBitmap } from "../kernel/dirty.ts";
 * import { MigrationDirtyLog } from "./migration.ts";
 * const cpus = { gpa: 0, length: 0x8000, pageSize: 4096, read: (into: DirtyBitmap) => into.setPage(2) };
 * const devices = {
 *   tracking: true, start() {}, stop() {},
 *   read: (r: { iova: number; length: number; pageSize: number }) => {
 *     const b = new DirtyBitmap(r);
 *     b.setPage(5);
 *     return b;
 *   },
 * };
 * const log = new MigrationDirtyLog({ region: { gpa: 0, iova: 0x100_0000, length: 0x8000 }, devices, cpus });
 * assert.deepEqual(log.collect().dirtyPages(), [2, 5]);
 * assert.deepEqual(log.lastRound, { devicePages: 1, cpuPages: 1, mergedPages: 2 });
 * ```
 */
export class MigrationDirtyLog {
  /** The region. */
  readonly region: RamRegion;
  /** Bytes per bit of the merged bitmap. */
  readonly pageSize: number;
  readonly #devices?: GuestDirtyLog;
  readonly #cpus?: CpuDirtyLog;
  readonly #deviceBitmap: DirtyBitmap;
  readonly #cpuBitmap?: DirtyBitmap;
  /** Counters of the last collect. */
  lastRound: MigrationRound = { devicePages: 0, cpuPages: 0, mergedPages: 0 };

  /** A log of `options.region` over whichever sides are given (at least one). */
  constructor(options: MigrationDirtyLogOptions) {
    const { region, devices, cpus } = options;
    if (!devices && !cpus) throw new TypeError("a migration dirty log needs the devices' side, the CPUs' or both");
    this.region = region;
    this.pageSize = options.pageSize ?? 4096;
    this.#devices = devices;
    this.#cpus = cpus;
    this.#deviceBitmap = new DirtyBitmap({ iova: region.iova, length: region.length, pageSize: this.pageSize });
    if (cpus) {
      if (cpus.gpa > region.gpa || cpus.gpa + cpus.length < region.gpa + region.length) {
        throw new RangeError(
          `the CPU log [0x${cpus.gpa.toString(16)}, +0x${cpus.length.toString(16)}) does not cover the region ` +
            `[0x${region.gpa.toString(16)}, +0x${region.length.toString(16)})`,
        );
      }
      this.#cpuBitmap = new DirtyBitmap({ iova: cpus.gpa, length: cpus.length, pageSize: cpus.pageSize });
    }
  }

  /** Start the devices' tracking (the CPUs' log runs from the slot's registration). */
  start(): void {
    this.#devices?.start();
  }

  /** Stop the devices' tracking. */
  stop(): void {
    this.#devices?.stop();
  }

  /**
   * Read and clear both sides; the union, in guest-physical pages of the region. `final: true` reads the devices
   * without clearing (`NO_CLEAR`), for the last round before the region is unmapped.
   */
  collect(opts: { final?: boolean } = {}): DirtyBitmap {
    const region = this.region;
    const merged = new DirtyBitmap({ iova: region.gpa, length: region.length, pageSize: this.pageSize });
    const sources: { bitmap: DirtyBitmap; offset?: number }[] = [];
    let devicePages = 0, cpuPages = 0;
    if (this.#devices) {
      const written = this.#devices.read(this.#deviceBitmap, { clear: !opts.final, into: this.#deviceBitmap });
      devicePages = written.dirtyCount;
      // IOVA region.iova is guest-physical region.gpa.
      sources.push({ bitmap: written, offset: region.iova - region.gpa });
    }
    if (this.#cpus && this.#cpuBitmap) {
      this.#cpuBitmap.clear();
      this.#cpus.read(this.#cpuBitmap);
      cpuPages = this.#cpuBitmap.dirtyCount;
      sources.push({ bitmap: this.#cpuBitmap });
    }
    mergeDirtyBitmaps(merged, sources);
    this.lastRound = { devicePages, cpuPages, mergedPages: merged.dirtyCount };
    return merged;
  }
}
