// Dirty bitmaps (lib/kernel/dirty.ts): the kernel's and KVM's layout (bit i of u64 word w is page 64w + i), range
// checks, and merging bitmaps of one memory at different granularities and offsets. The kernel side (the mock's
// dirty bits read back exactly) is kernel-suite/dirty_test.ts.
import assert from "node:assert/strict";
import fc from "fast-check";
import { DirtyBitmap, mergeDirtyBitmaps } from "../../lib/kernel/dirty.ts";

Deno.test("dirty bitmap: the kernel's layout — little-endian u64 words, whole words", () => {
  const b = new DirtyBitmap({ iova: 0, length: 65 * 4096, pageSize: 4096 });
  assert.equal(b.bytes.byteLength, 16, "65 pages need two u64 words");
  b.setPage(0);
  b.setPage(63);
  b.setPage(64);
  const v = new DataView(b.bytes.buffer);
  assert.equal(v.getBigUint64(0, true), (1n << 63n) | 1n);
  assert.equal(v.getBigUint64(8, true), 1n);
  assert.deepEqual(b.dirtyPages(), [0, 63, 64]);
  assert.equal(b.dirtyCount, 3);
  b.clear();
  assert.deepEqual(b.dirtyPages(), []);
});

Deno.test("dirty bitmap: bits past the range in the last word are never reported", () => {
  const b = new DirtyBitmap({ iova: 0, length: 3 * 4096, pageSize: 4096 });
  b.bytes[0] = 0xff; // as a kernel bug or a stale buffer might leave it
  assert.deepEqual(b.dirtyPages(), [0, 1, 2]);
  assert.equal(b.isPageDirty(5), false);
  assert.throws(() => b.setPage(3), RangeError);
});

Deno.test("dirty bitmap: ranges the kernel would refuse are refused here first", () => {
  assert.throws(() => new DirtyBitmap({ iova: 0, length: 4096, pageSize: 3000 }), /power of two/);
  assert.throws(() => new DirtyBitmap({ iova: 0, length: 4096, pageSize: 256 }), /power of two/);
  assert.throws(() => new DirtyBitmap({ iova: 2048, length: 4096, pageSize: 4096 }), /multiple of the page size/);
  assert.throws(() => new DirtyBitmap({ iova: 0, length: 6000, pageSize: 4096 }), /positive multiple/);
  assert.throws(() => new DirtyBitmap({ iova: 0, length: 0, pageSize: 4096 }), /positive multiple/);
  assert.throws(() => new DirtyBitmap({ iova: 0, length: 8192, pageSize: 4096 }, new Uint8Array(16)), /8 needed/);
  const b = new DirtyBitmap({ iova: 0x1000, length: 0x2000, pageSize: 4096 });
  assert.equal(b.isDirty(0), false);
  assert.equal(b.covers({ iova: 0x1000, length: 0x2000, pageSize: 4096 }), true);
  assert.equal(b.covers({ iova: 0x1000, length: 0x2000, pageSize: 2048 }), false);
});

Deno.test("dirty merge: a finer source marks the coarse page it falls in; a coarser one every fine page it spans", () => {
  const fine = new DirtyBitmap({ iova: 0, length: 0x8000, pageSize: 2048 });
  fine.setPage(3); // [0x1800, 0x2000): 4 KiB page 1
  const coarse = new DirtyBitmap({ iova: 0, length: 0x8000, pageSize: 16384 });
  coarse.setPage(1); // [0x4000, 0x8000): 4 KiB pages 4..7
  const into = new DirtyBitmap({ iova: 0, length: 0x8000, pageSize: 4096 });
  mergeDirtyBitmaps(into, [{ bitmap: fine }, { bitmap: coarse }]);
  assert.deepEqual(into.dirtyPages(), [1, 4, 5, 6, 7]);
});

Deno.test("dirty merge: an offset source (RAM mapped at another IOVA) lands on the same guest pages; outside is ignored", () => {
  const device = new DirtyBitmap({ iova: 0x100_0000 - 0x1000, length: 0x4000, pageSize: 4096 });
  device.setPage(0); // IOVA 0xfff000: guest-physical -0x1000, outside
  device.setPage(2); // IOVA 0x1001000: guest-physical 0x1000
  const into = new DirtyBitmap({ iova: 0, length: 0x2000, pageSize: 4096 });
  mergeDirtyBitmaps(into, [{ bitmap: device, offset: 0x100_0000 }]);
  assert.deepEqual(into.dirtyPages(), [1]);
});

Deno.test("dirty merge: the union is exact for random pages of two same-granularity sources (property)", () => {
  fc.assert(fc.property(
    fc.uniqueArray(fc.integer({ min: 0, max: 199 })),
    fc.uniqueArray(fc.integer({ min: 0, max: 199 })),
    (a, b) => {
      const range = { iova: 0x4000_0000, length: 200 * 4096, pageSize: 4096 };
      const x = new DirtyBitmap(range), y = new DirtyBitmap(range), into = new DirtyBitmap(range);
      a.forEach((p) => x.setPage(p));
      b.forEach((p) => y.setPage(p));
      mergeDirtyBitmaps(into, [{ bitmap: x }, { bitmap: y }]);
      assert.deepEqual(into.dirtyPages(), [...new Set([...a, ...b])].sort((m, n) => m - n));
    },
  ));
});
