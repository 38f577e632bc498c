import assert from "node:assert/strict";
import {
  decodeVtdPasidEntry,
  encodeVtdPasidDirectoryEntry,
  encodeVtdPasidEntry,
  lookupVtdPasidEntry,
  type VtdPasidEntry,
  VtdPasidEntryError,
  vtdPasidEntryTable,
} from "../../../lib/frontends/vtd/pasid.ts";
import type { GuestMemory } from "../../../lib/frontends/vtd/queue.ts";
import { prng } from "../../../lib/testing/workloads.ts";

function ram(size = 1 << 20): { bytes: Uint8Array; memory: GuestMemory } {
  const bytes = new Uint8Array(size);
  return {
    bytes,
    memory: {
      read: (a, n) => {
        if (a < 0 || a + n > size) throw new RangeError(`outside RAM: ${a}`);
        return bytes.slice(a, a + n);
      },
      write: (a, b) => bytes.set(b, a),
    },
  };
}

Deno.test("vtd pasid: an entry written as the Linux driver writes it decodes field by field", () => {
  const e = decodeVtdPasidEntry(
    encodeVtdPasidEntry({ did: 0x1234, firstStagePage: 0x12345678, addressWidth: 57, sre: true }),
    0,
  );
  assert.deepEqual(e, {
    present: true,
    translation: "first-stage",
    did: 0x1234,
    fpd: false,
    firstStagePage: 0x12345678,
    addressWidth: 57,
    sre: true,
    wpe: false,
    eafe: false,
  });
  assert.deepEqual(vtdPasidEntryTable(e), {
    format: "vtd-s1",
    tableAddress: 0x12345678 * 4096,
    addressWidth: 57,
    sre: true,
    wpe: false,
    eafe: false,
  });
  const nested = decodeVtdPasidEntry(encodeVtdPasidEntry({ did: 1, firstStagePage: 1, nested: true }), 0);
  assert.equal(nested.present && nested.translation, "nested");
});

Deno.test("vtd pasid: hostile entries are typed errors, absent ones absent", () => {
  const bytes = new Uint8Array(64);
  assert.deepEqual(decodeVtdPasidEntry(bytes, 0), { present: false });
  const v = new DataView(bytes.buffer);
  for (const pgtt of [0, 5, 6, 7]) {
    v.setUint32(0, 1 | (pgtt << 6), true);
    assert.throws(
      () => decodeVtdPasidEntry(bytes, 0),
      (e) => e instanceof VtdPasidEntryError && e.reason === "reserved-pgtt",
    );
  }
  v.setUint32(0, 1 | (1 << 6), true);
  assert.throws(
    () => decodeVtdPasidEntry(bytes, 0),
    (e) => e instanceof VtdPasidEntryError && e.reason === "no-first-stage-table",
  );
  v.setUint32(16, 0x1000 | (2 << 2), true);
  assert.throws(
    () => decodeVtdPasidEntry(bytes, 0),
    (e) => e instanceof VtdPasidEntryError && e.reason === "reserved-flpm",
  );
  assert.throws(
    () => decodeVtdPasidEntry(bytes, 1),
    (e) => e instanceof VtdPasidEntryError && e.reason === "unreadable",
  );
  // Second-stage and pass-through entries decode but bind no stage-1 table.
  v.setUint32(0, 1 | (2 << 6), true);
  v.setUint32(16, 0, true);
  assert.equal(vtdPasidEntryTable(decodeVtdPasidEntry(bytes, 0)), undefined);
});

Deno.test("vtd pasid: lookup walks directory then table; what is not RAM is a typed error", () => {
  const { bytes, memory } = ram();
  const dir = 0x4000, table = 0x9000;
  assert.deepEqual(lookupVtdPasidEntry(memory, dir, 70), { present: false }, "no directory entry");
  bytes.set(encodeVtdPasidDirectoryEntry(table), dir + 8); // PASIDs 64..127
  bytes.set(encodeVtdPasidEntry({ did: 3, firstStagePage: 0x55 }), table + 6 * 64);
  const e = lookupVtdPasidEntry(memory, dir, 70);
  assert.ok(e.present && e.did === 3 && e.firstStagePage === 0x55);
  assert.deepEqual(lookupVtdPasidEntry(memory, dir, 71), { present: false });
  bytes.set(encodeVtdPasidDirectoryEntry(0xfff000 * 16), dir + 16); // a table beyond RAM
  assert.throws(
    () => lookupVtdPasidEntry(memory, dir, 130),
    (x) => x instanceof VtdPasidEntryError && x.reason === "unreadable",
  );
  assert.throws(
    () => lookupVtdPasidEntry(memory, 0xfffff8 * 16, 0),
    (x) => x instanceof VtdPasidEntryError && x.reason === "unreadable",
  );
  for (const bad of [-1, 1 << 20, 1.5]) {
    assert.throws(
      () => lookupVtdPasidEntry(memory, dir, bad),
      (x) => x instanceof VtdPasidEntryError && x.reason === "pasid-out-of-range",
    );
  }
});

Deno.test("vtd pasid: 200,000 random entries decode or fail typed; present first-stage ones always carry a table", () => {
  const rnd = prng(11);
  const bytes = new Uint8Array(64);
  for (let i = 0; i < 200_000; i++) {
    for (let j = 0; j < 64; j += 4) new DataView(bytes.buffer).setUint32(j, rnd(2 ** 32), true);
    if (i % 3 === 0) bytes[0] |= 1;
    let e: VtdPasidEntry;
    try {
      e = decodeVtdPasidEntry(bytes, 0);
    } catch (x) {
      assert.ok(x instanceof VtdPasidEntryError, String(x));
      continue;
    }
    const t = vtdPasidEntryTable(e);
    if (e.present && (e.translation === "first-stage" || e.translation === "nested")) {
      assert.ok(t && t.tableAddress > 0);
    } else assert.equal(t, undefined);
  }
});
