// The README stays short, and the documentation's relative links lead somewhere: README.md at most 200 lines; every
// relative link in README.md, RELIABILITY.md, BENCHMARKS.md and docs/*.md names a file that exists. (The README's
// TypeScript example is a doc test: `deno test --doc README.md`.)
import assert from "node:assert/strict";

const root = new URL("../", import.meta.url);

/** Markdown files whose links are checked, relative to the repository root. */
function markdownFiles(): string[] {
  const files = ["README.md", "RELIABILITY.md", "BENCHMARKS.md"];
  for (const entry of Deno.readDirSync(new URL("docs/", root))) {
    if (entry.isFile && entry.name.endsWith(".md")) files.push(`docs/${entry.name}`);
  }
  return files.sort();
}

/** Targets of inline links and images (`[text](target)`), outside code spans and fenced blocks. */
export function relativeLinks(markdown: string): string[] {
  const links: string[] = [];
  let fenced = false;
  for (const line of markdown.split("\n")) {
    if (/^\s*(```|~~~)/.test(line)) {
      fenced = !fenced;
      continue;
    }
    if (fenced) continue;
    const text = line.replace(/`[^`]*`/g, "");
    for (const m of text.matchAll(/!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)/g)) {
      const target = m[1];
      if (/^[a-z][a-z0-9+.-]*:/i.test(target) || target.startsWith("#")) continue; // a URL, or a heading here
      links.push(target);
    }
  }
  return links;
}

Deno.test("readme: README.md is at most 200 lines", () => {
  const lines = Deno.readTextFileSync(new URL("README.md", root)).split("\n");
  if (lines.at(-1) === "") lines.pop();
  assert.ok(lines.length <= 200, `README.md has ${lines.length} lines; keep it to 200 and move the rest into docs/`);
});

Deno.test("readme: the link finder sees links and skips URLs, anchors, code spans and fenced blocks", () => {
  const md = [
    "[a](docs/a.md) and [b](../b.md#part) and ![c](img.svg)",
    "[web](https://example.org) [here](#status) `[not](code.md)`",
    "```",
    "[fenced](x.md)",
    "```",
  ].join("\n");
  assert.deepEqual(relativeLinks(md), ["docs/a.md", "../b.md#part", "img.svg"]);
});

Deno.test("readme: every relative link in README.md and docs/*.md names an existing file", () => {
  const broken: string[] = [];
  let checked = 0;
  for (const file of markdownFiles()) {
    const base = new URL(file, root);
    for (const link of relativeLinks(Deno.readTextFileSync(base))) {
      const path = decodeURIComponent(link.split("#")[0]);
      if (path === "") continue;
      checked++;
      try {
        Deno.statSync(new URL(path, base));
      } catch {
        broken.push(`${file}: ${link}`);
      }
    }
  }
  assert.deepEqual(broken, [], `broken links:\n${broken.join("\n")}`);
  assert.ok(checked > 0, "no links found: the link finder is broken");
});
