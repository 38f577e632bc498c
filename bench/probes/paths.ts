/**
 * The hot paths the benches time and the allocation probe counts, each built once and returned as a step function:
 * one relay (invalidate + wait + drainInto), one VT-d doorbell, one SMMUv3 PROD write. Shared by
 * bench/probes/alloc_probe.ts, bench/hotpath_bench.ts, bench/doorbell_bench.ts and the kernel suite's figures.
 *
 * @module
 */
import type { Backend } from "../../lib/host/backend.ts";
import { DrainOutcome } from "../../lib/relay/outcome.ts";
import type { RelayQueue } from "../../lib/relay/queue.ts";
import { guestMemoryOver } from "../../lib/memory/guest_memory.ts";
import { VtdInvalidationQueue } from "../../lib/frontends/vtd/queue.ts";
import { vtdPasidIotlb, vtdWait, writeVtdDescriptor } from "../../lib/frontends/vtd/encode.ts";
import { SmmuCommandQueue } from "../../lib/frontends/smmuv3/cmdq.ts";
import type { RelaySink } from "../../lib/frontends/window.ts";

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
  const qi = new VtdInvalidationQueue(guestMemoryOver(ram), sink);
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
