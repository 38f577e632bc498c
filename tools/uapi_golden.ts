/**
 * The golden check: compiles a C program against the kernel's own 7.3 uAPI headers that prints sizeof, every
 * offsetof (with member size and signedness), every ioctl number and every constant that lib/uapi defines, and
 * compares each with the TypeScript definition.
 *
 * `deno run -A tools/uapi_golden.ts` prints the comparison; tests/uapi/golden_test.ts runs it as a test.
 *
 * @module
 */
import { UAPI, type UapiRegistry } from "../lib/uapi/mod.ts";

/** Where the headers are: see tools/uapi-headers.sh. */
export interface HeaderSet {
  /** `-I` folder of linux-libc-dev's usr/include. */
  readonly include: string;
  /** Folder holding iommufd_test.h. */
  readonly selftest: string;
  /** Kernel source files extracted at their tree paths (arch/<arch>/include/uapi/asm/ioctl.h, …). */
  readonly tree: string;
  /** Which packages. */
  readonly version: string;
}

/** One golden comparison's outcome. */
export interface GoldenResult {
  /** Items compared (struct sizes, field offsets/sizes/signedness, ioctls, constants). */
  readonly compared: number;
  /** Per kind. */
  readonly counts: { structs: number; fields: number; ioctls: number; constants: number };
  /** Every disagreement, one line each. */
  readonly mismatches: string[];
}

/** Fetch (once, cached) and locate the 7.3 headers. */
export async function locateHeaders(): Promise<HeaderSet> {
  const script = new URL("./uapi-headers.sh", import.meta.url).pathname;
  const out = await new Deno.Command("bash", { args: [script], stdout: "piped", stderr: "piped" }).output();
  const text = new TextDecoder().decode(out.stdout);
  if (!out.success) {
    throw new Error(`uapi-headers.sh failed: ${new TextDecoder().decode(out.stderr).trim().split("\n").at(-1)}`);
  }
  const line = (key: string) => text.split("\n").find((l) => l.startsWith(`${key} `))?.slice(key.length + 1) ?? "";
  return { include: line("include"), selftest: line("selftest"), tree: line("tree"), version: line("version") };
}

const C_PRELUDE = `#include <stdio.h>
#include <stddef.h>
#include <linux/iommufd.h>
#include <linux/vfio.h>
#include <linux/kvm.h>
#include <asm-generic/errno.h>
#include "iommufd_test.h"
#define SIZE(key, type) printf("size %s %zu\\n", key, sizeof(type));
#define MEMBER(key, type, m) printf("member %s %zu %zu %d\\n", key, offsetof(type, m), sizeof(((type *)0)->m), \\
  (int)(((__typeof__(((type *)0)->m))-1) < 0));
#define ARRAY(key, type, m) printf("member %s %zu %zu 0\\n", key, offsetof(type, m), sizeof(((type *)0)->m));
#define VALUE(key, expr) printf("value %s %llu\\n", key, (unsigned long long)(expr));
int main(void) {
`;

/** The C program for a registry: one printed line per item. */
export function generateC(registry: UapiRegistry): string {
  const lines: string[] = [C_PRELUDE];
  for (const s of registry.structs) {
    if (!s.inHeaders) continue;
    lines.push(`SIZE("${s.name}", ${s.cType})`);
    for (const f of s.layout) {
      const m = f.c ?? f.name;
      const macro = f.count !== undefined ? "ARRAY" : "MEMBER";
      lines.push(`${macro}("${s.name}.${f.name}", ${s.cType}, ${m})`);
    }
  }
  for (const i of registry.ioctls) if (i.inHeaders) lines.push(`VALUE("${i.name}", ${i.name})`);
  for (const g of registry.constants) {
    for (const name of Object.keys(g.values)) {
      if (!g.ownValues?.includes(name)) lines.push(`VALUE("${g.name}.${name}", ${name})`);
    }
  }
  lines.push("return 0;\n}\n");
  return lines.join("\n");
}

const SIGNED = new Set(["s32"]);

