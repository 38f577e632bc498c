/**
 * `serve`: the broker. This process holds the relay (and on a kernel host the FFI and the device fds) and serves VMM
 * clients on Unix sockets; they need no FFI at all.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { NativeShim } from "../../ffi/native.ts";
import { Broker, type BrokerLimits, type ListenerScope } from "../../lib/broker/server.ts";
import { type DeviceSource, RelayHost, type RelayPlugin, relayPlugin } from "../../lib/plugin/plugin.ts";
import { CliError, type Command, guarded, number, parseCommand, PROGRAM } from "../args.ts";
import { requireGrant } from "../grants.ts";

const HELP =
  `usage: ${PROGRAM} serve (--socket <path> | --listen PATH:DOMAINS:DEVICES[:MODE]...) [--in-process] [--iommu /dev/iommu]
       [--iommufd-fd N] [--device NAME=DOMAIN:KIND]... [--max-connections N] [--max-devices N] [--max-pending N]
       [--handshake-ms N] [--idle-ms N] [--stall-ms N] [--shim <path>]

Privilege separation: this process holds the FFI and the device fds; a VMM's plugin talks to it over the socket
(2017-format invalidation records, see lib/broker/protocol.ts) and needs no FFI permission. --in-process serves
iommu-relay's in-process host instead of the kernel. --device creates a named device the broker owns until it stops,
which bind-pasid / invalidate / unbind-pasid (any process) address by name; KIND is \`model\` (with --in-process),
\`mock\` (the kernel's selftest mock), a VFIO cdev path (granted read and write), or \`fd:M\`: a VFIO cdev the parent
handed in open as fd M. --iommufd-fd N takes the iommufd the parent opened as fd N (as QEMU's
\`-object iommufd,fd=N\`), so a sandboxed broker opens no device path at all; the shim checks each with fstat.

--socket serves every guest domain no named device is in, and every named device. --listen gives one socket per VMM:
DOMAINS is what its clients may attach devices in (\`1,2,5-7\`, or \`-\` for none), DEVICES the named devices they
may open (\`gpu,nic\`, or \`-\`), MODE the socket's file mode (octal, default 0600): the OS-level ACL. A guest domain
belongs to one connection at a time. Caps (typed errors to the client): connections (default 64), devices per
connection (16), invalidations pending per connection before a SYNC (4096). A connection is closed when its first
frame takes over --handshake-ms (10000), when it holds no device and sends nothing for --idle-ms (60000), or when it
does not read its answers for --stall-ms (10000). SIGUSR1 prints the broker's counters, heap and fd count as one JSON
line (after a GC when run with --v8-flags=--expose-gc). Stops on SIGINT/SIGTERM.

options:
  --socket <path>            one socket serving everything
  --listen P:DOMS:DEVS[:M]   one socket per VMM (repeatable)
  --in-process               the in-process host instead of the kernel
  --iommu <path>             the iommufd node (default /dev/iommu); granted read and write, exactly
  --iommufd-fd N             an iommufd the parent opened as fd N
  --device NAME=DOMAIN:KIND  a named device the broker holds (repeatable)
  --max-connections N, --max-devices N, --max-pending N, --handshake-ms N, --idle-ms N, --stall-ms N
                             the caps and timeouts above
  --shim <path>              a prebuilt shim (default $IOMMU_RELAY_SHIM or the cache)
  -h, --help                 this text`;

const LIMITS = {
  "max-connections": "maxConnections",
  "max-devices": "maxDevicesPerConnection",
  "max-pending": "maxPendingPerConnection",
  "handshake-ms": "handshakeMs",
  "idle-ms": "idleMs",
  "stall-ms": "stallMs",
} as const;

function parse(args: string[]) {
  return parseCommand("serve", () =>
    parseArgs({
      args,
      strict: true,
      allowPositionals: false,
      options: {
        help: { type: "boolean", short: "h", default: false },
        shim: { type: "string" },
        iommu: { type: "string", default: "/dev/iommu" },
        socket: { type: "string" },
        listen: { type: "string", multiple: true, default: [] },
        "in-process": { type: "boolean", default: false },
        "iommufd-fd": { type: "string" },
        device: { type: "string", multiple: true, default: [] },
        "max-connections": { type: "string" },
        "max-devices": { type: "string" },
        "max-pending": { type: "string" },
        "handshake-ms": { type: "string" },
        "idle-ms": { type: "string" },
        "stall-ms": { type: "string" },
      },
    }).values);
}

type Values = ReturnType<typeof parse>;

/** A socket `serve` listens on, with what its clients may reach. */
interface Listen {
  path: string;
  scope: Required<ListenerScope>;
  mode?: number;
}

