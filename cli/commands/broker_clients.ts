/**
 * The broker's clients: `bind-pasid`, `invalidate` and `unbind-pasid` act on a device a broker (`serve --device`)
 * holds, by name, over its socket. They need no FFI and no device node: only the socket.
 *
 * @module
 */
import { parseArgs, type ParseArgsOptionsConfig } from "node:util";
import { BrokerClient, type RemoteDevice } from "../../lib/broker/client.ts";
import { type BindRequest, type InvalidateRequest, validateRequest } from "../../lib/request/request.ts";
import {
  CliError,
  type Command,
  guarded,
  output,
  parseCommand,
  pasidArg,
  PROGRAM,
  scopeArg,
  tableArg,
} from "../args.ts";

const COMMON = `  --socket <path>   the broker's socket (granted: --allow-read of its folder, --allow-write of it,
                    --allow-net=unix:<path>)
  --device NAME     a device the broker was started with (serve --device NAME=...)
  --json            machine output
  -h, --help        this text`;

const BIND_HELP =
  `usage: ${PROGRAM} bind-pasid --socket <path> --device NAME --pasid N|rid --table FORMAT:VALUE [--json]

FORMAT:VALUE is vtd-s1:<table address>[:48|57] or selftest:<IOTLB value>. The binding lives in the broker, so it
outlives this command; the client needs only the socket (--allow-read/--allow-write of it, --allow-net=unix:<path>).

options:
  --pasid N|rid     the PASID to bind, or the RID
  --table F:V       the stage-1 table
${COMMON}`;

const INVALIDATE_HELP =
  `usage: ${PROGRAM} invalidate --socket <path> --device NAME [--pasid N|rid] [--range ADDR+BYTES] [--leaf] [--json]

Without --pasid and --range: everything of the device's domain. --range widens to whole 4 KiB pages (never narrows).
Sends the 2017 wire record and a sync; prints whether the host completed it and how many ioctls that took.

options:
  --pasid N|rid     one PASID, or the RID only (no-PASID mappings)
  --range A+B       BYTES bytes from address ADDR (decimal or 0x hex)
  --leaf            leaf entries only
${COMMON}`;

const UNBIND_HELP = `usage: ${PROGRAM} unbind-pasid --socket <path> --device NAME --pasid N|rid [--json]

options:
  --pasid N|rid     the PASID to unbind, or the RID
${COMMON}`;

const common = {
  help: { type: "boolean", short: "h", default: false },
  json: { type: "boolean", default: false },
  socket: { type: "string" },
  device: { type: "string", multiple: true, default: [] },
  pasid: { type: "string" },
} satisfies ParseArgsOptionsConfig;

/** Connect to the broker and open the named device (the client side needs no FFI). */
async function openRemote(
  command: string,
  help: string,
  socket: string | undefined,
  devices: string[],
): Promise<{ client: BrokerClient; device: RemoteDevice; name: string }> {
  const name = devices[0];
  if (!socket || !name || devices.length !== 1) {
    throw new CliError(`${command} needs --socket <path> and one --device NAME\n${help}`, 2);
  }
  const client = await BrokerClient.connect(socket).catch((e) => {
    throw new CliError(`cannot reach the broker at ${socket}: ${e instanceof Error ? e.message : e}`);
  });
  try {
    return { client, device: await client.open(name), name };
  } catch (e) {
    await client[Symbol.asyncDispose]();
    throw e;
  }
}

/**
 * Run `bind-pasid`: bind a stage-1 table to a PASID (or the RID) of a named device the broker holds. Resolves to the
 * exit code (2 for refused arguments, 1 for a refusal by the broker).
 */
export function runBindPasid(args: string[]): Promise<number> {
  return guarded(async () => {
    const { values } = parseCommand(
      "bind-pasid",
      () => parseArgs({ args, strict: true, options: { ...common, table: { type: "string" } } }),
    );
    if (values.help) return console.log(BIND_HELP);
    const pasid = pasidArg(values.pasid, true, "bind-pasid", BIND_HELP)!;
    const table = tableArg(values.table, BIND_HELP);
    const { client, device, name } = await openRemote("bind-pasid", BIND_HELP, values.socket, values.device);
    await using _client = client;
    await device.bind(validateRequest({ op: "bind", domain: device.domain, pasid, table }) as BindRequest);
    output(values.json, `${name}: PASID ${pasid} bound to ${values.table}`, {
      device: name,
      domain: device.domain,
      pasid,
      table,
    });
  });
}

/**
 * Run `invalidate`: relay one invalidation to a named device the broker holds, then a sync; resolves to 0 when the
 * host completed it, 1 when it did not (or the broker refused), 2 for refused arguments.
 */
export function runInvalidate(args: string[]): Promise<number> {
  return guarded(async () => {
    const { values } = parseCommand("invalidate", () =>
      parseArgs({
        args,
        strict: true,
        options: { ...common, range: { type: "string" }, leaf: { type: "boolean", default: false } },
      }));
    if (values.help) return console.log(INVALIDATE_HELP);
    const pasid = pasidArg(values.pasid, false, "invalidate", INVALIDATE_HELP);
    const scope = scopeArg(values.range, pasid, INVALIDATE_HELP);
    const { client, device, name } = await openRemote("invalidate", INVALIDATE_HELP, values.socket, values.device);
    await using _client = client;
    const request = validateRequest({
      op: "invalidate",
      domain: device.domain,
      scope,
      ...(pasid === "rid" ? { noPasid: true } : {}),
      ...(values.leaf ? { leaf: true } : {}),
    }) as InvalidateRequest;
    await device.invalidate(request);
    const r = await device.sync();
    output(
      values.json,
      `${name}: ${r.ok ? "completed" : `failed (${r.failures} failures)`} in ${r.hostIoctls} host ioctl(s)`,
      { device: name, domain: device.domain, scope, ok: r.ok, failures: r.failures, hostIoctls: r.hostIoctls },
    );
    if (!r.ok) throw new CliError("the host did not complete the invalidation");
  });
}

/**
 * Run `unbind-pasid`: unbind a PASID (or the RID) of a named device the broker holds. Resolves to the exit code.
 */
export function runUnbindPasid(args: string[]): Promise<number> {
  return guarded(async () => {
    const { values } = parseCommand("unbind-pasid", () => parseArgs({ args, strict: true, options: common }));
    if (values.help) return console.log(UNBIND_HELP);
    const pasid = pasidArg(values.pasid, true, "unbind-pasid", UNBIND_HELP)!;
    const { client, device, name } = await openRemote("unbind-pasid", UNBIND_HELP, values.socket, values.device);
    await using _client = client;
    await device.unbind(pasid);
    output(values.json, `${name}: PASID ${pasid} unbound`, { device: name, domain: device.domain, pasid });
  });
}

/** `bind-pasid` as the command list shows it. */
export const bindPasid: Command = {
  name: "bind-pasid",
  synopsis: "bind-pasid",
  summary: "bind a stage-1 table to a PASID (or the RID) of a device the broker holds",
  help: BIND_HELP,
  run: runBindPasid,
};

/** `invalidate` as the command list shows it. */
export const invalidate: Command = {
  name: "invalidate",
  synopsis: "invalidate",
  summary: "relay one invalidation to a device the broker holds and wait for it",
  help: INVALIDATE_HELP,
  run: runInvalidate,
};

/** `unbind-pasid` as the command list shows it. */
export const unbindPasid: Command = {
  name: "unbind-pasid",
  synopsis: "unbind-pasid",
  summary: "unbind a PASID (or the RID) of a device the broker holds",
  help: UNBIND_HELP,
  run: runUnbindPasid,
};
