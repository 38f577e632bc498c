/**
 * The kernel selftest's mock IOMMU (`CONFIG_IOMMUFD_TEST`) through `IOMMU_TEST_CMD`: mock devices with their
 * own domain, the mock IOTLB and device-cache checks, PASID attach/replace/detach, and fault/event triggers.
 * This is what the kernel test suite drives; it is not for production use.
 *
 * @module
 */
import { IOCTL, IOCTL_WITH_POINTER } from "../../ffi/native.ts";
import { KernelError } from "./errors.ts";
import { type FaultQueue, type Hwpt, type Ioas, type Iommufd, IommufdObject } from "./iommufd.ts";
import { DirtyBitmap, type DirtyRange } from "./dirty.ts";
import {
  HwptAllocFlags,
  IOMMU_TEST_CMD,
  MockConstants,
  selftestHwptData,
  TestCmdAccessRw,
  TestCmdCheckDevCache,
  TestCmdCheckIotlb,
  TestCmdCheckMap,
  TestCmdCreateAccess,
  TestCmdDirty,
  TestCmdMockDomain,
  TestCmdMockDomainFlags,
  TestCmdMockDomainReplace,
  TestCmdPasidAttach,
  TestCmdPasidCheck,
  TestCmdPasidDetach,
  TestCmdPasidReplace,
  TestCmdTriggerIopf,
  TestCmdTriggerVevent,
  TestOp,
} from "../uapi/mod.ts";

const op = TestOp.values;

/**
 * A mock device attached to an IOAS (or HWPT). Disposing it destroys the selftest device object, which
 * detaches and removes the device.
 */
export class MockDevice extends IommufdObject {
  /** The device's iommufd id (what VFIO calls dev_id). */
  readonly devId: number;
  /** The HWPT it was attached to at creation. */
  readonly hwptId: number;

  private constructor(iommufd: Iommufd, stdevId: number, hwptId: number, devId: number) {
    super(iommufd, stdevId);
    this.hwptId = hwptId;
    this.devId = devId;
  }

  /** `IOMMU_TEST_OP_MOCK_DOMAIN[_FLAGS]`: a mock device attached to `ptId`. */
  static create(iommufd: Iommufd, ptId: number, devFlags = 0): MockDevice {
    if (devFlags === 0) {
      const cmd = TestCmdMockDomain.buffer().set("op", op.IOMMU_TEST_OP_MOCK_DOMAIN).set("id", ptId);
      iommufd.call(IOMMU_TEST_CMD, cmd, "create mock device");
      return new MockDevice(iommufd, cmd.get("out_stdev_id"), cmd.get("out_hwpt_id"), cmd.get("out_idev_id"));
    }
    const cmd = TestCmdMockDomainFlags.buffer().set("op", op.IOMMU_TEST_OP_MOCK_DOMAIN_FLAGS).set("id", ptId)
      .set("dev_flags", devFlags);
    iommufd.call(IOMMU_TEST_CMD, cmd, "create mock device with flags");
    return new MockDevice(iommufd, cmd.get("out_stdev_id"), cmd.get("out_hwpt_id"), cmd.get("out_idev_id"));
  }

  /** Stdev id: the selftest object (what the PASID ops take). */
  get stdevId(): number {
    return this.id;
  }

  /** `IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE`: re-attach the RID; returns the HWPT now attached. */
  replace(ptId: number): number {
    const cmd = TestCmdMockDomainReplace.buffer().set("op", op.IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE).set("id", this.id)
      .set("pt_id", ptId);
    this.iommufd.call(IOMMU_TEST_CMD, cmd, `replace mock device ${this.id} attachment`);
    return cmd.get("pt_id");
  }

  /** `IOMMU_TEST_OP_PASID_ATTACH` (6.15). */
  attachPasid(pasid: number, ptId: number): void {
    const cmd = TestCmdPasidAttach.buffer().set("op", op.IOMMU_TEST_OP_PASID_ATTACH).set("id", this.id)
      .set("pasid", pasid).set("pt_id", ptId);
    this.iommufd.call(IOMMU_TEST_CMD, cmd, `attach PASID ${pasid}`);
  }

