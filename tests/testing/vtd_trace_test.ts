// Real Linux intel-iommu traffic (tests/fixtures/traces: legacy-strict, sm-strict, q10-flts-strict) replayed doorbell
// by doorbell through the VT-d front end wired as a VMM wires it: the NVMe's domain (DID 3) assigned through a plugin
// at the RID_PASID (nested for the first-stage recording, shadowed for the second-stage ones), every other domain —
// devices the VMM emulates — served by a hook. At the moment each wait's status is written, an independent check
// (descriptors decoded here from the recorded words, not by the decoder under test) requires every page of every
// invalidation before it on the assigned domain to have reached the host: on the nested target as invalidated pages,
// in shadow mode as host unmaps covering it and the host mapping equal to the guest's table. Every other invalidation
// must have reached the hook; nothing is lost, nothing throws, and the counts match each recording's stats.json.
import assert from "node:assert/strict";
import type { InvalidateRequest } from "../../lib/request/request.ts";
import {
  encodeVtdPasidDirectoryEntry,
  encodeVtdPasidEntry,
  encodeVtdSecondStagePasidEntry,
  VtdDomainRouter,
  VtdInvalidationQueue,
  VtdPasidBinder,
} from "../../lib/frontends/vtd/mod.ts";
import type { ModelIoas } from "../../lib/shadow/model_ioas.ts";
import { RelayHost, relayPlugin } from "../../lib/plugin/plugin.ts";
import { GuestPageTables } from "../../lib/shadow/page_tables.ts";
import {
  readVtdQueueTrace,
  replayVtdQueueTrace,
  SparseGuestMemory,
  type VtdTraceDescriptor,
} from "../../lib/testing/vtd_trace.ts";

const FIXTURES = new URL("../fixtures/traces/", import.meta.url);
const NVME_DID = 3, NVME_RID = 0x10;
const RAM = 1 << 24, DIRECTORY = 0x10_0000, PASID_TABLE = 0x10_1000;
const TABLES_AT = 0x40_0000, DATA_PAGES = 0x100, DATA_SPAN = 0x300;

/** One invalidation as the VT-d spec lays it out, decoded here from the raw words. */
interface Invalidation {
  /** The domain it names; undefined for a global one. */
  readonly did?: number;
  /** 4 KiB pages [first, first + pages), or undefined for the whole space. */
  readonly first?: number;
  readonly pages?: number;
  readonly pasid?: number;
}

/** The invalidation a descriptor stands for (IOTLB or PASID-IOTLB), or undefined. */
function invalidationOf(d: VtdTraceDescriptor): Invalidation | undefined {
  const [qw0, qw1] = d.words;
  const type = Number(qw0 & 0xfn) | (Number((qw0 >> 9n) & 7n) << 4);
  const g = Number((qw0 >> 4n) & 3n);
  const did = Number((qw0 >> 16n) & 0xffffn);
  const page = Number(qw1 >> 12n), am = Number(qw1 & 0x3fn);
  const range = () => {
    const pages = 2 ** am;
    return { first: Math.floor(page / pages) * pages, pages };
  };
  if (type === 2) { // IOTLB: 1 global, 2 domain, 3 page
    if (g === 1) return {};
    return g === 3 ? { did, ...range() } : { did };
  }
  if (type === 6) { // PASID-IOTLB: 2 whole PASID, 3 page
    const pasid = Number((qw0 >> 32n) & 0xfffffn);
    return g === 3 ? { did, pasid, ...range() } : { did, pasid };
  }
  return undefined;
}

const STATS_TYPE: Record<string, string> = {
  cc: "context-cache",
  iotlb: "iotlb",
  devtlb: "device-tlb",
  iec: "interrupt-entry-cache",
  wait: "wait",
  piotlb: "pasid-iotlb",
  pc: "pasid-cache",
  pdevtlb: "pasid-device-tlb",
};

