/**
 * Reading guest recordings ("guest-trace" text files, usually gzip): the lines that are not comments, split into
 * fields, and the header comments, for the CMDQ and virtio-iommu replays.
 *
 * @module
 */

/**
 * The text of a recording file, gunzipped when its name ends in `.gz`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { readRecordingText } from "./recordings.ts";
 * const path = await Deno.makeTempFile({ suffix: ".txt" });
 * await Deno.writeTextFile(path, "# header\n1 2 3\n");
 * assert.equal(await readRecordingText(path), "# header\n1 2 3\n");
 * await Deno.remove(path);
 * ```
 */
export async function readRecordingText(path: string | URL): Promise<string> {
  const file = await Deno.open(path, { read: true });
  const name = typeof path === "string" ? path : path.pathname;
  const stream = name.endsWith(".gz") ? file.readable.pipeThrough(new DecompressionStream("gzip")) : file.readable;
  return await new Response(stream).text();
}

/** A recording's header comments (without the `# `) and its data lines split on single spaces. */
export function splitRecording(text: string): { header: string[]; rows: string[][] } {
  const header: string[] = [], rows: string[][] = [];
  for (const line of text.split("\n")) {
    if (line.startsWith("#")) header.push(line.replace(/^# ?/, ""));
    else if (line.trim() !== "") rows.push(line.trim().split(/\s+/));
  }
  return { header, rows };
}

/** `key=value` fields into a record (later keys win). */
export function keyValues(fields: readonly string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const f of fields) {
    const eq = f.indexOf("=");
    if (eq > 0) out[f.slice(0, eq)] = f.slice(eq + 1);
  }
  return out;
}
