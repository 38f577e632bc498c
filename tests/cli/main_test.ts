// cli/main.ts: the command list, dispatch, and every command's own --help and option checking, run as a user runs
// them (deno subprocesses).
import assert from "node:assert/strict";
import { run } from "./run.ts";
import { COMMANDS } from "../../cli/main.ts";

Deno.test("cli: --help on the tool and on each command", async () => {
  const top = await run([], ["--help"]);
  assert.equal(top.code, 0);
  assert.match(top.stdout, /commands:\n {2}info/);
  for (const c of ["info", "hw-info", "probe", "replay", "serve", "bind-pasid", "invalidate", "unbind-pasid"]) {
    const r = await run([], [c, "--help"]);
    assert.equal(r.code, 0, c);
    assert.match(r.stdout, new RegExp(`usage: cli/main.ts ${c}`));
  }
  assert.equal((await run([], ["frobnicate"])).code, 2);
});

Deno.test("cli: each command answers --help with its own options, exit 0, and refuses another's in one line", async () => {
  // The options only some commands take: each must be listed by those and refused by the others.
  const OWN: Record<string, string[]> = {
    info: ["--iommu", "--cdev", "--shim", "--json"],
    "hw-info": ["--iommu", "--shim", "--json"],
    probe: ["--iommu", "--shim", "--json"],
    replay: ["--domain-binding", "--json"],
    serve: ["--socket", "--listen", "--in-process", "--iommu", "--iommufd-fd", "--device", "--max-pending", "--shim"],
    "bind-pasid": ["--socket", "--device", "--pasid", "--table", "--json"],
    invalidate: ["--socket", "--device", "--pasid", "--range", "--leaf", "--json"],
    "unbind-pasid": ["--socket", "--device", "--pasid", "--json"],
  };
  assert.deepEqual(Object.keys(OWN).sort(), COMMANDS.map((c) => c.name).sort(), "every command is checked");
  const all = [...new Set(Object.values(OWN).flat())];
  await Promise.all(COMMANDS.map(async ({ name }) => {
    const r = await run([], [name, "--help"]);
    assert.equal(r.code, 0, `${name}: ${r.stderr}`);
    assert.equal(r.stderr, "", name);
    for (const o of OWN[name]) assert.ok(r.stdout.includes(o), `${name} --help lists ${o}`);
    const short = await run([], [name, "-h"]);
    assert.deepEqual([short.code, short.stdout], [0, r.stdout], `${name} -h`);
    // An option of another command (or none at all) is refused before anything runs: exit 2, one line naming it.
    const foreign = all.find((o) => !OWN[name].includes(o))!;
    for (const bad of [foreign, "--frobnicate"]) {
      const args = bad === "--leaf" || bad === "--json" || bad === "--in-process" || bad === "--frobnicate"
        ? [name, bad]
        : [name, bad, "x"];
      const refused = await run([], args);
      assert.equal(refused.code, 2, `${name} ${bad}: ${refused.stderr}`);
      assert.equal(refused.stdout, "", `${name} ${bad}`);
      assert.equal(refused.stderr.trimEnd().split("\n").length, 1, `${name} ${bad}: ${refused.stderr}`);
      assert.match(refused.stderr, new RegExp(`^error: ${name}: unknown option '${bad}'`), `${name} ${bad}`);
    }
  }));
});

Deno.test("cli: no command, `help <command>`, and options before the command", async () => {
  const none = await run([], []);
  assert.equal(none.code, 2);
  assert.match(none.stdout, /commands:/);
  assert.match(none.stderr, /^error: a command is required\n$/);
  const help = await run([], ["help", "replay"]);
  assert.equal(help.code, 0);
  assert.match(help.stdout, /^usage: cli\/main.ts replay/);
  const before = await run([], ["--help", "serve"]);
  assert.equal(before.code, 0);
  assert.match(before.stdout, /^usage: cli\/main.ts serve/);
  const unknown = await run([], ["frobnicate"]);
  assert.match(unknown.stderr, /^error: unknown command 'frobnicate'\n/);
});