  /** `IOMMU_TEST_OP_PASID_REPLACE` (6.15). */
  replacePasid(pasid: number, ptId: number): void {
    const cmd = TestCmdPasidReplace.buffer().set("op", op.IOMMU_TEST_OP_PASID_REPLACE).set("id", this.id)
      .set("pasid", pasid).set("pt_id", ptId);
    this.iommufd.call(IOMMU_TEST_CMD, cmd, `replace PASID ${pasid}`);
  }

  /** `IOMMU_TEST_OP_PASID_DETACH` (6.15). */
  detachPasid(pasid: number): void {
    const cmd = TestCmdPasidDetach.buffer().set("op", op.IOMMU_TEST_OP_PASID_DETACH).set("id", this.id)
      .set("pasid", pasid);
    this.iommufd.call(IOMMU_TEST_CMD, cmd, `detach PASID ${pasid}`);
  }

  /** `IOMMU_TEST_OP_PASID_CHECK_HWPT` (6.15): whether `pasid` is attached to `hwptId` (0: detached). */
  pasidAttachedTo(pasid: number, hwptId: number): boolean {
    const cmd = TestCmdPasidCheck.buffer().set("op", op.IOMMU_TEST_OP_PASID_CHECK_HWPT).set("id", this.id)
      .set("pasid", pasid).set("hwpt_id", hwptId);
    return checkResult(this.iommufd, cmd.bytes, `check PASID ${pasid} HWPT`);
  }

  /** `IOMMU_TEST_OP_DEV_CHECK_CACHE` (6.13): whether device cache slot `slot` holds `value`. */
  cacheHolds(slot: number, value: number): boolean {
    const cmd = TestCmdCheckDevCache.buffer().set("op", op.IOMMU_TEST_OP_DEV_CHECK_CACHE).set("id", this.devId)
      .set("cache_id", slot).set("cache", value);
    return checkResult(this.iommufd, cmd.bytes, `check device cache slot ${slot}`);
  }

  /** `IOMMU_TEST_OP_TRIGGER_IOPF` (6.11): the device raises a page request. */
  triggerIopf(fault: { pasid: number; grpid: number; perm: number; addr: number }): void {
    const cmd = TestCmdTriggerIopf.buffer().set("op", op.IOMMU_TEST_OP_TRIGGER_IOPF).set("dev_id", this.devId)
      .set("pasid", fault.pasid).set("grpid", fault.grpid).set("perm", fault.perm).setU64("addr", fault.addr);
    this.iommufd.call(IOMMU_TEST_CMD, cmd, "trigger IOPF");
  }

  /** `IOMMU_TEST_OP_TRIGGER_VEVENT` (6.15): the device reports an event to its vIOMMU. */
  triggerVevent(): void {
    const cmd = TestCmdTriggerVevent.buffer().set("op", op.IOMMU_TEST_OP_TRIGGER_VEVENT).set("dev_id", this.devId);
    this.iommufd.call(IOMMU_TEST_CMD, cmd, "trigger vEVENT");
  }
}

/** The check ops answer a mismatch with EINVAL: map that to false, anything else to a KernelError. */
function checkResult(iommufd: Iommufd, bytes: Uint8Array, what: string): boolean {
  const r = iommufd.shim[IOCTL](iommufd.fd, IOMMU_TEST_CMD.request, bytes);
  if (r === 0) return true;
  if (r === -22) return false;
  throw new KernelError(r, what, IOMMU_TEST_CMD.name);
}

