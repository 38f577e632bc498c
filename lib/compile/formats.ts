/**
 * The one table of host entry formats: what each format is, how long its entries are, which `data_type`
 * `IOMMU_HWPT_INVALIDATE` carries it under, whether its entries name a PASID, and the function that compiles a
 * pending set into it. Every other layer asks this table; no other module lists formats.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { FORMATS, FORMAT_SPECS } from "./formats.ts";
 * assert.ok(FORMATS.includes("shadow"));
 * assert.equal(FORMAT_SPECS["vtd-s1"].entryLength, 24);
 * assert.equal(FORMAT_SPECS.shadow.dataType, undefined); // never sent to the kernel as such
 * ```
 *
 * @module
 */
import type { PasidOrRid } from "../request/request.ts";
import type { PendingSet } from "../request/pending.ts";
import type { EntryWriter } from "./entries.ts";
import { compileSelftest, compileSelftestViommu, SELFTEST_DATA_TYPE, SELFTEST_VIOMMU_DATA_TYPE } from "./selftest.ts";
import { compileShadow, SHADOW_ENTRY_LENGTH } from "./shadow.ts";
import { compileSmmuv3, type SmmuUnit, SMMUV3_DATA_TYPE } from "./smmuv3.ts";
import { compileVtd, VTD_DATA_TYPE } from "./vtd.ts";

/**
 * Host entry formats: VT-d stage-1 entries and selftest mock entries go to a nested HWPT; SMMUv3 commands and
 * selftest vIOMMU entries (`iommu_viommu_invalidate_selftest`, per virtual device) go to a vIOMMU; shadow entries
 * (iommu-relay's own: a page range to re-walk) go to a shadowed domain, which turns them into IOAS map/unmap.
 */
export type Format = "vtd-s1" | "smmuv3" | "selftest" | "selftest-viommu" | "shadow";

/** What a compiler needs to know about the unit (one target, one PASID or ASID) it compiles for. */
export interface CompileContext {
  /** The PASID the unit's bindings sit at (selftest formats pick their slot by it). */
  readonly pasid: PasidOrRid;
  /** vIOMMU formats: the virtual device the entries name. */
  readonly vdevId?: number;
  /** SMMUv3: one ASID, or every ASID of the vIOMMU. */
  readonly smmu?: SmmuUnit;
}

/** Compile `pending` for one unit into `out`; `smmuRil` says the host SMMU takes range invalidations. */
export type CompileFunction = (pending: PendingSet, unit: CompileContext, smmuRil: boolean, out: EntryWriter) => void;

/** One row of the format table. */
export interface FormatSpec {
  /** Bytes per entry, exactly as the 7.3 kernel requires them. */
  readonly entryLength: number;
  /** `IOMMU_HWPT_INVALIDATE`'s `data_type`; `undefined` for formats served in user space (shadow). */
  readonly dataType: number | undefined;
  /** The host object batches go to. */
  readonly target: "nested-hwpt" | "viommu" | "shadow-domain";
  /** Entries name a PASID (or SMMUv3 ASID) of their own, so one target serves several PASIDs. */
  readonly carriesPasid: boolean;
  /** The compiler. */
  readonly compile: CompileFunction;
}

const vtd: CompileFunction = (pending, _unit, _ril, out) => compileVtd(pending, out);
const selftest: CompileFunction = (pending, unit, _ril, out) => compileSelftest(pending, unit.pasid, out);
const selftestViommu: CompileFunction = (pending, unit, _ril, out) =>
  compileSelftestViommu(pending, unit.vdevId ?? 0, unit.pasid, out);
const shadow: CompileFunction = (pending, _unit, _ril, out) => compileShadow(pending, out);
const smmuv3: CompileFunction = (pending, unit, ril, out) => {
  if (unit.smmu === undefined) throw new TypeError("an SMMUv3 unit needs its ASID scope");
  compileSmmuv3(pending, unit.smmu, ril, out);
};

/** The format table. */
export const FORMAT_SPECS: Readonly<Record<Format, FormatSpec>> = Object.freeze({
  "vtd-s1": { entryLength: 24, dataType: VTD_DATA_TYPE, target: "nested-hwpt", carriesPasid: true, compile: vtd },
  smmuv3: { entryLength: 16, dataType: SMMUV3_DATA_TYPE, target: "viommu", carriesPasid: true, compile: smmuv3 },
  selftest: {
    entryLength: 8,
    dataType: SELFTEST_DATA_TYPE,
    target: "nested-hwpt",
    carriesPasid: false,
    compile: selftest,
  },
  "selftest-viommu": {
    entryLength: 12,
    dataType: SELFTEST_VIOMMU_DATA_TYPE,
    target: "viommu",
    carriesPasid: true,
    compile: selftestViommu,
  },
  shadow: {
    entryLength: SHADOW_ENTRY_LENGTH,
    dataType: undefined,
    target: "shadow-domain",
    carriesPasid: false,
    compile: shadow,
  },
});

/** Every format, in a fixed order (the shared relay encodes a format as its index here). */
export const FORMATS: readonly Format[] = Object.freeze(Object.keys(FORMAT_SPECS) as Format[]);

/** Bytes per entry of each format. */
export const ENTRY_LENGTH: Readonly<Record<Format, number>> = Object.freeze(
  Object.fromEntries(FORMATS.map((f) => [f, FORMAT_SPECS[f].entryLength])) as Record<Format, number>,
);

/** The kernel's cap on entries per IOMMU_HWPT_INVALIDATE (`IOMMU_HWPT_INVALIDATE_ENTRY_NUM_MAX`, 7.3). */
export const MAX_ENTRIES_PER_CALL = 1 << 19;

/**
 * The `data_type` of a format the kernel takes; throws a `TypeError` for a user-space format (shadow).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { kernelDataType } from "./formats.ts";
 * assert.equal(kernelDataType("vtd-s1"), 0); // IOMMU_HWPT_INVALIDATE_DATA_VTD_S1
 * assert.throws(() => kernelDataType("shadow"), TypeError);
 * ```
 */
export function kernelDataType(format: Format): number {
  const t = FORMAT_SPECS[format].dataType;
  if (t === undefined) throw new TypeError(`${format} entries are served in user space, not by the kernel`);
  return t;
}
