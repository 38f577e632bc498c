/**
 * `deno task doc-lint`: `deno doc --lint` over every entry point deno.json exports (read from deno.json, so a new
 * subpath export is linted the day it is added). Exits with deno doc's status.
 *
 * @module
 */
const root = new URL("../", import.meta.url);
const config = JSON.parse(await Deno.readTextFile(new URL("deno.json", root))) as { exports: Record<string, string> };
const entries = Object.values(config.exports);
const status = await new Deno.Command(Deno.execPath(), {
  args: ["doc", "--lint", ...entries],
  cwd: root.pathname,
  stdout: "inherit",
  stderr: "inherit",
}).spawn().status;
console.log(`doc-lint: ${entries.length} entry points, ${status.success ? "clean" : "problems above"}`);
Deno.exit(status.code);