for (const name of ["q10-flts-strict", "sm-strict", "legacy-strict"]) {
  Deno.test(`recording ${name}: no invalidation lost on the assigned domain, every other one hooked, none thrown`, async () => {
    const trace = await readVtdQueueTrace(new URL(`${name}.qi.txt.gz`, FIXTURES));
    const stats = JSON.parse(await Deno.readTextFile(new URL(`${name}.stats.json`, FIXTURES)));
    const nested = name.includes("flts");
    const scalable = trace.descriptorBits === 256;

    // The counts this replay is about are the recording's own.
    const byType: Record<string, number> = {};
    for (const d of trace.descriptors) byType[d.type] = (byType[d.type] ?? 0) + 1;
    assert.deepEqual(byType, stats.by_type);
    assert.equal(trace.doorbells.length, stats.batches);

    const ram = new Uint8Array(RAM);
    const memory = new SparseGuestMemory(ram);
    using relayHost = RelayHost.inProcess();
    using nvme = relayPlugin.create(relayHost, {
      domain: NVME_DID,
      device: { kind: "model" },
      ...(nested ? { mode: "nested" as const } : { mode: "shadow" as const, shadow: { ram } }),
    });

    // The guest's table for the NVMe: the recordings hold none, so the test's guest keeps one mapping every page the
    // recording invalidates, and remaps each invalidated range before the doorbell (a new guest page each time), so
    // that the host must unmap the old translation and map the new one before the wait completes.
    const tables = new GuestPageTables(ram, { format: nested ? "vtd-fl" : "vtd-sl", levels: 4, tablesAt: TABLES_AT });
    const guestPage = new Map<number, number>();
    const remap = (first: number, pages: number) => {
      for (let p = first; p < first + pages; p++) {
        // The next guest page (never the same one, so the host translation must change).
        const old = guestPage.get(p) ?? DATA_PAGES + (p % DATA_SPAN);
        const gpa = DATA_PAGES + ((old - DATA_PAGES + 1) % DATA_SPAN);
        tables.map(p, gpa, { read: true, write: true });
        guestPage.set(p, gpa);
      }
    };
    for (const d of trace.descriptors) {
      const inv = invalidationOf(d);
      if (inv?.did === NVME_DID && inv.first !== undefined) remap(inv.first, inv.pages!);
    }
    const root = tables.config.root;

    // The NVMe's PASID entry at the RID_PASID (scalable mode) or its context entry (legacy mode).
    ram.set(encodeVtdPasidDirectoryEntry(PASID_TABLE), DIRECTORY);
    ram.set(
      nested
        ? encodeVtdPasidEntry({ did: NVME_DID, firstStagePage: root / 4096 })
        : encodeVtdSecondStagePasidEntry({ did: NVME_DID, secondStagePage: root / 4096 }),
      PASID_TABLE,
    );
    const binder = new VtdPasidBinder(memory);
    binder.attach({ rid: NVME_RID, pasidDirectory: DIRECTORY, sink: nvme });

    const hooked: (InvalidateRequest | "every-domain")[] = [];
    const router = new VtdDomainRouter({
      invalidate: (r) => void hooked.push({ ...r, scope: { ...r.scope } }),
      invalidateEveryDomain: () => void hooked.push("every-domain"),
    });
    router.assign(NVME_DID, nvme);
    let qi!: VtdInvalidationQueue;
    let legacyBound = false;

    // Shadow mode: the host unmaps, recorded as they happen.
    const unmapped: [number, number][] = [];
    const watchShadow = () => {
      const ioas = relayHost.shadowDomain(NVME_DID)?.port as ModelIoas | undefined;
      if (!ioas || (ioas as { watched?: boolean }).watched) return ioas;
      const unmap = ioas.unmap.bind(ioas);
      Object.assign(ioas, {
        watched: true,
        unmap: (first: number, pages: number) => (unmapped.push([first, pages]), unmap(first, pages)),
      });
      return ioas;
    };

    // Invalidations since the last wait (those the assigned domain must see), and tallies.
    let since: Invalidation[] = [];
    let lost = 0, checkedWaits = 0, assignedInvalidations = 0, expectedHooked = 0, checkedPages = 0;
    const boundTarget = () => relayHost.queue().bindings(NVME_DID, "rid")[0]?.targetId;
    const reachesAssigned = (inv: Invalidation) =>
      inv.did === undefined || (inv.did === NVME_DID && (inv.pasid === undefined || inv.pasid === 0));

    const result = replayVtdQueueTrace(trace, {
      memory,
      queue: (m) =>
        qi = new VtdInvalidationQueue(m, router, {
          configChanged: (d) => {
            if (scalable) return binder.configChanged(d);
            // Legacy mode: a context-cache invalidation is where the VMM reads the device's context entry again.
            if (!legacyBound) {
              nvme.submit({
                op: "bind",
                domain: NVME_DID,
                pasid: "rid",
                table: { format: "vtd-sl", tableAddress: root, addressWidth: 48 },
              });
              legacyBound = true;
            }
          },
        }),
      beforeDoorbell(doorbell) {
        for (const d of doorbell) {
          const inv = invalidationOf(d);
          if (!inv) continue;
          if (inv.did === undefined || inv.did !== NVME_DID) expectedHooked++;
          if (!reachesAssigned(inv)) continue;
          if (boundTarget() === undefined) continue; // before the bind: no host target yet
          assignedInvalidations++;
          since.push(inv);
          if (inv.first !== undefined) remap(inv.first, inv.pages!);
          else for (const p of [...guestPage.keys()]) remap(p, 1); // a whole-space flush: every translation changes
        }
        if (!nested) {
          watchShadow();
          unmapped.length = 0;
        }
      },
      onWaitStatus() {
        checkedWaits++;
        const target = boundTarget();
        for (const inv of since) {
          if (nested) {
            const host = relayHost.model!;
            if (inv.first === undefined) {
              if (!host.coverage(target!).wholeSpace) lost++;
              continue;
            }
            for (let p = inv.first; p < inv.first + inv.pages!; p++) {
              checkedPages++;
              if (!host.covered(target!, p)) {
                lost++;
                break;
              }
            }
            continue;
          }
          const ioas = watchShadow()!;
          const pages = inv.first === undefined ? [...guestPage.keys()] : range(inv.first, inv.pages!);
          for (const p of pages) {
            checkedPages++;
            const coveredByUnmap = unmapped.some(([f, n]) => f <= p && p < f + n);
            if (!coveredByUnmap || ioas.lookup(p)?.gpaPage !== guestPage.get(p)) {
              lost++;
              break;
            }
          }
        }
        since = [];
        relayHost.model!.resetCoverage();
      },
    });

    assert.equal(result.exceptions, 0, "nothing escaped the doorbell");
    assert.deepEqual(result.errors, [], "no doorbell ended in IQE");
    assert.equal(result.waits, stats.waits);
    assert.equal(result.waitsCompleted, stats.waits, "every wait completed");
    assert.equal(checkedWaits, stats.waits);
    assert.equal(lost, 0, "no invalidation of the assigned domain was missing when its wait completed");
    assert.ok(assignedInvalidations > 0.9 * (stats.psi_descriptors as number), "the I/O traffic was checked");
    assert.ok(checkedPages >= assignedInvalidations);
    // Every invalidation for another domain (and the emulated part of each global one) reached the hook.
    assert.equal(hooked.length, expectedHooked);
    assert.equal(router.telemetry.emulated, expectedHooked);
    assert.equal(router.telemetry.refused, 0);
    // The queue model's per-type counters are the recording's.
    for (const [label, count] of Object.entries(stats.by_type as Record<string, number>)) {
      assert.equal(qi.telemetry.byType[STATS_TYPE[label] as keyof typeof qi.telemetry.byType], count, label);
    }
    if (scalable) {
      assert.equal(binder.telemetry.ridBinds >= 1, true, "the RID_PASID entry was bound at 'rid'");
      assert.equal(nvme.telemetry.device.binds >= 1, true);
    }
    console.log(
      `${name}: ${result.waitsCompleted} waits, ${assignedInvalidations} invalidations checked on the assigned ` +
        `domain (${checkedPages} pages), ${lost} lost, ${hooked.length} hooked, ${qi.telemetry.ridPasid} RID_PASID`,
    );
  });
}

function range(first: number, pages: number): number[] {
  return Array.from({ length: pages }, (_, i) => first + i);
}