/** The sockets `serve` listens on: `--socket` (everything) or each `--listen PATH:DOMAINS:DEVICES[:MODE]`. */
function listenArgs(values: Values): Listen[] {
  const out: Listen[] = [];
  if (values.socket) out.push({ path: values.socket, scope: { domains: "any", devices: "all" } });
  for (const spec of values.listen) {
    const m = /^(\/[^:\0]+):([0-9,-]+|-):([A-Za-z0-9_.,-]+|-)(?::([0-7]{3,4}))?$/.exec(spec);
    if (!m) throw new CliError(`--listen takes PATH:DOMAINS:DEVICES[:MODE], not '${spec}'\n${HELP}`, 2);
    const [, path, domainList, deviceList, mode] = m;
    const domains = new Set<number>();
    if (domainList !== "-") {
      for (const part of domainList.split(",")) {
        const r = /^([0-9]+)(?:-([0-9]+))?$/.exec(part);
        if (!r) throw new CliError(`--listen ${path}: '${part}' is not a domain or a range of domains`, 2);
        const first = number(r[1], "--listen domain"), last = number(r[2] ?? r[1], "--listen domain");
        if (last < first || last - first >= 65_536) throw new CliError(`--listen ${path}: bad range '${part}'`, 2);
        for (let d = first; d <= last; d++) domains.add(d);
      }
    }
    const devices = deviceList === "-" ? [] : deviceList.split(",");
    out.push({ path, scope: { domains, devices }, mode: Number.parseInt(mode ?? "600", 8) });
  }
  if (!out.length) throw new CliError(`serve needs --socket <path> or --listen\n${HELP}`, 2);
  if (new Set(out.map((l) => l.path)).size !== out.length) throw new CliError("serve: a socket given twice", 2);
  return out;
}

/** The broker's caps and timeouts given on the command line (each at least 1). */
function limitArgs(values: Values): BrokerLimits {
  const limits: Record<string, number> = {};
  for (const [flag, key] of Object.entries(LIMITS)) {
    const v = values[flag as keyof typeof LIMITS];
    if (typeof v !== "string") continue;
    const x = number(v, `--${flag}`);
    if (x < 1) throw new CliError(`--${flag} must be at least 1`, 2);
    limits[key] = x;
  }
  return limits as BrokerLimits;
}

/**
 * Run `serve`: open the host (the kernel through the shim, an iommufd handed in as a fd, or the in-process host),
 * create the named devices, listen, and serve until SIGINT/SIGTERM. Resolves to the exit code once stopped (0), or
 * at once for refused arguments (2) or a host that cannot be opened (1).
 */