/** `IOMMU_TEST_OP_MD_CHECK_IOTLB` (6.8): whether IOTLB slot `slot` of mock nested HWPT `hwptId` holds `value`. */
export function mockIotlbHolds(iommufd: Iommufd, hwptId: number, slot: number, value: number): boolean {
  const cmd = TestCmdCheckIotlb.buffer().set("op", op.IOMMU_TEST_OP_MD_CHECK_IOTLB).set("id", hwptId)
    .set("iotlb_id", slot).set("iotlb", value);
  return checkResult(iommufd, cmd.bytes, `check IOTLB slot ${slot}`);
}

/**
 * `IOMMU_TEST_OP_MD_CHECK_MAP` (6.2): whether [iova, iova+memory.length) in `ptId` translates to `memory`.
 * The kernel answers a wrong translation with EINVAL.
 */
export function mockMapTranslatesTo(iommufd: Iommufd, ptId: number, iova: number, memory: Uint8Array): boolean {
  const cmd = TestCmdCheckMap.buffer().set("op", op.IOMMU_TEST_OP_MD_CHECK_MAP).set("id", ptId).setU64("iova", iova)
    .setU64("length", memory.byteLength);
  const r = iommufd.shim[IOCTL_WITH_POINTER](
    iommufd.fd,
    IOMMU_TEST_CMD.request,
    cmd.bytes,
    cmd.offsetOf("uptr"),
    memory,
  );
  if (r === 0) return true;
  if (r === -22) return false;
  throw new KernelError(r, "check mock map", IOMMU_TEST_CMD.name);
}

/**
 * `IOMMU_TEST_OP_DIRTY` (6.7): mark pages `pages` (indices into `range`, at its page size) dirty in mock paging HWPT
 * `hwptId`, as if a device had written them; its dirty tracking must be on. Returns how many the kernel marked.
 * The marks go down at the mock's own page size (2 KiB), every mock page of each page: before the generic page table
 * (6.12) the mock looks its pages up by IOVA / the op's page size, so any other size marks the wrong pages or none.
 *
 * @example
 * ```ts ignore
 * mockMarkDirty(iommufd, parent.id, { iova: 1 << 24, length: 1 << 20, pageSize: 4096 }, [0, 5]);
 * ```
 */
export function mockMarkDirty(iommufd: Iommufd, hwptId: number, range: DirtyRange, pages: readonly number[]): number {
  const mockPage = MockConstants.values.MOCK_PAGE_SIZE;
  const per = range.pageSize % mockPage === 0 ? range.pageSize / mockPage : 1;
  const marks = per === 1 ? range : { ...range, pageSize: mockPage };
  const bitmap = new DirtyBitmap(marks);
  for (const p of pages) for (let k = 0; k < per; k++) bitmap.setPage(p * per + k);
  const cmd = TestCmdDirty.buffer().set("op", op.IOMMU_TEST_OP_DIRTY).set("id", hwptId).setU64("iova", marks.iova)
    .setU64("length", marks.length).setU64("page_size", marks.pageSize);
  iommufd.callWithPointer(IOMMU_TEST_CMD, cmd, "uptr", bitmap.bytes, `mark ${pages.length} pages dirty`);
  return Number(cmd.getU64("out_nr_dirty")) / per;
}

/**
 * An in-kernel access to an IOAS (`IOMMU_TEST_OP_CREATE_ACCESS`): DMA as an emulated device does it, through the
 * IOAS's mappings and their permissions. Disposing it closes the access fd.
 */
export class MockAccess implements Disposable {
  #closed = false;
  private constructor(readonly iommufd: Iommufd, readonly fd: number) {}

  /** An access on IOAS `ioasId`. */
  static create(iommufd: Iommufd, ioasId: number): MockAccess {
    const cmd = TestCmdCreateAccess.buffer().set("op", op.IOMMU_TEST_OP_CREATE_ACCESS).set("id", ioasId);
    const r = iommufd.shim[IOCTL](iommufd.fd, IOMMU_TEST_CMD.request, cmd.bytes);
    if (r < 0) throw new KernelError(r, "create access", IOMMU_TEST_CMD.name);
    return new MockAccess(iommufd, cmd.get("out_access_fd"));
  }

