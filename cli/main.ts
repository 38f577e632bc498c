/**
 * iommu-relay's host CLI: the entry point.
 *
 *   deno run --allow-ffi=<shim> --allow-read=<dev> --allow-write=<dev> cli/main.ts <command> [options]
 *
 * Commands (one module each under `cli/commands/`): `info`, `hw-info <cdev>`, `probe <cdev>`, `replay <trace>`,
 * `serve`, and the broker clients `bind-pasid`, `invalidate`, `unbind-pasid`. Each parses its own options, answers
 * `--help` with them and refuses any other in one line; `--json` gives machine output. A device node is opened only
 * when Deno's permissions grant read and write for that exact path (`cli/grants.ts`, checked before the shim is
 * called). Once FFI is granted this is the library's own discipline, not a sandbox: the broker (`serve`) is the real
 * boundary — its clients need no FFI at all.
 *
 * @module
 */
import { type Command, PROGRAM } from "./args.ts";
import { info } from "./commands/info.ts";
import { hwInfo, probe } from "./commands/hw_info.ts";
import { replay } from "./commands/replay.ts";
import { serve } from "./commands/serve.ts";
import { bindPasid, invalidate, unbindPasid } from "./commands/broker_clients.ts";

/** Every command, in the order the help lists them. */
export const COMMANDS: readonly Command[] = [info, hwInfo, probe, replay, serve, bindPasid, invalidate, unbindPasid];

/** The CLI's own `--help`: what it is and the command list. */
export const HELP: string = `iommu-relay — relay guest IOMMU work to the host through iommufd

usage: ${PROGRAM} <command> [options]
       ${PROGRAM} <command> --help       the command's own options
       ${PROGRAM} help <command>

commands:
${COMMANDS.map((c) => `  ${c.synopsis.padEnd(18)}${c.summary}`).join("\n")}

Most commands take --json (machine output); those that load the shim take --shim <path> (a prebuilt shim; default
$IOMMU_RELAY_SHIM or the cache).`;

/**
 * Dispatch `args` (the process's arguments) on the first positional, the command's name; options written before it
 * are passed to the command as well. Resolves to the exit code: the command's, 0 for `--help` / `help`, 2 with no
 * command or an unknown one.
 */
export async function main(args: string[]): Promise<number> {
  const at = args.findIndex((a) => !a.startsWith("-"));
  const name = at < 0 ? undefined : args[at];
  const rest = at < 0 ? args : [...args.slice(0, at), ...args.slice(at + 1)];
  const wantsHelp = rest.includes("--help") || rest.includes("-h");
  if (name === undefined || name === "help") {
    const topic = name === "help" ? COMMANDS.find((c) => c.name === rest.find((a) => !a.startsWith("-"))) : undefined;
    console.log(topic?.help ?? HELP);
    if (name === undefined && !wantsHelp) {
      console.error("error: a command is required");
      return 2;
    }
    return 0;
  }
  const command = COMMANDS.find((c) => c.name === name);
  if (!command) {
    console.error(`error: unknown command '${name}'\n${HELP}`);
    return 2;
  }
  return await command.run(rest);
}

if (import.meta.main) {
  const code = await main(Deno.args);
  if (code !== 0) Deno.exit(code);
}