/** Compare the C program's output with the registry. */
export function compare(registry: UapiRegistry, output: string): GoldenResult {
  const seen = new Map<string, string[]>();
  for (const line of output.trim().split("\n")) {
    const [kind, key, ...rest] = line.split(" ");
    seen.set(`${kind} ${key}`, rest);
  }
  const mismatches: string[] = [];
  const counts = { structs: 0, fields: 0, ioctls: 0, constants: 0 };
  const expect = (kind: string, key: string, want: (string | number)[]) => {
    const got = seen.get(`${kind} ${key}`);
    if (!got) mismatches.push(`${key}: not printed by the C program`);
    else if (got.join(" ") !== want.join(" ")) {
      mismatches.push(`${key}: headers say ${got.join(" ")}, TypeScript says ${want.join(" ")}`);
    }
  };
  for (const s of registry.structs) {
    if (!s.inHeaders) continue;
    counts.structs++;
    expect("size", s.name, [s.size]);
    for (const f of s.layout) {
      counts.fields++;
      expect("member", `${s.name}.${f.name}`, [
        f.offset,
        f.byteSize,
        f.count === undefined && SIGNED.has(f.type) ? 1 : 0,
      ]);
    }
  }
  for (const i of registry.ioctls) {
    if (!i.inHeaders) continue;
    counts.ioctls++;
    expect("value", i.name, [i.request]);
  }
  for (const g of registry.constants) {
    for (const [name, value] of Object.entries(g.values)) {
      if (g.ownValues?.includes(name)) continue;
      counts.constants++;
      // Negative C constants print as their u64 two's complement.
      expect("value", `${g.name}.${name}`, [value < 0 ? (BigInt(value) + (1n << 64n)).toString() : value]);
    }
  }
  const compared = counts.structs + counts.fields + counts.ioctls + counts.constants;
  return { compared, counts, mismatches };
}

/** Compile and run the program for `registry` against `headers`, then compare. */
export async function runGolden(registry: UapiRegistry, headers: HeaderSet): Promise<GoldenResult> {
  const dir = await Deno.makeTempDir({ prefix: "iommu-relay-golden-" });
  try {
    await Deno.writeTextFile(`${dir}/golden.c`, generateC(registry));
    const cc = await new Deno.Command("cc", {
      args: ["-std=gnu11", "-Wall", "-Werror", ...await headerFlags(headers), "-o", `${dir}/golden`, `${dir}/golden.c`],
      stderr: "piped",
    }).output();
    if (!cc.success) throw new Error(`golden.c did not compile:\n${new TextDecoder().decode(cc.stderr)}`);
    const run = await new Deno.Command(`${dir}/golden`, { stdout: "piped" }).output();
    if (!run.success) throw new Error("golden program failed");
    return compare(registry, new TextDecoder().decode(run.stdout));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/**
 * Compiler flags that put the 7.3 headers (and iommufd_test.h) before the system's: what the golden program and the
 * kernel suite's standalone C program are built with.
 */
export async function headerFlags(headers: HeaderSet): Promise<string[]> {
  const multiarch = new TextDecoder().decode(
    (await new Deno.Command("cc", { args: ["-print-multiarch"], stdout: "piped" }).output()).stdout,
  ).trim();
  return [
    "-nostdinc",
    "-isystem",
    headers.include,
    "-isystem",
    `${headers.include}/${multiarch}`,
    "-isystem",
    "/usr/include",
    "-isystem",
    `/usr/include/${multiarch}`,
    ...gccIncludes(),
    "-I",
    headers.selftest,
  ];
}

let gccInclude: string[] | undefined;
function gccIncludes(): string[] {
  // -nostdinc drops the compiler's own folder (stddef.h); add it back after the 7.3 headers.
  if (!gccInclude) {
    const out = new Deno.Command("cc", { args: ["-print-file-name=include"], stdout: "piped" }).outputSync();
    gccInclude = ["-isystem", new TextDecoder().decode(out.stdout).trim()];
  }
  return gccInclude;
}

if (import.meta.main) {
  const headers = await locateHeaders();
  const result = await runGolden(UAPI, headers);
  for (const m of result.mismatches) console.log(`MISMATCH ${m}`);
  const c = result.counts;
  console.log(
    `golden: compared ${result.compared} items (${c.structs} structs, ${c.fields} fields, ${c.ioctls} ioctls, ` +
      `${c.constants} constants) against ${headers.version}: ${result.mismatches.length} mismatches`,
  );
  if (result.mismatches.length) Deno.exit(1);
}
