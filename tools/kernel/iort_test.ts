// The IORT upgrade of the arm64 test VM (tools/kernel/iort.ts) and the arm64 cache checks: pure, no QEMU needed.
import assert from "node:assert/strict";
import { acpiByteSum, IORT_MF_CANWBS, iortProblem, upgradeIort } from "./iort.ts";
import { aarch64ElfProblem, arm64ImageProblem, cpioEntries, gzip, MIN_BZIMAGE, newcArchive } from "./cache.ts";
import { arm64InitramfsProblem, iortUpgradeProblem } from "./arm64.ts";

/** An IORT laid out as QEMU's virt writes it: an ITS group, an SMMUv3 node and a root complex node. */
function qemuLikeIort(rcFlags = 0x3, oemRevision = 1): Uint8Array {
  const nodes = [
    { type: 0, length: 24 }, // ITS group
    { type: 4, length: 88 }, // SMMUv3
    { type: 2, length: 56 }, // root complex
  ];
  const length = 48 + nodes.reduce((n, x) => n + x.length, 0);
  const t = new Uint8Array(length);
  const v = new DataView(t.buffer);
  t.set([..."IORT"].map((c) => c.charCodeAt(0)));
  v.setUint32(4, length, true);
  t[8] = 3;
  t.set([..."BOCHS "].map((c) => c.charCodeAt(0)), 10);
  t.set([..."BXPC    "].map((c) => c.charCodeAt(0)), 16);
  v.setUint32(24, oemRevision, true);
  v.setUint32(36, nodes.length, true);
  v.setUint32(40, 48, true);
  let at = 48;
  for (const n of nodes) {
    t[at] = n.type;
    v.setUint16(at + 1, n.length, true);
    if (n.type === 2) {
      v.setUint32(at + 16, 1, true); // cache coherent
      t[at + 23] = rcFlags;
    }
    at += n.length;
  }
  t[9] = (256 - acpiByteSum(t)) & 0xff;
  return t;
}

Deno.test("upgradeIort sets CANWBS on the root complex only, raises the OEM revision, keeps the checksum right", () => {
  const before = qemuLikeIort();
  assert.equal(iortProblem(before), undefined);
  const up = upgradeIort(before);
  assert.equal(iortProblem(up.table), undefined);
  assert.equal(acpiByteSum(up.table), 0);
  assert.deepEqual(up.rootComplexes, [{ offset: 48 + 24 + 88, flags: [0x3, 0x3 | IORT_MF_CANWBS] }]);
  assert.deepEqual(up.oemRevision, [1, 2]);
  assert.deepEqual([up.oemId, up.oemTableId], ["BOCHS ", "BXPC    "]);
  // Nothing else changed: only the flags byte, the OEM revision and the checksum differ.
  const changed = [...up.table].flatMap((b, i) => (b !== before[i] ? [i] : []));
  assert.deepEqual(changed, [9, 24, 48 + 24 + 88 + 23]);
  assert.equal(before[48 + 24 + 88 + 23], 0x3, "the input is not modified");
});

Deno.test("upgradeIort refuses what it cannot upgrade, naming why", () => {
  const bad = qemuLikeIort();
  bad[100] ^= 1;
  assert.throws(() => upgradeIort(bad), /checksum wrong/);
  const dsdt = qemuLikeIort();
  dsdt.set([..."DSDT"].map((c) => c.charCodeAt(0)));
  assert.throws(() => upgradeIort(dsdt), /signature "DSDT"/);
  assert.throws(() => upgradeIort(qemuLikeIort().subarray(0, 40)), /too short/);
  const noRc = qemuLikeIort();
  noRc[48 + 24 + 88] = 1; // the root complex becomes a named component
  noRc[9] = 0;
  noRc[9] = (256 - acpiByteSum(noRc)) & 0xff;
  assert.throws(() => upgradeIort(noRc), /no root complex node/);
  assert.throws(() => upgradeIort(qemuLikeIort(3, 0xffff_ffff)), /maximum/);
  const overrun = qemuLikeIort();
  new DataView(overrun.buffer).setUint16(48 + 1, 4000, true);
  overrun[9] = 0;
  overrun[9] = (256 - acpiByteSum(overrun)) & 0xff;
  assert.throws(() => upgradeIort(overrun), /bad length/);
});

Deno.test("newcArchive round-trips through cpioEntries: files, directories, symlinks", () => {
  const a = newcArchive([
    { name: "kernel", mode: 0o40755 },
    { name: "kernel/firmware/acpi/iort.aml", mode: 0o100644, data: new Uint8Array([1, 2, 3, 4, 5]) },
    { name: "lib", mode: 0o120777, target: "/arm/lib" },
  ]);
  const entries = cpioEntries(a);
  assert.deepEqual(entries.map((e) => [e.name, e.mode, e.size]), [
    ["kernel", 0o40755, 0],
    ["kernel/firmware/acpi/iort.aml", 0o100644, 5],
    ["lib", 0o120777, 8],
  ]);
  assert.deepEqual([...a.subarray(entries[1].data, entries[1].data + 5)], [1, 2, 3, 4, 5]);
  assert.equal(a.length % 4, 0);
});

Deno.test("the arm64 checks: Image magic, AArch64 ELF, the initramfs and the IORT upgrade archive", async () => {
  const image = new Uint8Array(MIN_BZIMAGE);
  assert.match(arm64ImageProblem(image) ?? "", /magic/);
  image.set([0x41, 0x52, 0x4d, 0x64], 0x38);
  assert.equal(arm64ImageProblem(image), undefined);
  assert.match(arm64ImageProblem(image.subarray(0, 1000)) ?? "", /too small/);

  const elf = new Uint8Array(4096);
  elf.set([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1]);
  elf[18] = 62; // x86-64
  assert.match(aarch64ElfProblem(elf) ?? "", /not AArch64/);
  elf[18] = 183;
  assert.equal(aarch64ElfProblem(elf), undefined);

  const init = new TextEncoder().encode("#!/bin/busybox sh\n");
  const good = newcArchive([
    { name: "bin", mode: 0o40755 },
    { name: "bin/busybox", mode: 0o100755, data: elf },
    { name: "init", mode: 0o100755, data: init },
  ]);
  assert.equal(arm64InitramfsProblem(good), undefined);
  assert.match(arm64InitramfsProblem(newcArchive([{ name: "bin/busybox", mode: 0o100755, data: elf }])) ?? "", /init/);
  assert.match(
    arm64InitramfsProblem(newcArchive([{ name: "init", mode: 0o100644, data: init }])) ?? "",
    /no executable/,
  );
  assert.match(
    arm64InitramfsProblem(await gzip(good)) ?? "",
    /no newc cpio header/,
    "the gzipped form is checked after gunzip",
  );

  const upgrade = (table: Uint8Array) =>
    newcArchive([{ name: "kernel/firmware/acpi/iort.aml", mode: 0o100644, data: table }]);
  assert.equal(iortUpgradeProblem(upgrade(upgradeIort(qemuLikeIort()).table)), undefined);
  const broken = upgradeIort(qemuLikeIort()).table;
  broken[60] ^= 0xff;
  assert.match(iortUpgradeProblem(upgrade(broken)) ?? "", /checksum/);
  assert.match(iortUpgradeProblem(newcArchive([])) ?? "", /no kernel\/firmware/);
});
