// The kernel suite's cache and tool checks (tools/kernel/cache.ts): pure, no kernel or QEMU needed.
import assert from "node:assert/strict";
import {
  bzImageProblem,
  cpioEntries,
  elfProblem,
  gzip,
  gzipInitramfsProblem,
  initramfsProblem,
  MIN_BZIMAGE,
  missingLine,
  missingTools,
  suiteTools,
  usable,
  writeChecked,
} from "./cache.ts";

const text = (s: string) => new TextEncoder().encode(s);

function bzImage(size = MIN_BZIMAGE): Uint8Array {
  const bytes = new Uint8Array(size);
  bytes[510] = 0x55;
  bytes[511] = 0xaa;
  bytes.set(text("HdrS"), 0x202);
  return bytes;
}

function elf(size = 4096): Uint8Array {
  const bytes = new Uint8Array(size);
  bytes.set([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1], 0);
  return bytes;
}

/** A newc archive of `members` (name, mode, data), as `cpio -o -H newc` writes it. */
function cpio(members: [string, number, Uint8Array][]): Uint8Array {
  const parts: Uint8Array[] = [];
  let length = 0;
  const push = (b: Uint8Array) => {
    parts.push(b);
    length += b.length;
    const pad = (4 - (length % 4)) % 4;
    if (pad) {
      parts.push(new Uint8Array(pad));
      length += pad;
    }
  };
  const hex = (n: number) => n.toString(16).padStart(8, "0");
  for (const [name, mode, data] of [...members, ["TRAILER!!!", 0, new Uint8Array()] as [string, number, Uint8Array]]) {
    const fields = [1, mode, 0, 0, 1, 0, data.length, 0, 0, 0, 0, name.length + 1, 0];
    const header = text(`070701${fields.map(hex).join("")}${name}\0`);
    parts.push(header);
    length += header.length;
    const pad = (4 - (length % 4)) % 4;
    if (pad) {
      parts.push(new Uint8Array(pad));
      length += pad;
    }
    if (data.length) push(data);
  }
  const out = new Uint8Array(length);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

Deno.test("bzImageProblem accepts the x86 boot signature and setup header, refuses anything else", () => {
  assert.deepEqual(bzImageProblem(bzImage()), undefined);
  assert.match(bzImageProblem(bzImage(1024))!, /too small/);
  const noSig = bzImage();
  noSig[511] = 0;
  assert.match(bzImageProblem(noSig)!, /0x55AA/);
  const noHdr = bzImage();
  noHdr[0x202] = 0;
  assert.match(bzImageProblem(noHdr)!, /HdrS/);
});

Deno.test("elfProblem wants a 64-bit little-endian ELF header", () => {
  assert.deepEqual(elfProblem(elf()), undefined);
  assert.match(elfProblem(new Uint8Array(10))!, /too small/);
  assert.match(elfProblem(text("#!/bin/sh\n".padEnd(100, " ")))!, /magic/);
  const elf32 = elf();
  elf32[4] = 1;
  assert.match(elfProblem(elf32)!, /64-bit/);
});

Deno.test("initramfsProblem: an archive with an executable ELF /init passes", () => {
  const archive = cpio([["init", 0o100755, elf()]]);
  assert.deepEqual(cpioEntries(archive).map((e) => e.name), ["init"]);
  assert.deepEqual(initramfsProblem(archive), undefined);
  assert.deepEqual(
    initramfsProblem(cpio([[".", 0o40755, new Uint8Array()], ["./init", 0o100755, elf(4097)]])),
    undefined,
  );
});

Deno.test("initramfsProblem refuses what a failed cpio leaves behind", () => {
  // What `find . | cpio ... | gzip` gave with cpio missing: an empty stream (20 bytes once gzipped).
  assert.match(initramfsProblem(new Uint8Array())!, /without a TRAILER/);
  assert.match(initramfsProblem(cpio([]))!, /no \/init/);
  assert.match(initramfsProblem(cpio([["init", 0o100644, elf()]]))!, /not executable/);
  assert.match(initramfsProblem(cpio([["init", 0o40755, new Uint8Array()]]))!, /not a regular file/);
  assert.match(initramfsProblem(cpio([["init", 0o100755, text("#!/bin/sh\n".padEnd(80))]]))!, /ELF/);
  const cut = cpio([["init", 0o100755, elf()]]).subarray(0, 2000);
  assert.match(initramfsProblem(cut)!, /past the end/);
  assert.match(initramfsProblem(text("not a cpio archive at all, no no no".padEnd(200)))!, /no newc cpio header/);
});

Deno.test("gzipInitramfsProblem: checks the gzip magic, decompression and the archive inside", async () => {
  const good = await gzip(cpio([["init", 0o100755, elf()]]));
  assert.deepEqual(await gzipInitramfsProblem(good), undefined);
  const empty = await gzip(new Uint8Array());
  assert.deepEqual(empty.length, 20);
  assert.match((await gzipInitramfsProblem(empty))!, /without the gzip magic|TRAILER/);
  assert.match((await gzipInitramfsProblem(cpio([["init", 0o100755, elf()]])))!, /gzip magic/);
  const truncated = good.subarray(0, good.length - 30);
  assert.ok(await gzipInitramfsProblem(truncated) !== undefined);
});

Deno.test("missingTools and missingLine name the tools and their packages in one line", () => {
  const tools = suiteTools();
  assert.ok(tools.some((t) => t.need === "qemu-system-x86_64" && t.pkg === "qemu-system-x86"));
  assert.ok(tools.some((t) => t.need === "cpio"));
  const missing = missingTools(tools, (need) => need !== "cpio" && need !== "qemu-system-x86_64");
  assert.deepEqual(missing.map((t) => t.need), ["cpio", "qemu-system-x86_64"]);
  const line = missingLine(missing);
  assert.ok(!line.includes("\n"));
  assert.match(line, /cpio .*qemu-system-x86_64 .*apt-get install cpio qemu-system-x86/);
  assert.match(missingLine(missing, true), /^still missing after apt-get install cpio qemu-system-x86: .*PATH/);
  assert.deepEqual(missingTools(tools, () => true), []);
});

Deno.test("writeChecked refuses a bad entry; usable deletes a bad cached one and keeps a good one", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/bzImage`;
    const lines: string[] = [];
    const log = (line: string) => void lines.push(line);
    let threw = false;
    await writeChecked(path, new Uint8Array(20), "kernel image", bzImageProblem).catch(() => threw = true);
    assert.ok(threw);
    assert.deepEqual(await usable(path, "kernel image", bzImageProblem, log), false);
    assert.deepEqual([...Deno.readDirSync(dir)], []);
    await writeChecked(path, bzImage(), "kernel image", bzImageProblem);
    assert.deepEqual(await usable(path, "kernel image", bzImageProblem, log), true);
    await Deno.writeFile(path, new Uint8Array(20));
    assert.deepEqual(await usable(path, "kernel image", bzImageProblem, log), false);
    assert.deepEqual(lines.length, 1);
    assert.match(lines[0], /bad .*deleting it and building it again/);
    assert.deepEqual([...Deno.readDirSync(dir)], []);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
