/**
 * The in-process host: a deterministic software host IOMMU behind the same {@linkcode Backend} interface as the
 * kernel, following the 7.3 kernel's rules for `IOMMU_HWPT_INVALIDATE` — data type checked against the target,
 * entries validated one by one, processing stopped at the first bad entry with `entry_num` = entries handled —
 * and the selftest mock's 4-slot IOTLB. It records, per target (and per ASID on SMMUv3), which pages have been
 * invalidated, so tests can check that nothing the guest asked for was missed.
 *
 * It is a second implementation of the kernel's rules, kept honest by the differential test in the kernel suite.
 *
 * @module
 */
import type { Backend, Format, InvalidateStatus } from "./backend.ts";
import { ENTRY_LENGTH, FORMAT_SPECS, MAX_ENTRIES_PER_CALL } from "../compile/formats.ts";
import { InvalidationObservers, type ObservedInvalidation } from "../kernel/iommufd.ts";
import { decodeAtcInv, decodeSmmuTlbi, SmmuOpcode } from "../compile/smmuv3.ts";
import { PendingSet } from "../request/pending.ts";
import { Errno } from "../uapi/errno.ts";
import { MockConstants } from "../uapi/mod.ts";

const { EINVAL, ENOENT, EOPNOTSUPP, EIO, EFAULT } = Errno.values;
const SLOTS = MockConstants.values.MOCK_NESTED_DOMAIN_IOTLB_NUM;

/** An injected failure: the entry at `atEntry` of the next call to `targetId` fails with `errno`. */
export interface InjectedFailure {
  /** The target (HWPT or vIOMMU id) whose next call fails. */
  readonly targetId: number;
  /** Index of the failing entry in that call's batch: the entries before it are handled. */
  readonly atEntry: number;
  /** The positive errno reported. */
  readonly errno: number;
  /** Report this many entries handled instead of `atEntry` (to model an untrustworthy count). */
  readonly reportHandled?: number;
  /** How many calls this applies to (default 1). */
  times?: number;
}

interface ModelTarget {
  readonly format: Format | "paging";
  readonly iotlb: number[];
  /** selftest-viommu: virtual device id → its 4-slot device cache. */
  readonly vdevs: Map<number, number[]>;
  /** Invalidated pages per ASID key ("" for non-SMMU). */
  readonly invalidated: Map<string, PendingSet>;
}

const CALL_LOG = 4096;
const UNLIMITED = { maxRanges: Number.MAX_SAFE_INTEGER, maxPages: Number.MAX_SAFE_INTEGER };

/**
 * A software host.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { ModelHost } from "./model.ts";
 * const host = new ModelHost();
 * const id = host.createTarget("selftest", 0xbadbeef);
 * const entry = new Uint8Array(8);
 * new DataView(entry.buffer).setUint32(4, 2, true);
 * const status = { errno: 0, handled: 0 };
 * host.invalidate(id, "selftest", entry, 1, status);
 * assert.deepEqual(status, { errno: 0, handled: 1 });
 * assert.deepEqual(host.iotlb(id), [0xbadbeef, 0xbadbeef, 0, 0xbadbeef]);
 * ```
 */
export class ModelHost implements Backend {
  readonly #targets = new Map<number, ModelTarget>();
  #nextId = 1;
  /** Failures to inject, consumed in order. */
  readonly inject: InjectedFailure[] = [];
  /** Calls made since the host was created. */
  callCount = 0;
  /** The recent calls (at least the last 4,096), for inspection: target, count, errno, handled. */
  readonly calls: { targetId: number; count: number; errno: number; handled: number }[] = [];
  /** Follow 6.12's answer for invalidating a paging HWPT (ENOENT) instead of 7.3's (EINVAL). */
  kernel612 = false;

  /** A nested HWPT (VT-d, selftest) or vIOMMU (SMMUv3) — or a paging HWPT, which refuses invalidation. */
  createTarget(format: Format | "paging", iotlb: number = MockConstants.values.IOMMU_TEST_IOTLB_DEFAULT): number {
    const id = this.#nextId++;
    this.#targets.set(id, { format, iotlb: new Array(SLOTS).fill(iotlb), vdevs: new Map(), invalidated: new Map() });
    return id;
  }

  /** Give a selftest-viommu target a virtual device with id `virtId` (its cache starts at `cache`). */
  addVdevice(
    targetId: number,
    virtId: number,
    cache: number = MockConstants.values.IOMMU_TEST_DEV_CACHE_DEFAULT,
  ): void {
    const t = this.#targets.get(targetId);
    if (!t || t.format !== "selftest-viommu") throw new Error(`target ${targetId} is not a selftest vIOMMU`);
    t.vdevs.set(virtId, new Array(MockConstants.values.MOCK_DEV_CACHE_NUM).fill(cache));
  }