  /**
   * Read (`write` false: IOVA → `buffer`) or write (`buffer` → IOVA) `buffer.length` bytes at `iova`. Returns 0 or
   * `-errno`: EPERM for a write to a read-only mapping, ENOENT where nothing is mapped.
   */
  rw(iova: number, buffer: Uint8Array, write: boolean): number {
    const cmd = TestCmdAccessRw.buffer().set("op", op.IOMMU_TEST_OP_ACCESS_RW).set("id", this.fd)
      .setU64("iova", iova).setU64("length", buffer.byteLength).set("flags", write ? 1 : 0);
    return this.iommufd.shim[IOCTL_WITH_POINTER](
      this.iommufd.fd,
      IOMMU_TEST_CMD.request,
      cmd.bytes,
      cmd.offsetOf("uptr"),
      buffer,
    );
  }

  /** Close the access fd (idempotent); the kernel destroys the access with it. */
  [Symbol.dispose](): void {
    if (this.#closed) return;
    this.#closed = true;
    this.iommufd.shim.close(this.fd);
  }
}

/**
 * The selftest's nesting chain: an IOAS, a mock device on it, a nesting parent and a nested HWPT whose IOTLB slots
 * start at `iotlb` — the target the kernel suite and the kernel probes invalidate. Built on a stack: a failing step
 * disposes what was built; disposal runs in reverse.
 *
 * @example
 * ```ts ignore
 * import assert from "node:assert/strict";
 * import { mockNestedChain } from "./selftest.ts";
 * using chain = mockNestedChain(iommufd);
 * assert.ok(chain.nested.id > 0);
 * ```
 */
export function mockNestedChain(
  iommufd: Iommufd,
  iotlb: number = MockConstants.values.IOMMU_TEST_IOTLB_DEFAULT,
): { ioas: Ioas; dev: MockDevice; parent: Hwpt; nested: Hwpt; [Symbol.dispose](): void } {
  using stack = new DisposableStack();
  const ioas = stack.use(iommufd.allocIoas());
  const dev = stack.use(MockDevice.create(iommufd, ioas.id));
  const parent = stack.use(
    iommufd.allocHwpt({ devId: dev.devId, ptId: ioas.id, flags: HwptAllocFlags.values.IOMMU_HWPT_ALLOC_NEST_PARENT }),
  );
  const nested = stack.use(iommufd.allocHwpt({ devId: dev.devId, ptId: parent.id, data: selftestHwptData(iotlb) }));
  const owned = stack.move();
  return { ioas, dev, parent, nested, [Symbol.dispose]: () => owned.dispose() };
}

/**
 * The chain the mock needs to raise I/O page faults: IOAS → mock device → nesting parent → fault queue → nested HWPT
 * (selftest data) reporting to that queue, with the device attached to it — and back to the IOAS on disposal, before
 * the rest is destroyed in reverse order.
 */
export function mockIopfChain(iommufd: Iommufd): {
  ioas: Ioas;
  dev: MockDevice;
  parent: Hwpt;
  queue: FaultQueue;
  iopf: Hwpt;
  [Symbol.dispose](): void;
} {
  using stack = new DisposableStack();
  const ioas = stack.use(iommufd.allocIoas());
  const dev = stack.use(MockDevice.create(iommufd, ioas.id));
  const parent = stack.use(
    iommufd.allocHwpt({ devId: dev.devId, ptId: ioas.id, flags: HwptAllocFlags.values.IOMMU_HWPT_ALLOC_NEST_PARENT }),
  );
  const queue = stack.use(iommufd.allocFaultQueue());
  const iopf = stack.use(
    iommufd.allocHwpt({ devId: dev.devId, ptId: parent.id, faultId: queue.id, data: selftestHwptData(1) }),
  );
  dev.replace(iopf.id);
  stack.defer(() => dev.replace(ioas.id));
  const owned = stack.move();
  return { ioas, dev, parent, queue, iopf, [Symbol.dispose]: () => owned.dispose() };
}
