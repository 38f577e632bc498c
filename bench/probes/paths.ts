/**
 * The hot paths the benches time and the allocation probe counts, each built once and returned as a step function:
 * one relay (invalidate + wait + drainInto), one VT-d doorbell, one SMMUv3 PROD write. Shared by
 * bench/probes/alloc_probe.ts, bench/hotpath_bench.ts, bench/doorbell_bench.ts and the kernel suite's figures.
 *
 * @module
 */
import type { Backend, Format, InvalidateStatus } from "../../lib/host/backend.ts";
import { DrainOutcome } from "../../lib/relay/outcome.ts";
import type { RelayQueue } from "../../lib/relay/queue.ts";
import { guestMemoryOver } from "../../lib/memory/guest_memory.ts";
import { VtdInvalidationQueue } from "../../lib/frontends/vtd/queue.ts";
import { vtdPasidIotlb, vtdWait, writeVtdDescriptor } from "../../lib/frontends/vtd/encode.ts";
import { SmmuCommandQueue } from "../../lib/frontends/smmuv3/cmdq.ts";
import type { RelaySink } from "../../lib/frontends/window.ts";
import { IOCTL, IOCTL_WITH_POINTER, type NativeShim } from "../../ffi/native.ts";
import { KVM_CREATE_VM, KVM_SET_USER_MEMORY_REGION } from "../../lib/uapi/kvm.ts";

/** `KVM_CHECK_EXTENSION` = `_IO(KVMIO, 0x03)` (no argument through the shim: the extension number is 0). */
export const KVM_CHECK_EXTENSION_REQUEST = 0xae03;
import { IommuHwptInvalidate } from "../../lib/uapi/mod.ts";
import { VTD_DATA_TYPE } from "../../lib/compile/vtd.ts";

const F = {
  hwptId: IommuHwptInvalidate.fields.hwpt_id.offset,
  dataType: IommuHwptInvalidate.fields.data_type.offset,
  entryLen: IommuHwptInvalidate.fields.entry_len.offset,
  entryNum: IommuHwptInvalidate.fields.entry_num.offset,
};

/** A host that carries out every entry at once. */
export const nullBackend: Backend = {
  invalidate(_t, _f, _e, count, status) {
    status.errno = 0;
    status.handled = count;
  },
};

/** One invalidation of a page of PASID 5 in domain 1 and a wait, drained into one reused outcome. */
export function relayStep(queue: RelayQueue): () => void {
  const inv = {
    op: "invalidate" as const,
    domain: 1,
    scope: { kind: "pasid-range" as const, pasid: 5, firstPage: 0, pages: 1 },
  };
  const sync = { op: "sync" as const };
  const out = new DrainOutcome();
  let i = 0;
  return () => {
    inv.scope.firstPage = (i++ & 0xff) * 32;
    queue.submit(inv);
    queue.submit(sync);
    if (queue.drainInto(out).failures.length) throw new Error(`relay: ${out.failures[0].errnoName}`);
  };
}

/**
 * A strict-mode guest's doorbell on the VT-d queue: (PASID-IOTLB of one page of PASID 5 in domain 1, wait with status
 * write), written once all round a 256-entry ring, then one doorbell per step.
 */
export function vtdDoorbellStep(sink: RelaySink): () => void {
  const ram = new Uint8Array(1 << 20);
  return vtdDoorbellStepOver(ram, new VtdInvalidationQueue(guestMemoryOver(ram), sink));
}

function vtdDoorbellStepOver(ram: Uint8Array, qi: VtdInvalidationQueue): () => void {
  qi.writeIqa(0x10000); // 4 KiB: 256 descriptors of 128 bits
  for (let i = 0; i < 128; i++) {
    writeVtdDescriptor(ram, 0x10000 + 32 * i, 16, vtdPasidIotlb(1, 5, { page: i * 8, am: 0 }));
    writeVtdDescriptor(ram, 0x10000 + 32 * i + 16, 16, vtdWait(0x8000, i));
  }
  let tail = 0;
  return () => {
    tail = (tail + 32) % 4096;
    const r = qi.writeIqt(tail);
    if (r.processed !== 2 || r.waitsCompleted !== 1) throw new Error(`doorbell: ${JSON.stringify(r)}`);
  };
}

/** An SMMUv3 guest's strict unmap: (TLBI_NH_VA of one page of ASID 9, CMD_SYNC) per PROD write; ASID 9 = PASID 3. */
export function smmuProdStep(sink: RelaySink): () => void {
  const ram = new Uint8Array(1 << 20);
  const users = [{ domain: 1, pasid: 3 }], domains = [1];
  const cmdq = new SmmuCommandQueue(guestMemoryOver(ram), sink, { asidUsers: () => users, domains: () => domains });
  cmdq.writeBase(0x10000 | 8); // 256 commands of 16 bytes
  const v = new DataView(ram.buffer);
  for (let i = 0; i < 128; i++) {
    v.setUint32(0x10000 + 32 * i, 0x12, true); // TLBI_NH_VA
    v.setUint32(0x10000 + 32 * i + 4, 9 << 16, true);
    v.setUint32(0x10000 + 32 * i + 8, (i * 8) << 12, true);
    v.setUint32(0x10000 + 32 * i + 16, 0x46, true); // CMD_SYNC
  }
  let prod = 0;
  return () => {
    prod = (prod + 2) % 512; // index and wrap bit
    const r = cmdq.writeProd(prod);
    if (r.processed !== 2 || r.syncsCompleted !== 1) throw new Error(`cmdq: ${JSON.stringify(r)}`);
  };
}

