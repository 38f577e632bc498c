// The migration dirty log (lib/device/migration.ts): each round reads and clears both sides and returns their union in
// guest-physical pages; the final round reads the devices without clearing; sides at other granularities, RAM mapped
// at another IOVA, and a CPU log that does not cover the region. The kernel's and KVM's side: kernel-suite/dirty_test.ts.
import assert from "node:assert/strict";
import { DirtyBitmap, type DirtyRange } from "../../lib/kernel/dirty.ts";
import { type CpuDirtyLog, type GuestDirtyLog, MigrationDirtyLog } from "../../lib/device/mod.ts";

/** A device side whose pending pages are `pending` (IOVA page indices at `pageSize`), cleared by a clearing read. */
function fakeDevices(pending: Set<number>, reads: boolean[]): GuestDirtyLog {
  let on = false;
  return {
    start: () => void (on = true),
    stop: () => void (on = false),
    get tracking() {
      return on;
    },
    read(range: DirtyRange, opts = {}) {
      const b = opts.into ?? new DirtyBitmap(range);
      b.clear();
      for (const p of pending) b.setPage(p);
      reads.push(opts.clear ?? true);
      if (opts.clear ?? true) pending.clear();
      return b;
    },
  };
}

function fakeCpus(gpa: number, length: number, pending: Set<number>): CpuDirtyLog {
  return {
    gpa,
    length,
    pageSize: 4096,
    read(into) {
      for (const p of pending) into.setPage(p);
      pending.clear();
    },
  };
}

Deno.test("migration: rounds return the union and clear both sides; the final round keeps the devices' bits", () => {
  const dev = new Set([1, 4]), cpu = new Set([4, 7]), reads: boolean[] = [];
  const log = new MigrationDirtyLog({
    region: { gpa: 0x10_0000, iova: 0x4000_0000, length: 16 * 4096 },
    devices: fakeDevices(dev, reads),
    cpus: fakeCpus(0x10_0000, 16 * 4096, cpu),
  });
  const first = log.collect();
  assert.equal(first.iova, 0x10_0000, "the merged bitmap is in guest-physical addresses");
  assert.deepEqual(first.dirtyPages(), [1, 4, 7]);
  assert.deepEqual(log.lastRound, { devicePages: 2, cpuPages: 2, mergedPages: 3 });
  assert.deepEqual(log.collect().dirtyPages(), []);
  dev.add(9);
  assert.deepEqual(log.collect({ final: true }).dirtyPages(), [9]);
  assert.deepEqual(log.collect({ final: true }).dirtyPages(), [9], "NO_CLEAR: still there");
  assert.deepEqual(reads, [true, true, false, false]);
});

Deno.test("migration: a CPU log larger than the region (a whole slot) lands on the region's pages only", () => {
  const cpu = new Set([0, 3, 20]);
  const log = new MigrationDirtyLog({
    region: { gpa: 2 * 4096, iova: 2 * 4096, length: 8 * 4096 },
    cpus: fakeCpus(0, 32 * 4096, cpu),
  });
  assert.deepEqual(log.collect().dirtyPages(), [1], "slot page 3 is region page 1; 0 and 20 are outside");
});

Deno.test("migration: pageSize sets the granularity of the device read and of the merged bitmap", () => {
  const log = new MigrationDirtyLog({
    region: { gpa: 0, iova: 0x100_0000, length: 8 * 4096 },
    devices: fakeDevices(new Set([5]), []),
    pageSize: 4096,
  });
  assert.deepEqual(log.collect().dirtyPages(), [5]);
  const fine = new MigrationDirtyLog({
    region: { gpa: 0, iova: 0x100_0000, length: 8 * 4096 },
    devices: fakeDevices(new Set([5]), []),
    pageSize: 2048,
  });
  assert.deepEqual(fine.collect().dirtyPages(), [5], "at 2 KiB the same bit");
});

Deno.test("migration: a log needs a side, and a CPU log must cover the region", () => {
  assert.throws(() => new MigrationDirtyLog({ region: { gpa: 0, iova: 0, length: 4096 } }), TypeError);
  assert.throws(
    () =>
      new MigrationDirtyLog({
        region: { gpa: 0, iova: 0, length: 8 * 4096 },
        cpus: fakeCpus(4096, 8 * 4096, new Set()),
      }),
    /does not cover/,
  );
});
