import assert from "node:assert/strict";
import { ensureShim, SHIM_FILE, ShimBuildError, shimPath } from "../../ffi/build.ts";

Deno.test("build: the shim path is keyed by source hash and stable", async () => {
  const a = await shimPath();
  assert.equal(a, await shimPath());
  assert.match(a, new RegExp(`/shim-[0-9a-f]{16}/${SHIM_FILE}$`));
  assert.equal(await ensureShim(), a);
  assert.ok((await Deno.stat(a)).isFile);
});

Deno.test("build: a cached library is not rebuilt", async () => {
  const path = await ensureShim();
  const before = (await Deno.stat(path)).mtime?.getTime();
  await ensureShim();
  assert.equal((await Deno.stat(path)).mtime?.getTime(), before);
});

Deno.test("build: a missing compiler is one clear line saying what to install", async () => {
  const cache = await Deno.makeTempDir();
  const saved = { cache: Deno.env.get("IOMMU_RELAY_CACHE"), cc: Deno.env.get("CC") };
  Deno.env.set("IOMMU_RELAY_CACHE", cache);
  Deno.env.set("CC", "/nonexistent/cc");
  try {
    await assert.rejects(ensureShim(), (e) => {
      assert.ok(e instanceof ShimBuildError);
      assert.match(e.message, /no C compiler '\/nonexistent\/cc' found: install one \(Debian: apt-get install gcc\)/);
      assert.ok(!e.message.includes("\n"));
      return true;
    });
  } finally {
    saved.cache === undefined ? Deno.env.delete("IOMMU_RELAY_CACHE") : Deno.env.set("IOMMU_RELAY_CACHE", saved.cache);
    saved.cc === undefined ? Deno.env.delete("CC") : Deno.env.set("CC", saved.cc);
    await Deno.remove(cache, { recursive: true });
  }
});

Deno.test("build: a compile error is reported with the compiler's first lines", async () => {
  const cache = await Deno.makeTempDir();
  const saved = { cache: Deno.env.get("IOMMU_RELAY_CACHE"), cc: Deno.env.get("CC") };
  Deno.env.set("IOMMU_RELAY_CACHE", cache);
  Deno.env.set("CC", "false");
  try {
    await assert.rejects(ensureShim(), (e) => e instanceof ShimBuildError && /failed/.test(e.message));
  } finally {
    saved.cache === undefined ? Deno.env.delete("IOMMU_RELAY_CACHE") : Deno.env.set("IOMMU_RELAY_CACHE", saved.cache);
    saved.cc === undefined ? Deno.env.delete("CC") : Deno.env.set("CC", saved.cc);
    await Deno.remove(cache, { recursive: true });
  }
});
