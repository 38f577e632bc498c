/**
 * `replay <trace>`: run a recorded guest request trace (JSON lines) through the relay on the in-process host.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { ModelHost } from "../../lib/host/model.ts";
import { RelayQueue } from "../../lib/relay/queue.ts";
import { type Request, RequestError, validateRequest } from "../../lib/request/request.ts";
import { CliError, type Command, guarded, output, parseCommand, PROGRAM } from "../args.ts";

const HELP = `usage: ${PROGRAM} replay <trace.jsonl> [--domain-binding D:P:format]... [--json]

Each line of the trace is a request ({"op":"invalidate",...} / {"op":"sync"}); bindings map (domain, PASID or rid)
to a host target of the in-process host. Prints host ioctls, entries and wait outcomes.

options:
  --domain-binding D:P:FORMAT   bind domain D's PASID P (or \`rid\`) to a new target of FORMAT (vtd-s1, the
                                default, or selftest); repeatable
  --json                        machine output
  -h, --help                    this text`;

function parse(args: string[]) {
  return parseCommand("replay", () =>
    parseArgs({
      args,
      strict: true,
      allowPositionals: true,
      options: {
        help: { type: "boolean", short: "h", default: false },
        json: { type: "boolean", default: false },
        "domain-binding": { type: "string", multiple: true, default: [] },
      },
    }));
}

/**
 * Run `replay <trace>`: every request of the trace through a {@linkcode RelayQueue} on the in-process host, draining
 * at each sync. Resolves to the exit code (2 for a malformed trace line, named `file:line`).
 */
export function run(args: string[]): Promise<number> {
  return guarded(async () => {
    const { values, positionals } = parse(args);
    if (values.help) return console.log(HELP);
    const file = positionals[0];
    if (!file) throw new CliError(`replay needs a trace file\n${HELP}`, 2);
    if (positionals.length > 1) throw new CliError(`replay: unexpected argument '${positionals[1]}'`, 2);
    const host = new ModelHost();
    const queue = new RelayQueue(host);
    for (const spec of values["domain-binding"]) {
      const [d, p, format = "vtd-s1"] = spec.split(":");
      if (format !== "vtd-s1" && format !== "selftest") {
        throw new CliError(`unknown format in --domain-binding ${spec}`, 2);
      }
      queue.bind(Number(d), p === "rid" ? "rid" : Number(p), { targetId: host.createTarget(format), format });
    }
    const lines = (await Deno.readTextFile(file)).split("\n").filter((l) => l.trim());
    let waits = 0, failed = 0;
    for (const [i, line] of lines.entries()) {
      let request: Request;
      try {
        request = validateRequest(JSON.parse(line));
      } catch (e) {
        throw new CliError(
          `${file}:${i + 1}: ${e instanceof RequestError || e instanceof SyntaxError ? e.message : e}`,
          2,
        );
      }
      queue.submit(request);
      if (request.op === "sync") {
        const r = queue.drain();
        waits += r.waits.length;
        failed += r.waits.filter((w) => !w.ok).length;
      }
    }
    const last = queue.drain();
    waits += last.waits.length;
    const t = queue.telemetry;
    const summary = {
      requests: lines.length,
      invalidations: t.invalidationsIn,
      waits,
      failedWaits: failed,
      ioctls: t.ioctls,
      entries: t.entriesOut,
    };
    output(
      values.json,
      `${summary.requests} requests: ${summary.ioctls} host ioctls, ${summary.entries} entries, ${summary.waits} waits (${summary.failedWaits} failed)`,
      summary,
    );
  });
}

/** `replay` as the command list shows it. */
export const replay: Command = {
  name: "replay",
  synopsis: "replay <trace>",
  summary: "run a recorded guest request trace (JSON lines) through the relay on the in-process host",
  help: HELP,
  run,
};