/**
 * A KernelBackend-like host with a real but cheap ioctl (the benches' "cheap-ioctl sink"): each batch fills a reused
 * `iommu_hwpt_invalidate` argument as `Iommufd.invalidateRaw` does, then makes one ioctl through the shim with the
 * entries' address stored in the argument — `KVM_SET_USER_MEMORY_REGION` on a VM fd with `memory_size` 0, which the
 * kernel copies in and refuses with EINVAL after taking the VM's slots lock. The shim's list allows it (a VM fd, a
 * user pointer whose length, 0, fits the entries): the same FFI signature, argument copy and pointer check as the
 * real `IOMMU_HWPT_INVALIDATE`, where this host has no `/dev/iommu`. `bench/vtd_doorbell.c` makes the same call.
 */
export class CheapIoctlBackend implements Backend, Disposable {
  /** ioctls made, and answers other than the expected EINVAL. */
  calls = 0;
  unexpected = 0;
  readonly #kvm: number;
  readonly #vm: number;
  readonly #region = new Uint8Array(32); // struct kvm_userspace_memory_region, all zero: slot 0, memory_size 0
  readonly #hwpt = new Uint8Array(32);
  readonly #hwptView = new DataView(this.#hwpt.buffer);

  constructor(readonly shim: NativeShim) {
    this.#kvm = shim.open("/dev/kvm");
    if (this.#kvm < 0) throw new Error(`the cheap-ioctl sink needs /dev/kvm (errno ${-this.#kvm})`);
    this.#vm = shim[IOCTL](this.#kvm, KVM_CREATE_VM.request, null);
    if (this.#vm < 0) throw new Error(`KVM_CREATE_VM: errno ${-this.#vm}`);
    this.#hwptView.setUint32(0, 32, true);
  }

  invalidate(targetId: number, _f: Format, entries: Uint8Array, count: number, status: InvalidateStatus): void {
    const v = this.#hwptView;
    v.setUint32(F.hwptId, targetId, true);
    v.setUint32(F.dataType, VTD_DATA_TYPE, true);
    v.setUint32(F.entryLen, 24, true);
    v.setUint32(F.entryNum, count, true);
    const r = this.shim[IOCTL_WITH_POINTER](this.#vm, KVM_SET_USER_MEMORY_REGION.request, this.#region, 24, entries);
    this.calls++;
    if (r !== -22) this.unexpected++;
    status.errno = 0;
    status.handled = v.getUint32(F.entryNum, true);
  }

  /** The same ioctl alone, `n` times from JavaScript (the FFI bench). */
  rawCall(): number {
    return this.shim[IOCTL_WITH_POINTER](this.#vm, KVM_SET_USER_MEMORY_REGION.request, this.#region, 24, this.#hwpt);
  }

  /** The fd and argument of the cheap call, for the shim's in-process C loop. */
  get vmFd(): number {
    return this.#vm;
  }
  get kvmFd(): number {
    return this.#kvm;
  }
  get region(): Uint8Array {
    return this.#region;
  }

  /** `KVM_CHECK_EXTENSION(0)` on the /dev/kvm fd: the allowed call without an argument. */
  checkExtension(): number {
    return this.shim[IOCTL](this.#kvm, KVM_CHECK_EXTENSION_REQUEST, null);
  }

  [Symbol.dispose](): void {
    this.shim.close(this.#vm);
    this.shim.close(this.#kvm);
  }
}

/** The pipeline bench's two queue shapes (bench/vtd_doorbell.c writes the same bytes). */
export type PipelineShape = "single" | "batch64";

/** Invalidations per doorbell of a shape. */
export const PIPELINE_ENTRIES: Readonly<Record<PipelineShape, number>> = { single: 1, batch64: 64 };

/**
 * A VT-d doorbell through the whole TypeScript pipeline, as bench/vtd_doorbell.c does it in C:
 * - single: a 256-entry queue; doorbell i = (PASID-IOTLB of page 8i of PASID 5 in domain 1, wait writing i);
 * - batch64: a 4,096-entry queue; doorbell d = 64 PASID-IOTLBs of single, non-adjacent pages and a wait (64 host
 *   entries in one ioctl), 63 doorbells per lap, IQA rewritten after each lap (IQH back to 0).
 */
export function vtdPipelineStep(sink: RelaySink, shape: PipelineShape): () => void {
  const ram = new Uint8Array(1 << 20);
  const qi = new VtdInvalidationQueue(guestMemoryOver(ram), sink);
  if (shape === "single") return vtdDoorbellStepOver(ram, qi);
  const base = 0x20000;
  for (let d = 0; d < 63; d++) {
    for (let j = 0; j < 64; j++) {
      writeVtdDescriptor(ram, base + 16 * (d * 65 + j), 16, vtdPasidIotlb(1, 5, { page: (d * 64 + j) * 2, am: 0 }));
    }
    writeVtdDescriptor(ram, base + 16 * (d * 65 + 64), 16, vtdWait(0x8000, d));
  }
  let i = 0;
  return () => {
    const d = i++ % 63;
    if (d === 0) qi.writeIqa(base | 4); // 64 KiB: 4,096 descriptors
    const r = qi.writeIqt((d + 1) * 65 * 16);
    if (r.processed !== 65 || r.waitsCompleted !== 1) throw new Error(`doorbell: ${JSON.stringify(r)}`);
  };
}