  /** The device cache of virtual device `virtId` on a selftest-viommu target. */
  deviceCache(targetId: number, virtId: number): number[] {
    return [...(this.#targets.get(targetId)?.vdevs.get(virtId) ?? [])];
  }

  /** Destroy a target; later calls to it are ENOENT. */
  destroyTarget(id: number): void {
    const t = this.#targets.get(id);
    if (!t) return;
    this.#targets.delete(id);
    // What reached it before it went stays readable until the next resetCoverage, so a test can check that work
    // queued for a replaced table reached that table before its destruction.
    if (t.invalidated.size) this.#destroyed.set(id, t);
  }

  readonly #destroyed = new Map<number, ModelTarget>();

  /** A live target, or a destroyed one whose coverage is still kept. */
  #coverageOf(id: number): ModelTarget | undefined {
    return this.#targets.get(id) ?? this.#destroyed.get(id);
  }

  /** The selftest IOTLB slots of a target. */
  iotlb(id: number): number[] {
    return [...(this.#targets.get(id)?.iotlb ?? [])];
  }

  /** Whether `page` (of `asid` on SMMUv3) has been invalidated on target `id` since the last reset. */
  covered(id: number, page: number, asid?: number): boolean {
    const t = this.#coverageOf(id);
    if (!t) return false;
    if (t.format === "smmuv3") {
      return (t.invalidated.get("*")?.covers(page) ?? false) ||
        (asid !== undefined && (t.invalidated.get(`${asid}`)?.covers(page) ?? false));
    }
    return t.invalidated.get("")?.covers(page) ?? false;
  }

  /** Whether an ATC_INV covered `page` of stream `vsid` (substream `ssid`, undefined = no PASID) on target `id`. */
  atcCovered(id: number, vsid: number, ssid: number | undefined, page: number): boolean {
    return this.#coverageOf(id)?.invalidated.get(`atc/${vsid}/${ssid ?? "rid"}`)?.covers(page) ?? false;
  }

  /** CFGI_CD commands received: (target, vSID, SSID), in order. */
  readonly configInvalidations: { targetId: number; vsid: number; ssid: number }[] = [];

  /**
   * What was invalidated on target `id` since the last reset, over all its caches (every ASID, ATCs): whether a
   * whole-space flush reached it, and how many pages its range invalidations covered.
   */
  coverage(id: number): { wholeSpace: boolean; pages: number } {
    let wholeSpace = false, pages = 0;
    for (const set of this.#coverageOf(id)?.invalidated.values() ?? []) {
      wholeSpace ||= set.all;
      pages += set.pages;
    }
    return { wholeSpace, pages };
  }

  /** Forget what was invalidated (the IOTLB slots stay). */
  resetCoverage(): void {
    for (const t of this.#targets.values()) t.invalidated.clear();
    this.#destroyed.clear();
  }

  #mark(t: ModelTarget, key: string, first: number, pages: number | "all"): void {
    let set = t.invalidated.get(key);
    if (!set) t.invalidated.set(key, set = new PendingSet(UNLIMITED));
    if (pages === "all") set.addAll(0);
    else set.addRange(first, Math.min(pages, 2 ** 52 - first), false, 0);
  }

  invalidate(targetId: number, format: Format, entries: Uint8Array, count: number, status: InvalidateStatus): void {
    this.#invalidate(targetId, format, entries, count, status);
    this.callCount++;
    const calls = this.calls;
    // A test aid, not host state: bounded, so a long-lived in-process host (a broker, a soak) stays flat.
    if (calls.length >= 2 * CALL_LOG) calls.splice(0, calls.length - CALL_LOG);
    calls.push({ targetId, count, errno: status.errno, handled: status.handled });
    this.#observers.notify(
      targetId,
      FORMAT_SPECS[format].dataType ?? -1,
      ENTRY_LENGTH[format],
      count,
      entries,
      status.errno,
      status.handled,
    );
  }

  readonly #observers = new InvalidationObservers();

  /**
   * Watch every invalidation call this host takes, as `Iommufd.observeInvalidations` does on a kernel: a copy of
   * the entries with the errno and handled count. Returns the function that stops watching.
   *
   * @example
   * ```ts
   * import assert from "node:assert/strict";
   * import { ModelHost } from "./model.ts";
   * const host = new ModelHost();
   * const seen: number[] = [];
   * const stop = host.observeInvalidations((call) => seen.push(call.count));
   * const target = host.createTarget("selftest");
   * host.invalidate(target, "selftest", new Uint8Array(8), 1, { errno: 0, handled: 0 });
   * stop();
   * host.invalidate(target, "selftest", new Uint8Array(8), 1, { errno: 0, handled: 0 });
   * assert.deepEqual(seen, [1]);
   * ```
   */
  observeInvalidations(observer: (call: ObservedInvalidation) => void): () => void {
    return this.#observers.observe(observer);
  }

  #current = 0;

  #invalidate(targetId: number, format: Format, entries: Uint8Array, count: number, status: InvalidateStatus): void {
    this.#current = targetId;
    status.errno = 0;
    status.handled = 0;
    const len = ENTRY_LENGTH[format];
    if (count > MAX_ENTRIES_PER_CALL) return void (status.errno = EINVAL);
    const t = this.#targets.get(targetId);
    if (!t) return void (status.errno = ENOENT);
    if (t.format === "paging") return void (status.errno = this.kernel612 ? ENOENT : EINVAL);
    if (t.format !== format) return void (status.errno = EINVAL); // the driver checks the data type first
    if (entries.byteLength < count * len) return void (status.errno = EFAULT);
    const injected = this.inject.find((f) => f.targetId === targetId);
    const view = new DataView(entries.buffer, entries.byteOffset, entries.byteLength);
    for (let i = 0; i < count; i++) {
      if (injected && i === injected.atEntry) {
        status.errno = injected.errno;
        status.handled = injected.reportHandled ?? i;
        if ((injected.times = (injected.times ?? 1) - 1) <= 0) this.inject.splice(this.inject.indexOf(injected), 1);
        return;
      }
      const errno = this.#entry(t, format, view, i * len);
      if (errno) {
        status.errno = errno;
        status.handled = i;
        return;
      }
    }
    status.handled = count;
  }

  /** Apply one entry; returns an errno or 0. */
  #entry(t: ModelTarget, format: Format, v: DataView, at: number): number {
    switch (format) {
      case "shadow":
        return EOPNOTSUPP; // shadow entries go to lib/shadow's backend, never to a nested target
      case "selftest": {
        const flags = v.getUint32(at, true);
        const id = v.getUint32(at + 4, true);
        if (flags & ~MockConstants.values.IOMMU_TEST_INVALIDATE_FLAG_ALL) return EOPNOTSUPP;
        if (id >= SLOTS) return EINVAL;
        if (flags) t.iotlb.fill(0);
        else t.iotlb[id] = 0;
        this.#mark(t, "", 0, flags ? "all" : 1); // the mock has no pages: record the slot's flush as page 0
        return 0;
      }
      case "vtd-s1": {
        const addrLo = v.getUint32(at, true);
        const addrHi = v.getUint32(at + 4, true);
        const npLo = v.getUint32(at + 8, true);
        const npHi = v.getUint32(at + 12, true);
        const flags = v.getUint32(at + 16, true);
        if ((flags & ~1) || v.getUint32(at + 20, true)) return EOPNOTSUPP;
        const all = npLo === 0xffff_ffff && npHi === 0xffff_ffff;
        if (addrLo & 0xfff || (all && (addrLo || addrHi))) return EINVAL;
        if (all) this.#mark(t, "", 0, "all");
        else {
          const first = addrHi * 0x10_0000 + addrLo / 4096;
          const pages = npHi * 2 ** 32 + npLo;
          // The kernel flushes a window covering [addr, addr + npages*4K - 1]; an overflowing end wraps there.
          if (pages > 0) this.#mark(t, "", first, pages);
        }
        return 0;
      }
      case "selftest-viommu": {
        const flags = v.getUint32(at, true);
        const vdev = v.getUint32(at + 4, true);
        const cacheId = v.getUint32(at + 8, true);
        if (flags & ~MockConstants.values.IOMMU_TEST_INVALIDATE_FLAG_ALL) return EOPNOTSUPP;
        if (cacheId > MockConstants.values.MOCK_DEV_CACHE_ID_MAX) return EINVAL;
        const cache = t.vdevs.get(vdev);
        if (!cache) return EINVAL;
        if (flags) cache.fill(0);
        else cache[cacheId] = 0;
        this.#mark(t, `v${vdev}`, 0, flags ? "all" : 1);
        return 0;
      }
      case "smmuv3": {
        const op = v.getUint8(at);
        const cmd = decodeSmmuTlbi(new Uint8Array(v.buffer, v.byteOffset, v.byteLength), at);
        switch (op) {
          case SmmuOpcode.TLBI_NH_ALL:
            this.#mark(t, "*", 0, "all");
            return 0;
          case SmmuOpcode.TLBI_NH_ASID:
            this.#mark(t, `${cmd.asid}`, 0, "all");
            return 0;
          case SmmuOpcode.TLBI_NH_VA:
            this.#mark(t, `${cmd.asid}`, cmd.page, cmd.pages);
            return 0;
          case SmmuOpcode.TLBI_NH_VAA:
            this.#mark(t, "*", cmd.page, cmd.pages);
            return 0;
          case SmmuOpcode.CFGI_CD: {
            const w0 = v.getUint32(at, true);
            this.configInvalidations.push({
              targetId: this.#current,
              vsid: v.getUint32(at + 4, true),
              ssid: (w0 >>> 12) & 0xfffff,
            });
            return 0;
          }
          case SmmuOpcode.CFGI_CD_ALL:
            return 0;
          case SmmuOpcode.ATC_INV: {
            const a = decodeAtcInv(new Uint8Array(v.buffer, v.byteOffset, v.byteLength), at);
            this.#mark(t, `atc/${a.vsid}/${a.ssid ?? "rid"}`, a.page, a.size >= 52 ? "all" : 2 ** a.size);
            return 0;
          }
          default:
            return EIO; // arm_vsmmu_convert_user_cmd: unsupported command
        }
      }
    }
  }
}
