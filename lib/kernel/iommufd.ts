/**
 * One object per iommufd kernel object, over the shim: the iommufd itself, IOAS, HWPT, fault queue, vIOMMU,
 * vDEVICE and vEVENTQ. Each is disposable (`using`): disposal destroys the kernel object, children before
 * parents, and a failed allocation leaves nothing behind.
 *
 * Every failing call throws a {@linkcode KernelError} naming the errno, the operation and the ioctl, except the
 * hot invalidation path ({@linkcode InvalidationTarget.invalidateRaw}), which reports through reused fields.
 *
 * @module
 */
import { FD_KIND, IOCTL, IOCTL_WITH_POINTER, type NativeShim } from "../../ffi/native.ts";
import { KernelError, UnsupportedError } from "./errors.ts";
import { DirtyBitmap, type DirtyRange } from "./dirty.ts";
import type { Memfd } from "./memfd.ts";
import {
  DirtyTrackingFlags,
  type FieldSpec,
  HwCapabilities,
  HwptAllocFlags,
  IoasMapFlags,
  type Ioctl,
  IOMMU_DESTROY,
  IOMMU_FAULT_QUEUE_ALLOC,
  IOMMU_GET_HW_INFO,
  IOMMU_HW_QUEUE_ALLOC,
  IOMMU_HWPT_ALLOC,
  IOMMU_HWPT_GET_DIRTY_BITMAP,
  IOMMU_HWPT_INVALIDATE,
  IOMMU_HWPT_SET_DIRTY_TRACKING,
  IOMMU_IOAS_ALLOC,
  IOMMU_IOAS_IOVA_RANGES,
  IOMMU_IOAS_MAP,
  IOMMU_IOAS_MAP_FILE,
  IOMMU_IOAS_UNMAP,
  IOMMU_OPTION,
  IOMMU_VDEVICE_ALLOC,
  IOMMU_VEVENTQ_ALLOC,
  IOMMU_VIOMMU_ALLOC,
  IommuDestroy,
  IommuFaultAlloc,
  IommufdVeventHeader,
  IommuHwInfo,
  IommuHwptAlloc,
  IommuHwptGetDirtyBitmap,
  IommuHwptInvalidate,
  IommuHwptPageResponse,
  IommuHwptPgfault,
  IommuHwptSetDirtyTracking,
  IommuHwQueueAlloc,
  IommuIoasAlloc,
  IommuIoasIovaRanges,
  IommuIoasMap,
  IommuIoasMapFile,
  IommuIoasUnmap,
  IommuIovaRange,
  IommuOption,
  IommuVdeviceAlloc,
  IommuVeventqAlloc,
  IommuViommuAlloc,
  readU64Number,
  type StructBuffer,
  UAPI,
} from "../uapi/mod.ts";

const REGISTERED: ReadonlySet<Ioctl> = new Set(UAPI.ioctls);
const INVALIDATE_FIELDS = IommuHwptInvalidate.fields;

/** Only the ioctls lib/uapi declares (and the golden check verifies) are ever issued on an iommufd. */
function registered(ioctl: Ioctl): void {
  if (!REGISTERED.has(ioctl)) {
    throw new TypeError(`${ioctl.name} (0x${ioctl.request.toString(16)}) is not an ioctl iommu-relay declares`);
  }
}

/** One `IOMMU_HWPT_INVALIDATE` as it left for the kernel (see {@linkcode Iommufd.observeInvalidations}). */
export interface ObservedInvalidation {
  /** The nested HWPT or vIOMMU it named. */
  readonly objectId: number;
  /** `data_type`: which vendor entry format (-1 from the in-process host for a format served in user space). */
  readonly dataType: number;
  /** `entry_len`: bytes per entry. */
  readonly entryLen: number;
  /** `entry_num` in: how many entries were passed. */
  readonly count: number;
  /** A copy of the entries' bytes. */
  readonly entries: Uint8Array;
  /** 0, or the errno the kernel returned. */
  readonly errno: number;
  /** `entry_num` out: how many entries the kernel handled. */
  readonly handled: number;
}

/**
 * Who watches a host's invalidation calls: the one implementation behind `Iommufd.observeInvalidations` and the
 * in-process host's. `notify` costs one size check while nobody watches; with watchers it copies the entries once.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { InvalidationObservers } from "./iommufd.ts";
 * const observers = new InvalidationObservers();
 * const seen: number[] = [];
 * const stop = observers.observe((call) => seen.push(call.handled));
 * observers.notify(7, 0, 24, 2, new Uint8Array(48), 0, 2);
 * stop();
 * observers.notify(7, 0, 24, 2, new Uint8Array(48), 0, 2);
 * assert.deepEqual(seen, [2]);
 * ```
 */
export class InvalidationObservers {
  readonly #observers = new Set<(call: ObservedInvalidation) => void>();

