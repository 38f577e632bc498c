// ioctl encodings of every architecture Linux has, checked against each arch's own asm/ioctl.h from the 7.3
// kernel source, compiled here (powerpc and mips include asm-generic with their overrides; sparc is its own).
import assert from "node:assert/strict";
import { IOC_ARCHES, type IocDirection, iocFor } from "../../lib/uapi/mod.ts";
import { locateHeaders } from "../../tools/uapi_golden.ts";

const headers = await locateHeaders();
const SAMPLES: [IocDirection, number, number, number][] = [
  ["none", 0x3b, 0x8d, 0],
  ["none", 0x3b, 0x7b, 0],
  ["read", 0xae, 0x02, 4],
  ["write", 0xae, 0x46, 32],
  ["readwrite", 0x3b, 0xff, 8191],
  ["read", 0xff, 0x00, 1],
];

async function compiled(arch: string): Promise<number[]> {
  const dir = await Deno.makeTempDir();
  try {
    const asm = arch === "generic"
      ? `${headers.tree}/include/uapi/asm-generic/ioctl.h`
      : `${headers.tree}/arch/${arch}/include/uapi/asm/ioctl.h`;
    await Deno.mkdir(`${dir}/asm`);
    await Deno.copyFile(asm, `${dir}/asm/ioctl.h`);
    const macro = { none: "_IO", read: "_IOR", write: "_IOW", readwrite: "_IOWR" };
    const lines = SAMPLES.map(([d, t, n, size]) =>
      d === "none"
        ? `printf("%u\\n", (unsigned)_IO(${t}, ${n}));`
        : `printf("%u\\n", (unsigned)${macro[d]}(${t}, ${n}, char[${size}]));`
    );
    await Deno.writeTextFile(
      `${dir}/t.c`,
      `#include <stdio.h>\n#include <asm/ioctl.h>\nint main(void) {\n${lines.join("\n")}\nreturn 0;\n}\n`,
    );
    const cc = await new Deno.Command("cc", {
      args: ["-I", dir, "-I", `${headers.tree}/include/uapi`, "-o", `${dir}/t`, `${dir}/t.c`],
      stderr: "piped",
    }).output();
    if (!cc.success) throw new Error(new TextDecoder().decode(cc.stderr));
    const out = await new Deno.Command(`${dir}/t`, { stdout: "piped" }).output();
    return new TextDecoder().decode(out.stdout).trim().split("\n").map(Number);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

for (const arch of Object.values(IOC_ARCHES)) {
  Deno.test(`ioctl encoding: ${arch.name} matches its asm/ioctl.h`, async () => {
    const expected = await compiled(arch.name);
    assert.deepEqual(SAMPLES.map(([d, t, n, size]) => iocFor(arch, d, t, n, size)), expected);
  });
}

Deno.test("ioctl encoding: powerpc, mips and sparc put _IO at 0x2000_0000 | (';' << 8) | nr", () => {
  for (const name of ["powerpc", "mips", "sparc"] as const) {
    assert.equal(iocFor(IOC_ARCHES[name], "none", 0x3b, 0x8d, 0), 0x20003b8d);
  }
  assert.throws(() => iocFor(IOC_ARCHES.powerpc, "read", 0x3b, 1, 8192), RangeError);
  assert.equal(iocFor(IOC_ARCHES.sparc, "read", 0x3b, 1, 8192), (0x4000_0000 | (8192 << 16) | 0x3b01) >>> 0);
});