export function run(args: string[]): Promise<number> {
  return guarded(async () => {
    const values = parse(args);
    if (values.help) return console.log(HELP);
    const listens = listenArgs(values);
    const limits = limitArgs(values);
    let host: RelayHost;
    let s: NativeShim | undefined;
    const iommufdFd = values["iommufd-fd"] === undefined ? undefined : number(values["iommufd-fd"], "--iommufd-fd");
    if (values["in-process"]) host = RelayHost.inProcess();
    else if (iommufdFd !== undefined) {
      // Handed in by the parent, already open: no device path is opened (or needs a grant).
      s = await NativeShim.load(values.shim);
      try {
        host = RelayHost.kernel(s, { fd: iommufdFd });
      } catch (e) {
        s[Symbol.dispose]();
        throw e;
      }
    } else {
      await requireGrant(values.iommu);
      s = await NativeShim.load(values.shim);
      host = RelayHost.kernel(s, { path: values.iommu });
    }
    const named = new Map<string, RelayPlugin>();
    const listeners: Deno.Listener[] = [];
    const release = () => {
      for (const l of listeners) {
        try {
          l.close();
        } catch { /* closed */ }
      }
      for (const p of named.values()) p[Symbol.dispose]();
      host[Symbol.dispose]();
      s?.[Symbol.dispose]();
    };
    try {
      for (const spec of values.device) {
        const m = /^([A-Za-z0-9_.-]{1,64})=([0-9]+):(.+)$/.exec(spec);
        if (!m) throw new CliError(`--device takes NAME=DOMAIN:KIND, not '${spec}'\n${HELP}`, 2);
        const [, name, domain, kind] = m;
        if (named.has(name)) throw new CliError(`--device ${name} given twice`, 2);
        let device: DeviceSource;
        if (kind === "model") device = { kind: "model" };
        else if (kind === "mock") device = { kind: "mock", pasid: true };
        else if (kind.startsWith("fd:")) device = { kind: "vfio-fd", fd: number(kind.slice(3), "--device fd") };
        else {
          await requireGrant(kind);
          device = { kind: "vfio", path: kind };
        }
        named.set(name, relayPlugin.create(host, { domain: number(domain, "--device domain"), device }));
      }
      for (const l of listens) {
        const unknown = l.scope.devices === "all" ? [] : [...l.scope.devices].filter((n) => !named.has(n));
        if (unknown.length) throw new CliError(`--listen ${l.path}: no --device named ${unknown.join(", ")}`, 2);
        try {
          await Deno.remove(l.path);
        } catch { /* no stale socket */ }
        const listener = Deno.listen({ transport: "unix", path: l.path });
        listeners.push(listener);
        // Created with the process's umask; narrowed before the first accept().
        if (l.mode !== undefined) await Deno.chmod(l.path, l.mode);
      }
    } catch (e) {
      release();
      throw e;
    }
    const broker = new Broker(host, { named, limits });
    const stop = () => {
      for (const l of listeners) {
        try {
          l.close();
        } catch { /* closed */ }
      }
    };
    Deno.addSignalListener("SIGTERM", stop);
    Deno.addSignalListener("SIGINT", stop);
    const report = () => {
      (globalThis as { gc?: () => void }).gc?.();
      let fds = -1;
      try {
        fds = [...Deno.readDirSync(`/proc/${Deno.pid}/fd`)].length;
      } catch { /* not granted: -1 */ }
      console.log(`stats ${JSON.stringify({ ...broker.stats, heapUsed: Deno.memoryUsage().heapUsed, fds })}`);
    };
    Deno.addSignalListener("SIGUSR1", report);
    for (const l of listens) console.log(`listening on ${l.path}`);
    if (named.size) console.log(`devices: ${[...named.keys()].join(", ")}`);
    await Promise.all(listeners.map((listener, i) => broker.serve(listener, listens[i].scope)));
    Deno.removeSignalListener("SIGUSR1", report);
    release();
    const stats = broker.stats;
    console.log(`broker: ${stats.connections} connections, ${stats.frames} frames, ${stats.errors} refused`);
  });
}

/** `serve` as the command list shows it. */
export const serve: Command = {
  name: "serve",
  synopsis: "serve",
  summary: "the broker: hold the relay (and the device fds) and serve VMM clients on a Unix socket",
  help: HELP,
  run,
};