  /** Add `observer` (each call adds a new one); returns the function that removes it. */
  observe(observer: (call: ObservedInvalidation) => void): () => void {
    const own = (call: ObservedInvalidation) => observer(call);
    this.#observers.add(own);
    return () => void this.#observers.delete(own);
  }

  /** Tell every observer of one call: `count` entries of `entryLen` bytes at the start of `entries`. */
  notify(
    objectId: number,
    dataType: number,
    entryLen: number,
    count: number,
    entries: Uint8Array,
    errno: number,
    handled: number,
  ): void {
    if (this.#observers.size === 0) return;
    const call: ObservedInvalidation = {
      objectId,
      dataType,
      entryLen,
      count,
      entries: entries.slice(0, entryLen * count),
      errno,
      handled,
    };
    for (const observer of this.#observers) observer(call);
  }
}

/**
 * An open `/dev/iommu`. Close it last: its objects are destroyed by their own disposal first.
 *
 * @example
 * ```ts ignore
 * import assert from "node:assert/strict";
 * import { NativeShim } from "../../ffi/native.ts";
 * import { Iommufd } from "./iommufd.ts";
 * using shim = await NativeShim.load();
 * using iommufd = Iommufd.open(shim);
 * using ioas = iommufd.allocIoas();
 * assert.ok(ioas.id > 0);
 * ```
 */
export class Iommufd implements Disposable {
  /** The iommufd file descriptor. */
  readonly fd: number;
  /** The shim it was opened through. */
  readonly shim: NativeShim;
  #closed = false;
  readonly #destroyArgs = IommuDestroy.buffer();

  private constructor(shim: NativeShim, fd: number) {
    this.shim = shim;
    this.fd = fd;
  }

  /** Open `/dev/iommu` (or `path`). */
  static open(shim: NativeShim, path = "/dev/iommu"): Iommufd {
    const fd = shim.open(path);
    if (fd < 0) throw new KernelError(fd, `open ${path}`, "open");
    return new Iommufd(shim, fd);
  }

  /**
   * An iommufd this process was handed already open (as QEMU takes `-object iommufd,fd=N`): the shim checks it with
   * `fstat` and takes it into its table, so no device path is opened. An fd that is not an iommufd is refused by the
   * shim ({@linkcode ShimRefusedError}), or, if it is another device a relay uses, closed and refused here with a
   * {@linkcode KernelError} (ENOTTY).
   *
   * @example
   * ```ts ignore
   * // The parent ran: exec 3<>/dev/iommu
   * using shim = await NativeShim.load();
   * using iommufd = Iommufd.fromFd(shim, 3);
   * using ioas = iommufd.allocIoas();
   * ```
   */
  static fromFd(shim: NativeShim, fd: number): Iommufd {
    adoptAs(shim, fd, FD_KIND.IOMMUFD, "an iommufd");
    return new Iommufd(shim, fd);
  }

  /** Whether the fd was closed. */
  get closed(): boolean {
    return this.#closed;
  }

  /** Issue `ioctl` with `args`; throws {@linkcode KernelError} on failure. */
  call(ioctl: Ioctl, args: StructBuffer<Record<string, FieldSpec>>, op: string): number {
    registered(ioctl);
    const r = this.shim[IOCTL](this.fd, ioctl.request, args.bytes);
    if (r < 0) throw new KernelError(r, op, ioctl.name);
    return r;
  }

  /** Issue `ioctl` after storing the address of `data` in the u64 field `pointerField` of `args`. */
  callWithPointer(
    ioctl: Ioctl,
    args: StructBuffer<Record<string, FieldSpec>>,
    pointerField: string,
    data: Uint8Array,
    op: string,
  ): number {
    registered(ioctl);
    const r = this.shim[IOCTL_WITH_POINTER](this.fd, ioctl.request, args.bytes, args.offsetOf(pointerField), data);
    if (r < 0) throw new KernelError(r, op, ioctl.name);
    return r;
  }

  /** `IOMMU_DESTROY` an object by id. */
  destroy(id: number): void {
    this.#destroyArgs.set("id", id);
    this.call(IOMMU_DESTROY, this.#destroyArgs, `destroy object ${id}`);
  }

  /**
   * `IOMMU_HWPT_INVALIDATE` on object `objectId` (a nested HWPT or a vIOMMU): the one encoder of its arguments,
   * for every caller (kernel objects and the relay's kernel backend). The hot path: the argument struct is
   * allocated once and nothing is allocated per call. Returns 0 or `-errno`; either way
   * {@linkcode Iommufd.invalidateHandled} holds the kernel's `entry_num`, which it writes back even on error.
   */
  invalidateRaw(objectId: number, dataType: number, entries: Uint8Array, entryLen: number, count: number): number {
    const a = this.#invalidateArgs;
    const v = a.view;
    v.setUint32(INVALIDATE_FIELDS.hwpt_id.offset, objectId, true);
    v.setUint32(INVALIDATE_FIELDS.data_type.offset, dataType, true);
    v.setUint32(INVALIDATE_FIELDS.entry_len.offset, entryLen, true);
    v.setUint32(INVALIDATE_FIELDS.entry_num.offset, count, true);
    const r = this.shim[IOCTL_WITH_POINTER](
      this.fd,
      IOMMU_HWPT_INVALIDATE.request,
      a.bytes,
      INVALIDATE_FIELDS.data_uptr.offset,
      entries,
    );
    this.invalidateHandled = v.getUint32(INVALIDATE_FIELDS.entry_num.offset, true);
    this.#invalidationObservers.notify(
      objectId,
      dataType,
      entryLen,
      count,
      entries,
      r < 0 ? -r : 0,
      this.invalidateHandled,
    );
    return r < 0 ? r : 0;
  }

  readonly #invalidationObservers = new InvalidationObservers();

  /**
   * Watch every `IOMMU_HWPT_INVALIDATE` this iommufd makes, as it left for the kernel: the entries are a copy of the
   * bytes the shim passed, with the kernel's errno and handled count. For a check that must not trust the relay's
   * own counters (the Linux guest's suite compares them with what the guest's queue asked for); it costs nothing
   * while nobody watches. Returns the function that stops watching.
   *
   * @example
   * ```ts ignore
   * const seen: ObservedInvalidation[] = [];
   * const stop = iommufd.observeInvalidations((call) => seen.push(call));
   * // ... the relay runs ...
   * stop();
   * ```
   */
  observeInvalidations(observer: (call: ObservedInvalidation) => void): () => void {
    return this.#invalidationObservers.observe(observer);
  }

  /** The kernel's `entry_num` after the last {@linkcode Iommufd.invalidateRaw}. */
  invalidateHandled = 0;
  readonly #invalidateArgs = IommuHwptInvalidate.buffer();

  /** `IOMMU_IOAS_ALLOC`. */
  allocIoas(): Ioas {
    const args = IommuIoasAlloc.buffer();
    this.call(IOMMU_IOAS_ALLOC, args, "alloc IOAS");
    return new Ioas(this, args.get("out_ioas_id"));
  }

  /** `IOMMU_OPTION` get: a global option (objectId 0) or an IOAS option. */
  getOption(optionId: number, objectId = 0): bigint {
    const args = IommuOption.buffer().set("option_id", optionId).set("op", 1).set("object_id", objectId);
    this.call(IOMMU_OPTION, args, `get option ${optionId}`);
    return args.getU64("val64");
  }

  /** `IOMMU_OPTION` set. */
  setOption(optionId: number, value: number | bigint, objectId = 0): void {
    const args = IommuOption.buffer().set("option_id", optionId).set("op", 0).set("object_id", objectId)
      .setU64("val64", value);
    this.call(IOMMU_OPTION, args, `set option ${optionId}`);
  }

  /**
   * `IOMMU_GET_HW_INFO` for a device: driver data (VT-d CAP/ECAP, SMMUv3 IDRs, selftest register), PASID width and
   * capabilities. `dataType` asks for a specific type (6.17+ `IOMMU_HW_INFO_FLAG_INPUT_TYPE`).
   */
  getHwInfo(devId: number, dataType?: number): HwInfo {
    const data = new Uint8Array(256);
    const args = IommuHwInfo.buffer().set("dev_id", devId).set("data_len", data.byteLength);
    if (dataType !== undefined) {
      args.set("flags", HwCapabilities.values.IOMMU_HW_INFO_FLAG_INPUT_TYPE).set("in_data_type", dataType);
    }
    this.callWithPointer(IOMMU_GET_HW_INFO, args, "data_uptr", data, `get hw info of device ${devId}`);
    const len = Math.min(args.get("data_len"), data.byteLength);
    return {
      type: args.get("out_data_type"),
      data: data.slice(0, len),
      maxPasidLog2: args.get("out_max_pasid_log2"),
      capabilities: args.getU64("out_capabilities"),
    };
  }

  /**
   * `IOMMU_GET_HW_INFO` with `IOMMU_HW_INFO_FLAG_INPUT_TYPE` (6.17): the device's IOMMU data of type `dataType`
   * (e.g. the plain SMMUv3 IDRs of an SMMU that has a Tegra241 CMDQV, whose default answer is the CMDQV's), or an
   * {@linkcode UnsupportedError} when the kernel answers EOPNOTSUPP: a kernel before 6.17 (it refuses the flag) or an
   * IOMMU that has no data of that type. Other errors are {@linkcode KernelError}s.
   *
   * @example
   * ```ts ignore
   * const smmu = iommufd.requestHwInfo(devId, HwInfoType.values.IOMMU_HW_INFO_TYPE_ARM_SMMUV3);
   * ```
   */
  requestHwInfo(devId: number, dataType: number): HwInfo {
    try {
      return this.getHwInfo(devId, dataType);
    } catch (e) {
      if (e instanceof KernelError && e.errno === 95 /* EOPNOTSUPP */) {
        throw new UnsupportedError(
          "hw-info-input-type",
          `device ${devId}: GET_HW_INFO with IOMMU_HW_INFO_FLAG_INPUT_TYPE and type ${dataType} answered EOPNOTSUPP ` +
            "(a kernel before 6.17, or an IOMMU without data of that type)",
        );
      }
      throw e;
    }
  }

  /**
   * `IOMMU_HWPT_ALLOC`: a paging HWPT over an IOAS (optionally a nesting parent), or a nested HWPT from
   * driver data (`data.type` + `data.bytes`) over a nesting parent or vIOMMU.
   */
  allocHwpt(opts: HwptAllocOptions): Hwpt {
    const args = IommuHwptAlloc.buffer().set("flags", opts.flags ?? 0).set("dev_id", opts.devId).set(
      "pt_id",
      opts.ptId,
    );
    if (opts.faultId !== undefined) {
      args.set("flags", args.get("flags") | HwptAllocFlags.values.IOMMU_HWPT_FAULT_ID_VALID).set(
        "fault_id",
        opts.faultId,
      );
    }
    const op = opts.data ? "alloc nested HWPT" : "alloc HWPT";
    if (opts.data) {
      args.set("data_type", opts.data.type).set("data_len", opts.data.bytes.byteLength);
      this.callWithPointer(IOMMU_HWPT_ALLOC, args, "data_uptr", opts.data.bytes, op);
    } else {
      this.call(IOMMU_HWPT_ALLOC, args, op);
    }
    return new Hwpt(this, args.get("out_hwpt_id"));
  }

  /** `IOMMU_FAULT_QUEUE_ALLOC`: a fault queue and its fd. */
  allocFaultQueue(): FaultQueue {
    const args = IommuFaultAlloc.buffer();
    this.call(IOMMU_FAULT_QUEUE_ALLOC, args, "alloc fault queue");
    return new FaultQueue(this, args.get("out_fault_id"), args.get("out_fault_fd"));
  }

  /** `IOMMU_VIOMMU_ALLOC` over a nesting-parent HWPT. */
  allocViommu(opts: { type: number; devId: number; hwptId: number; data?: Uint8Array }): Viommu {
    const args = IommuViommuAlloc.buffer().set("type", opts.type).set("dev_id", opts.devId).set("hwpt_id", opts.hwptId);
    if (opts.data) {
      args.set("data_len", opts.data.byteLength);
      this.callWithPointer(IOMMU_VIOMMU_ALLOC, args, "data_uptr", opts.data, "alloc vIOMMU");
    } else {
      this.call(IOMMU_VIOMMU_ALLOC, args, "alloc vIOMMU");
    }
    return new Viommu(this, args.get("out_viommu_id"));
  }

  /** `IOMMU_VDEVICE_ALLOC`: give a device its guest-visible id on a vIOMMU. */
  allocVdevice(viommuId: number, devId: number, virtId: number): Vdevice {
    const args = IommuVdeviceAlloc.buffer().set("viommu_id", viommuId).set("dev_id", devId).setU64("virt_id", virtId);
    this.call(IOMMU_VDEVICE_ALLOC, args, "alloc vDEVICE");
    return new Vdevice(this, args.get("out_vdevice_id"), virtId);
  }

  /**
   * `IOMMU_HW_QUEUE_ALLOC` (6.17): hardware queue `index` of `type` on vIOMMU `viommuId`, reading the guest's queue
   * memory at guest-physical `nestingParentIova` (mapped in the IOAS under the vIOMMU's nesting parent), `length`
   * bytes. The kernel's order rules (Tegra241 CMDQV, and the selftest mock, which checks them): allocate from index 0
   * upwards, each index once; destroy from the last allocated downwards — a queue another one depends on refuses to
   * go (EBUSY). {@linkcode HwQueueSet} keeps that order.
   */
  allocHwQueue(
    opts: { viommuId: number; type: number; index: number; nestingParentIova: number; length: number },
  ): HwQueue {
    const args = IommuHwQueueAlloc.buffer().set("viommu_id", opts.viommuId).set("type", opts.type)
      .set("index", opts.index).setU64("nesting_parent_iova", opts.nestingParentIova).setU64("length", opts.length);
    this.call(IOMMU_HW_QUEUE_ALLOC, args, `alloc HW queue ${opts.index}`);
    return new HwQueue(this, args.get("out_hw_queue_id"), opts.index);
  }

  /** `IOMMU_VEVENTQ_ALLOC`: an event queue of one type on a vIOMMU, and its fd. */
  allocVeventq(viommuId: number, type: number, depth: number): Veventq {
    const args = IommuVeventqAlloc.buffer().set("viommu_id", viommuId).set("type", type).set("veventq_depth", depth);
    this.call(IOMMU_VEVENTQ_ALLOC, args, "alloc vEVENTQ");
    return new Veventq(this, args.get("out_veventq_id"), args.get("out_veventq_fd"));
  }

  /** Close the iommufd. The kernel frees whatever is left; later disposals of its objects are no-ops. */
  [Symbol.dispose](): void {
    if (this.#closed) return;
    this.#closed = true;
    this.shim.close(this.fd);
  }
}

/** What {@linkcode Iommufd.getHwInfo} returns. */
export interface HwInfo {
  /** `enum iommu_hw_info_type` (or the selftest's type). */
  readonly type: number;
  /** The driver data, as long as the kernel filled it. */
  readonly data: Uint8Array;
  /** PASID width in bits; 0 = no PASID (always 0 before 6.12.32/6.15). */
  readonly maxPasidLog2: number;
  /** `enum iommufd_hw_capabilities` bits. */
  readonly capabilities: bigint;
}

/** Options of {@linkcode Iommufd.allocHwpt}. */
export interface HwptAllocOptions {
  /** Device the HWPT must suit. */
  readonly devId: number;
  /** IOAS, nesting parent HWPT or vIOMMU. */
  readonly ptId: number;
  /** `IOMMU_HWPT_ALLOC_*` flags. */
  readonly flags?: number;
  /** Driver data for a nested HWPT. */
  readonly data?: { readonly type: number; readonly bytes: Uint8Array };
  /** A fault queue to report this HWPT's faults to. */
  readonly faultId?: number;
}

/** A kernel object inside an iommufd, destroyed on disposal. */
export class IommufdObject implements Disposable {
  #destroyed = false;
  /** Wraps an allocated object; made by the {@linkcode Iommufd} methods that allocate, not directly. */
  constructor(
    /** The iommufd holding it. */
    readonly iommufd: Iommufd,
    /** Its object id. */
    readonly id: number,
  ) {}

  /** Whether it was destroyed. */
  get destroyed(): boolean {
    return this.#destroyed;
  }

  /** Destroy the kernel object (once; a no-op after the iommufd closed). */
  [Symbol.dispose](): void {
    if (this.#destroyed) return;
    this.#destroyed = true;
    if (!this.iommufd.closed) this.iommufd.destroy(this.id);
  }
}

/** An IO address space. Memory it maps stays referenced here until unmapped, so it cannot be collected. */
export class Ioas extends IommufdObject {
  readonly #mapped = new Map<number, Uint8Array>();
  /** IOVAs of the read-only mappings (a nesting parent on an affected VT-d must not see one). */
  readonly #readOnly = new Set<number>();
  #readOnlyForbidden: string | undefined;

  /**
   * From now on refuse read-only mappings, because of `reason` (VT-d erratum 772415 on Sapphire Rapids: the kernel
   * reports `IOMMU_HW_INFO_VTD_ERRATA_772415_SPR17`, "disallow read-only mappings on a nested_parent domain"). Throws
   * an {@linkcode UnsupportedError} if a read-only mapping exists already.
   */
  forbidReadOnly(reason: string): void {
    if (this.#readOnly.size) {
      throw new UnsupportedError(
        "read-only-mapping",
        `${reason}; this IOAS already has ${this.#readOnly.size} read-only mapping(s)`,
      );
    }
    this.#readOnlyForbidden = reason;
  }

  /**
   * `IOMMU_IOAS_MAP`: map `memory` (keep it page-aligned: `NativeShim.alignedBuffer`) at `iova`, or where the
   * kernel chooses. Returns the IOVA.
   */
  map(memory: Uint8Array, opts: { iova?: number | bigint; readable?: boolean; writable?: boolean } = {}): number {
    if (opts.writable === false && this.#readOnlyForbidden !== undefined) {
      throw new UnsupportedError("read-only-mapping", this.#readOnlyForbidden);
    }
    const f = IoasMapFlags.values;
    let flags = 0;
    if (opts.iova !== undefined) flags |= f.IOMMU_IOAS_MAP_FIXED_IOVA;
    if (opts.readable ?? true) flags |= f.IOMMU_IOAS_MAP_READABLE;
    if (opts.writable ?? true) flags |= f.IOMMU_IOAS_MAP_WRITEABLE;
    const args = IommuIoasMap.buffer().set("flags", flags).set("ioas_id", this.id).setU64("length", memory.byteLength)
      .setU64("iova", opts.iova ?? 0);
    this.iommufd.callWithPointer(IOMMU_IOAS_MAP, args, "user_va", memory, `map ${memory.byteLength} bytes`);
    const iova = readU64Number(args.view, args.offsetOf("iova"));
    this.#mapped.set(iova, memory);
    if (opts.writable === false) this.#readOnly.add(iova);
    return iova;
  }

  /**
   * `IOMMU_IOAS_MAP_FILE` (6.13): map `length` bytes of `memfd` from byte `start` (default: all of it) at `iova`, or
   * where the kernel chooses. Returns the IOVA. The mapping needs only the fd, not this process's view of the memory:
   * how a broker maps guest RAM a VMM handed it.
   *
   * @example
   * ```ts ignore
   * using ram = Memfd.create(shim, "guest-ram", 1 << 20);
   * const iova = ioas.mapFile(ram, { iova: 1 << 24 });
   * ```
   */
  mapFile(
    memfd: Memfd,
    opts: { iova?: number | bigint; start?: number; length?: number; readable?: boolean; writable?: boolean } = {},
  ): number {
    if (opts.writable === false && this.#readOnlyForbidden !== undefined) {
      throw new UnsupportedError("read-only-mapping", this.#readOnlyForbidden);
    }
    const start = opts.start ?? 0;
    const length = opts.length ?? memfd.size - start;
    const f = IoasMapFlags.values;
    let flags = 0;
    if (opts.iova !== undefined) flags |= f.IOMMU_IOAS_MAP_FIXED_IOVA;
    if (opts.readable ?? true) flags |= f.IOMMU_IOAS_MAP_READABLE;
    if (opts.writable ?? true) flags |= f.IOMMU_IOAS_MAP_WRITEABLE;
    const args = IommuIoasMapFile.buffer().set("flags", flags).set("ioas_id", this.id).set("fd", memfd.fd)
      .setU64("start", start).setU64("length", length).setU64("iova", opts.iova ?? 0);
    this.iommufd.call(IOMMU_IOAS_MAP_FILE, args, `map ${length} bytes of memfd ${memfd.fd}`);
    const iova = readU64Number(args.view, args.offsetOf("iova"));
    if (opts.writable === false) this.#readOnly.add(iova);
    return iova;
  }

  /**
   * `IOMMU_IOAS_UNMAP` of whole mappings inside [iova, iova+length); returns bytes unmapped. IOVAs past 2^53 go to the
   * kernel exactly as bigints.
   */
  unmap(iova: number | bigint, length: number | bigint): number {
    const args = IommuIoasUnmap.buffer().set("ioas_id", this.id).setU64("iova", iova).setU64("length", length);
    this.iommufd.call(IOMMU_IOAS_UNMAP, args, `unmap [0x${iova.toString(16)}, +0x${length.toString(16)})`);
    const low = Number(iova), high = low + Number(length);
    for (const start of this.#mapped.keys()) {
      if (start >= low && start < high) {
        this.#mapped.delete(start);
        this.#readOnly.delete(start);
      }
    }
    return readU64Number(args.view, args.offsetOf("length"));
  }

  /** `IOMMU_IOAS_IOVA_RANGES`: the usable IOVA ranges (inclusive) and the IOVA alignment. */
  iovaRanges(): { ranges: { start: bigint; last: bigint }[]; alignment: bigint } {
    let capacity = 8;
    for (;;) {
      const array = new Uint8Array(capacity * IommuIovaRange.size);
      const args = IommuIoasIovaRanges.buffer().set("ioas_id", this.id).set("num_iovas", capacity);
      const r = this.iommufd.shim[IOCTL_WITH_POINTER](
        this.iommufd.fd,
        IOMMU_IOAS_IOVA_RANGES.request,
        args.bytes,
        args.offsetOf("allowed_iovas"),
        array,
      );
      const total = args.get("num_iovas");
      if (r === -90 /* EMSGSIZE */ && total > capacity) {
        capacity = total;
        continue;
      }
      if (r < 0) throw new KernelError(r, "query IOVA ranges", IOMMU_IOAS_IOVA_RANGES.name);
      const ranges = Array.from({ length: total }, (_, i) => {
        const d = IommuIovaRange.decode(array.subarray(i * 16, i * 16 + 16));
        return { start: d.start, last: d.last };
      });
      return { ranges, alignment: args.getU64("out_iova_alignment") };
    }
  }

  /** Destroy the IOAS (the kernel unmaps everything) and drop the references that kept its mapped memory alive. */
  override [Symbol.dispose](): void {
    super[Symbol.dispose]();
    this.#mapped.clear();
  }
}

/**
 * Something `IOMMU_HWPT_INVALIDATE` targets: a nested HWPT, or a vIOMMU (6.13+). The args struct is allocated
 * once; {@linkcode InvalidationTarget.invalidateRaw} allocates nothing.
 */
export class InvalidationTarget extends IommufdObject {
  /** Entries the kernel reported handled by the last call (written back on success and on error). */
  handled = 0;

  /**
   * Hot path: send `count` entries of `entryLen` bytes from `entries`. Returns 0 or `-errno`; either way
   * {@linkcode InvalidationTarget.handled} holds the kernel's entry_num. Never throws for a kernel error.
   */
  invalidateRaw(dataType: number, entries: Uint8Array, entryLen: number, count: number): number {
    const r = this.iommufd.invalidateRaw(this.id, dataType, entries, entryLen, count);
    this.handled = this.iommufd.invalidateHandled;
    return r;
  }

  /**
   * Send entries; returns how many were handled (= count). On failure throws a {@linkcode KernelError} whose
   * `entryIndex` is the entry the kernel stopped at.
   */
  invalidate(dataType: number, entries: Uint8Array, entryLen: number, count: number): number {
    const r = this.invalidateRaw(dataType, entries, entryLen, count);
    if (r < 0) throw new KernelError(r, `invalidate ${count} entries`, IOMMU_HWPT_INVALIDATE.name, this.handled);
    return this.handled;
  }
}

/** A hardware page table (paging, nesting parent, or nested). */
export class Hwpt extends InvalidationTarget {
  readonly #dirtyArgs = IommuHwptGetDirtyBitmap.buffer();

  /**
   * `IOMMU_HWPT_SET_DIRTY_TRACKING` (6.7): start (`true`) or stop dirty tracking of this paging HWPT, which must have
   * been allocated with `IOMMU_HWPT_ALLOC_DIRTY_TRACKING` (else the kernel answers EINVAL or EOPNOTSUPP).
   */
  setDirtyTracking(enable: boolean): void {
    const args = IommuHwptSetDirtyTracking.buffer().set("hwpt_id", this.id)
      .set("flags", enable ? DirtyTrackingFlags.values.IOMMU_HWPT_DIRTY_TRACKING_ENABLE : 0);
    this.iommufd.call(IOMMU_HWPT_SET_DIRTY_TRACKING, args, `${enable ? "start" : "stop"} dirty tracking`);
  }

  /**
   * `IOMMU_HWPT_GET_DIRTY_BITMAP` (6.7): the pages of `range` written by DMA since the last read, one bit per
   * `range.pageSize`. By default the dirty bits are cleared as they are read; `clear: false` (`NO_CLEAR`) leaves them
   * (for a read right before unmapping the range, which clears nothing anyway). `into` reuses a bitmap of the same
   * range.
   */
  readDirty(range: DirtyRange, opts: { clear?: boolean; into?: DirtyBitmap } = {}): DirtyBitmap {
    const bitmap = opts.into ?? new DirtyBitmap(range);
    if (!bitmap.covers(range)) throw new RangeError("readDirty: `into` is a bitmap of another range");
    bitmap.clear();
    const args = this.#dirtyArgs.set("hwpt_id", this.id)
      .set("flags", opts.clear === false ? DirtyTrackingFlags.values.IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR : 0)
      .setU64("iova", range.iova).setU64("length", range.length).setU64("page_size", range.pageSize);
    this.iommufd.callWithPointer(
      IOMMU_HWPT_GET_DIRTY_BITMAP,
      args,
      "data",
      bitmap.bytes,
      `read dirty bitmap of [0x${range.iova.toString(16)}, +0x${range.length.toString(16)})`,
    );
    return bitmap;
  }
}

/**
 * A vIOMMU hardware queue (6.17): the IOMMU consumes the guest's queue itself. Destroy queues in the reverse order of
 * their allocation ({@linkcode HwQueueSet} does).
 */
export class HwQueue extends IommufdObject {
  /** Wraps HW queue `id` on `iommufd`; made by {@linkcode Iommufd.allocHwQueue}. */
  constructor(
    iommufd: Iommufd,
    id: number,
    /** Its index among its vIOMMU's queues of its type. */ readonly index: number,
  ) {
    super(iommufd, id);
  }
}

/**
 * The hardware queues of one vIOMMU and type, kept in the kernel's order: {@linkcode HwQueueSet.add} allocates the
 * next index (0, 1, ...) and disposal destroys them from the last one down, which is the only order the kernel
 * accepts (a queue the next one depends on answers EBUSY).
 *
 * @example
 * ```ts ignore
 * using queues = new HwQueueSet(iommufd, viommu.id, MockConstants.values.IOMMU_HW_QUEUE_TYPE_SELFTEST);
 * queues.add(queueGpa, 4096);
 * queues.add(queueGpa + 4096, 4096);
 * ```
 */
export class HwQueueSet implements Disposable {
  readonly #queues: HwQueue[] = [];
  /** Queues of `type` on vIOMMU `viommuId`. */
  constructor(readonly iommufd: Iommufd, readonly viommuId: number, readonly type: number) {}

  /** The queues, by index. */
  get queues(): readonly HwQueue[] {
    return this.#queues;
  }

  /** Allocate the next queue (index = how many there are) over guest memory [iova, iova + length). */
  add(nestingParentIova: number, length: number): HwQueue {
    const queue = this.iommufd.allocHwQueue({
      viommuId: this.viommuId,
      type: this.type,
      index: this.#queues.length,
      nestingParentIova,
      length,
    });
    this.#queues.push(queue);
    return queue;
  }

  /** Destroy the last queue (the only one the kernel lets go first). */
  removeLast(): void {
    this.#queues.pop()?.[Symbol.dispose]();
  }

  /** Destroy every queue, last first. */
  [Symbol.dispose](): void {
    while (this.#queues.length) this.removeLast();
  }
}

/** A virtual IOMMU (6.13+). */
export class Viommu extends InvalidationTarget {}

/** A vDEVICE: a device's guest-visible id on a vIOMMU. */
export class Vdevice extends IommufdObject {
  /** Wraps vDEVICE `id` on `iommufd`; made by {@linkcode Iommufd.allocVdevice}. */
  constructor(iommufd: Iommufd, id: number, /** The virtual id. */ readonly virtId: number) {
    super(iommufd, id);
  }
}

/** An iommufd object with its own fd (fault queue, vEVENTQ): the fd closes before the object is destroyed. */
export class QueueObject extends IommufdObject {
  #fdOpen = true;
  /** Wraps queue object `id` on `iommufd`, readable through `fd`. */
  constructor(iommufd: Iommufd, id: number, /** The queue's fd. */ readonly fd: number) {
    super(iommufd, id);
  }

  /** Read one record into `into`; returns bytes read, 0 at EOF, or throws (EAGAIN included). */
  readInto(into: Uint8Array, op: string): number {
    const r = this.iommufd.shim.read(this.fd, into);
    if (r < 0) throw new KernelError(r, op, "read");
    return r;
  }

  /** Poll the fd for input: true when readable within `timeoutMs`. */
  pollIn(timeoutMs: number): boolean {
    const r = this.iommufd.shim.poll(this.fd, 1, timeoutMs);
    if (r < 0) throw new KernelError(r, "poll queue", "poll");
    return (r & 1) !== 0;
  }

  /** Close the queue's fd first, then destroy the object. */
  override [Symbol.dispose](): void {
    if (this.#fdOpen) {
      this.#fdOpen = false;
      this.iommufd.shim.close(this.fd);
    }
    super[Symbol.dispose]();
  }
}

/** A fault queue (6.11): `iommu_hwpt_pgfault` records in, `iommu_hwpt_page_response` out. */
export class FaultQueue extends QueueObject {
  readonly #record = new Uint8Array(IommuHwptPgfault.size);
  readonly #response = IommuHwptPageResponse.buffer();

  /** Read one fault record (blocks unless polled first). */
  readFault(): ReturnType<typeof IommuHwptPgfault.decode> {
    const n = this.readInto(this.#record, "read fault");
    if (n !== IommuHwptPgfault.size) throw new KernelError(-5, `read fault: short record of ${n} bytes`, "read");
    return IommuHwptPgfault.decode(this.#record);
  }

  /** Answer a fault group by cookie (`code` 0 = success, 1 = invalid). */
  respond(cookie: number, code: number): void {
    this.#response.set("cookie", cookie).set("code", code);
    const r = this.iommufd.shim.write(this.fd, this.#response.bytes);
    if (r < 0) throw new KernelError(r, `respond to fault ${cookie}`, "write");
  }
}

/** A vEVENTQ (6.15): records of `iommufd_vevent_header` + a type-specific payload. */
export class Veventq extends QueueObject {
  /**
   * Read what is queued into `into` and split it into records of `payloadSize` bytes after each header.
   * The lost-events flag arrives as a header with no payload.
   */
  readEvents(into: Uint8Array, payloadSize: number): VeventRecord[] {
    const n = this.readInto(into, "read vEVENTQ");
    const out: VeventRecord[] = [];
    let at = 0;
    while (at + IommufdVeventHeader.size <= n) {
      const h = IommufdVeventHeader.decode(into.subarray(at, at + IommufdVeventHeader.size));
      at += IommufdVeventHeader.size;
      const lost = (h.flags & 1) !== 0;
      if (lost) {
        out.push({ sequence: h.sequence, lostEvents: true, payload: new Uint8Array(0) });
        continue;
      }
      out.push({ sequence: h.sequence, lostEvents: false, payload: into.slice(at, at + payloadSize) });
      at += payloadSize;
    }
    return out;
  }
}

/** One vEVENTQ record. */
export interface VeventRecord {
  /** Sequence number (wraps at INT_MAX). */
  readonly sequence: number;
  /** The kernel dropped events before this point. */
  readonly lostEvents: boolean;
  /** Type-specific payload. */
  readonly payload: Uint8Array;
}

/** @internal Adopt a handed-in `fd` of kind `kind`; another kind is closed and refused (ENOTTY). */
export function adoptAs(shim: NativeShim, fd: number, kind: number, what: string): void {
  if (!Number.isInteger(fd) || fd < 0) throw new KernelError(-9, `adopt fd ${fd} as ${what}`, "fstat");
  const got = shim.adoptFd(fd);
  if (got === kind) return;
  shim.close(fd);
  const name = Object.entries(FD_KIND).find(([, v]) => v === got)?.[0] ?? `kind ${got}`;
  throw new KernelError(-25, `adopt fd ${fd} as ${what} (it is ${name})`, "fstat");
}
