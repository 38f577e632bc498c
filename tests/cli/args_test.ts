// cli/args.ts in process: the argument helpers every command shares, and the one-line refusals.
import assert from "node:assert/strict";
import { parseArgs } from "node:util";
import { CliError, guarded, number, parseCommand, pasidArg, scopeArg, tableArg } from "../../cli/args.ts";

const refused = (f: () => unknown, message: RegExp) =>
  assert.throws(f, (e) => e instanceof CliError && e.code === 2 && message.test(e.message));

Deno.test("cli args: numbers are decimal or 0x hex, safe and non-negative", () => {
  assert.equal(number("4096", "x"), 4096);
  assert.equal(number("0X1f", "x"), 31);
  for (const bad of ["-1", "1e3", "", "0x", "12a", String(2 ** 53)]) refused(() => number(bad, "--x"), /^--x: /);
});

Deno.test("cli args: --pasid, --table and --range", () => {
  assert.equal(pasidArg("rid", true, "c", "HELP"), "rid");
  assert.equal(pasidArg("0x5", true, "c", "HELP"), 5);
  assert.equal(pasidArg(undefined, false, "c", "HELP"), undefined);
  refused(() => pasidArg(undefined, true, "unbind-pasid", "HELP"), /^unbind-pasid needs --pasid N\|rid\nHELP$/);
  assert.deepEqual(tableArg("vtd-s1:0x100000", ""), { format: "vtd-s1", tableAddress: 0x100000, addressWidth: 48 });
  assert.deepEqual(tableArg("vtd-s1:4096:57", ""), { format: "vtd-s1", tableAddress: 4096, addressWidth: 57 });
  assert.deepEqual(tableArg("selftest:0x66", ""), { format: "selftest", iotlb: 0x66 });
  refused(() => tableArg("vtd-s1:0:39", ""), /address width 39/);
  for (const bad of [undefined, "smmuv3:1", "selftest:1:2", "vtd-s1:"]) {
    refused(() => tableArg(bad, ""), /^--table takes/);
  }
  assert.deepEqual(scopeArg(undefined, undefined, ""), { kind: "all" });
  assert.deepEqual(scopeArg(undefined, "rid", ""), { kind: "all" });
  assert.deepEqual(scopeArg(undefined, 7, ""), { kind: "pasid", pasid: 7 });
  assert.deepEqual(scopeArg("0x7f000123+0x2000", 5, ""), {
    kind: "pasid-range",
    pasid: 5,
    firstPage: 0x7f000,
    pages: 3,
  });
  assert.deepEqual(scopeArg("0+4096", "rid", ""), { kind: "range", firstPage: 0, pages: 1 });
  refused(() => scopeArg("0+0", undefined, ""), /empty range/);
  refused(() => scopeArg("4096", undefined, ""), /^--range takes ADDR\+BYTES/);
});

Deno.test("cli args: parseArgs refusals become one line naming the command and the option", () => {
  const parse = (args: string[]) =>
    parseCommand("invalidate", () => parseArgs({ args, strict: true, options: { range: { type: "string" } } }));
  assert.equal(parse(["--range", "0+1"]).values.range, "0+1");
  refused(() => parse(["--frob"]), /^invalidate: unknown option '--frob' \(see cli\/main.ts invalidate --help\)$/);
  refused(() => parse(["--range"]), /^invalidate: option '--range <value>' argument missing/);
  refused(() => parse(["extra"]), /^invalidate: unexpected argument 'extra'/);
  assert.throws(() => parseCommand("x", () => JSON.parse("{")), SyntaxError, "other errors pass through");
});

Deno.test("cli args: guarded turns errors into `error: ...` and the exit code", async () => {
  const printed: string[] = [];
  const error = console.error;
  console.error = (line: string) => printed.push(line);
  try {
    assert.equal(await guarded(async () => {}), 0);
    assert.equal(await guarded(() => Promise.reject(new CliError("bad arguments", 2))), 2);
    assert.equal(await guarded(() => Promise.reject(new CliError("failed"))), 1);
    assert.equal(await guarded(() => Promise.reject(new RangeError("boom"))), 1);
  } finally {
    console.error = error;
  }
  assert.deepEqual(printed, ["error: bad arguments", "error: failed", "error: RangeError: boom"]);
});
