/**
 * iommu-relay's host CLI.
 *
 *   deno run --allow-ffi=<shim> --allow-read=<dev> --allow-write=<dev> cli.ts <command> [options]
 *
 * Commands: `info`, `hw-info <cdev>`, `probe <cdev>`, `replay <trace>`, `serve`, and the broker clients
 * `bind-pasid`, `invalidate`, `unbind-pasid`; `--help` on each; `--json` for machine output. A device node is opened only when Deno's permissions grant read and write for that exact path
 * (checked with `Deno.permissions` before the shim is called). Once FFI is granted this is the library's own
 * discipline, not a sandbox: the broker (`serve`) is the real boundary — its clients need no FFI at all.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { NativeShim, ShimRefusedError } from "./ffi/native.ts";
import { decodeCapabilities } from "./lib/device/capabilities.ts";
import { detectFeatures } from "./lib/kernel/features.ts";
import { describeHost, type HostDescription, Iommufd, KernelError } from "./lib/kernel/mod.ts";
import { VfioDevice } from "./lib/kernel/vfio.ts";
import { UnsupportedError } from "./lib/kernel/errors.ts";
import { RequestError, validateRequest } from "./lib/request/request.ts";
import type { BindRequest, InvalidateRequest, PasidOrRid, Request, StageOneTable } from "./lib/request/request.ts";
import { BrokerClient, BrokerError, type RemoteDevice } from "./lib/broker/client.ts";
import { RelayQueue } from "./lib/relay/queue.ts";
import { ModelHost } from "./lib/host/model.ts";
import { type DeviceSource, RelayHost, type RelayPlugin, relayPlugin } from "./lib/plugin/plugin.ts";
import { Broker, type BrokerLimits, type ListenerScope } from "./lib/broker/server.ts";
import { errnoName, HwptAllocFlags, HwptDataType, IommuHwptVtdS1, UapiError } from "./lib/uapi/mod.ts";

const HELP: Record<string, string> = {
  "": `iommu-relay — relay guest IOMMU work to the host through iommufd

usage: cli.ts <command> [options]

commands:
  info              which iommufd / VFIO nodes this process may open, and what the kernel offers
  hw-info <cdev>    a VFIO device's IOMMU, decoded (VT-d CAP/ECAP, SMMUv3 IDRs, PASID width)
  probe <cdev>      nesting support and the invalidation data types the kernel accepts
  replay <trace>    run a recorded guest request trace (JSON lines) through the relay on the in-process host
  serve             the broker: hold the relay (and the device fds) and serve VMM clients on a Unix socket
  bind-pasid        bind a stage-1 table to a PASID (or the RID) of a device the broker holds
  invalidate        relay one invalidation to a device the broker holds and wait for it
  unbind-pasid      unbind a PASID (or the RID) of a device the broker holds

options: --json (machine output), --shim <path> (prebuilt shim; default $IOMMU_RELAY_SHIM or the cache), --help`,
  info: `usage: cli.ts info [--iommu /dev/iommu] [--cdev <path>]... [--json]

Opens only the paths this process was granted read and write for; reports each path and the kernel's features.
With --allow-read=/sys,/dev/vfio it also lists the VFIO cdevs with their PCI function, driver, IOMMU group and IOMMU,
the VFIO group nodes and the IOMMUs (read through the shim: Deno's own file APIs would need -A for /sys).`,
  "hw-info": `usage: cli.ts hw-info <cdev> [--iommu /dev/iommu] [--json]

Binds the VFIO cdev to a fresh iommufd and prints IOMMU_GET_HW_INFO decoded.`,
  probe: `usage: cli.ts probe <cdev> [--iommu /dev/iommu] [--json]

Tries a nesting-parent HWPT and a nested VT-d stage-1 HWPT (never attached) and the zero-entry invalidation probe.`,
  serve:
    `usage: cli.ts serve (--socket <path> | --listen PATH:DOMAINS:DEVICES[:MODE]...) [--in-process] [--iommu /dev/iommu]
       [--iommufd-fd N] [--device NAME=DOMAIN:KIND]... [--max-connections N] [--max-devices N] [--max-pending N]
       [--handshake-ms N] [--idle-ms N] [--stall-ms N]

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
line (after a GC when run with --v8-flags=--expose-gc). Stops on SIGINT/SIGTERM.`,
  "bind-pasid": `usage: cli.ts bind-pasid --socket <path> --device NAME --pasid N|rid --table FORMAT:VALUE [--json]

FORMAT:VALUE is vtd-s1:<table address>[:48|57] or selftest:<IOTLB value>. The binding lives in the broker, so it
outlives this command; the client needs only the socket (--allow-read/--allow-write of it, --allow-net=unix:<path>).`,
  invalidate:
    `usage: cli.ts invalidate --socket <path> --device NAME [--pasid N|rid] [--range ADDR+BYTES] [--leaf] [--json]

Without --pasid and --range: everything of the device's domain. --range widens to whole 4 KiB pages (never narrows).
Sends the 2017 wire record and a sync; prints whether the host completed it and how many ioctls that took.`,
  "unbind-pasid": `usage: cli.ts unbind-pasid --socket <path> --device NAME --pasid N|rid [--json]`,
  replay: `usage: cli.ts replay <trace.jsonl> [--domain-binding D:P:format]... [--json]

Each line of the trace is a request ({"op":"invalidate",...} / {"op":"sync"}); bindings map (domain, PASID or rid)
to a host target of the in-process host. Prints host ioctls, entries and wait outcomes.`,
};

class CliError extends Error {
  constructor(message: string, readonly code = 1) {
    super(message);
  }
}

const { values, positionals } = parseArgs({
  args: Deno.args,
  allowPositionals: true,
  options: {
    help: { type: "boolean", short: "h", default: false },
    json: { type: "boolean", default: false },
    shim: { type: "string" },
    iommu: { type: "string", default: "/dev/iommu" },
    cdev: { type: "string", multiple: true, default: [] },
    "domain-binding": { type: "string", multiple: true, default: [] },
    socket: { type: "string" },
    "in-process": { type: "boolean", default: false },
    device: { type: "string", multiple: true, default: [] },
    pasid: { type: "string" },
    range: { type: "string" },
    table: { type: "string" },
    leaf: { type: "boolean", default: false },
    listen: { type: "string", multiple: true, default: [] },
    "iommufd-fd": { type: "string" },
    "max-connections": { type: "string" },
    "max-devices": { type: "string" },
    "max-pending": { type: "string" },
    "handshake-ms": { type: "string" },
    "idle-ms": { type: "string" },
    "stall-ms": { type: "string" },
  },
});
const [command = "", ...rest] = positionals;

const jsonReplacer = (_: string, v: unknown) =>
  typeof v === "bigint" ? `0x${v.toString(16)}` : v instanceof Uint8Array ? [...v] : v;
function out(human: string, data: unknown): void {
  console.log(values.json ? JSON.stringify(data, jsonReplacer) : human);
}

/**
 * Refuse a device path unless read and write are granted for exactly it — before the shim is touched. Deno counts a
 * grant on a folder (or a bare --allow-read) as a grant on everything under it; that is not a grant on a device
 * node here: a path counts only if a sibling name next to it is not granted too. A symlink is refused as well
 * (its target is not what was granted); the shim refuses one again, whatever this check says.
 */
async function granted(path: string): Promise<boolean> {
  if (!path.startsWith("/") || path.endsWith("/") || path.includes("\0")) return false;
  const sibling = `${path}.iommu-relay-grant-probe`;
  for (const name of ["read", "write"] as const) {
    if ((await Deno.permissions.query({ name, path })).state !== "granted") return false;
    if ((await Deno.permissions.query({ name, path: sibling })).state === "granted") return false;
  }
  try {
    if (Deno.lstatSync(path).isSymlink) return false;
  } catch {
    // Missing (the shim reports ENOENT), or a node Deno will not stat without -A: the shim's lstat decides.
  }
  return true;
}

async function requireGrant(path: string): Promise<void> {
  if (!(await granted(path))) {
    throw new CliError(
      `not granted: ${path} (run with --allow-read=${path} --allow-write=${path}: that exact path, not a folder ` +
        `holding it nor a symlink to it)`,
      2,
    );
  }
}

/** A number as written on a command line: decimal or 0x hex, a safe non-negative integer. */
function number(text: string, what: string): number {
  const n = /^(0x[0-9a-f]+|[0-9]+)$/i.test(text) ? Number(text) : NaN;
  if (!Number.isSafeInteger(n)) throw new CliError(`${what}: '${text}' is not a non-negative integer`, 2);
  return n;
}

function pasidArg(required: boolean): PasidOrRid | undefined {
  const p = values.pasid;
  if (p === undefined) {
    if (required) throw new CliError(`${command} needs --pasid N|rid\n${HELP[command]}`, 2);
    return undefined;
  }
  return p === "rid" ? "rid" : number(p, "--pasid");
}

function tableArg(): StageOneTable {
  const [format, value, width] = (values.table ?? "").split(":");
  if (format === "vtd-s1" && value) {
    const w = width === undefined ? 48 : Number(width);
    if (w !== 48 && w !== 57) throw new CliError(`--table: address width ${width} is not 48 or 57`, 2);
    return { format, tableAddress: number(value, "--table address"), addressWidth: w };
  }
  if (format === "selftest" && value && width === undefined) return { format, iotlb: number(value, "--table IOTLB") };
  throw new CliError(`--table takes vtd-s1:<address>[:48|57] or selftest:<value>\n${HELP["bind-pasid"]}`, 2);
}

/** Connect to the broker and open the named device (the client side needs no FFI). */
async function openRemote(): Promise<{ client: BrokerClient; device: RemoteDevice; name: string }> {
  const path = values.socket, name = values.device[0];
  if (!path || !name || values.device.length !== 1) {
    throw new CliError(`${command} needs --socket <path> and one --device NAME\n${HELP[command]}`, 2);
  }
  const client = await BrokerClient.connect(path).catch((e) => {
    throw new CliError(`cannot reach the broker at ${path}: ${e instanceof Error ? e.message : e}`);
  });
  try {
    return { client, device: await client.open(name), name };
  } catch (e) {
    await client[Symbol.asyncDispose]();
    throw e;
  }
}

/** The sockets `serve` listens on: `--socket` (everything) or each `--listen PATH:DOMAINS:DEVICES[:MODE]`. */
function listenArgs(): { path: string; scope: Required<ListenerScope>; mode?: number }[] {
  const out: { path: string; scope: Required<ListenerScope>; mode?: number }[] = [];
  if (values.socket) out.push({ path: values.socket, scope: { domains: "any", devices: "all" } });
  for (const spec of values.listen) {
    const m = /^(\/[^:\0]+):([0-9,-]+|-):([A-Za-z0-9_.,-]+|-)(?::([0-7]{3,4}))?$/.exec(spec);
    if (!m) throw new CliError(`--listen takes PATH:DOMAINS:DEVICES[:MODE], not '${spec}'\n${HELP.serve}`, 2);
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
  if (!out.length) throw new CliError(`serve needs --socket <path> or --listen\n${HELP.serve}`, 2);
  if (new Set(out.map((l) => l.path)).size !== out.length) throw new CliError("serve: a socket given twice", 2);
  return out;
}

function limitArgs(): BrokerLimits {
  const n = (flag: keyof typeof values) => {
    const v = values[flag];
    if (typeof v !== "string") return undefined;
    const x = number(v, `--${flag}`);
    if (x < 1) throw new CliError(`--${flag} must be at least 1`, 2);
    return x;
  };
  const limits: Record<string, number | undefined> = {
    maxConnections: n("max-connections"),
    maxDevicesPerConnection: n("max-devices"),
    maxPendingPerConnection: n("max-pending"),
    handshakeMs: n("handshake-ms"),
    idleMs: n("idle-ms"),
    stallMs: n("stall-ms"),
  };
  return Object.fromEntries(Object.entries(limits).filter(([, v]) => v !== undefined)) as BrokerLimits;
}

async function shim(): Promise<NativeShim> {
  return await NativeShim.load(values.shim);
}

async function main(): Promise<void> {
  if (values.help || command === "" || command === "help") {
    console.log(HELP[command === "help" ? rest[0] ?? "" : command] ?? HELP[""]);
    if (command === "" && !values.help) throw new CliError("a command is required", 2);
    return;
  }
  switch (command) {
    case "info": {
      const paths = [values.iommu, ...values.cdev];
      const report: Record<string, unknown> = {};
      const allowed: string[] = [];
      for (const p of paths) {
        if (await granted(p)) allowed.push(p);
        else report[p] = "not granted";
      }
      const sysfs = (await Deno.permissions.query({ name: "read", path: "/sys" })).state === "granted" &&
        (await Deno.permissions.query({ name: "read", path: "/dev/vfio" })).state === "granted";
      if (sysfs) {
        using s = await shim();
        report.host = describeHost(s);
      } else report.host = "not granted (--allow-read=/sys,/dev/vfio lists cdevs, drivers, groups and IOMMUs)";
      if (allowed.length) {
        using s = await shim();
        for (const p of allowed) {
          let fd: number;
          try {
            fd = s.open(p);
          } catch (e) {
            if (!(e instanceof ShimRefusedError)) throw e;
            report[p] = `refused (${e.errnoName}: not a device node a relay opens)`;
            continue;
          }
          report[p] = fd >= 0 ? "present" : `unavailable (${new KernelError(fd, "open", "open").errnoName})`;
          if (fd >= 0 && p === values.iommu) {
            using iommufd = Iommufd.open(s, p);
            const f = detectFeatures(iommufd);
            report.features = f.present;
          }
          if (fd >= 0) s.close(fd);
        }
      }
      const human = (k: string, v: unknown) => {
        if (k !== "host" || typeof v === "string") return `${k}: ${typeof v === "string" ? v : JSON.stringify(v)}`;
        const h = v as HostDescription;
        const cdevs = h.cdevs.map((c) =>
          `  ${c.cdev}: ${c.pci ?? "?"} [${c.vendor ?? "?"}:${c.device ?? "?"}] driver ${c.driver ?? "none"}, ` +
          `IOMMU group ${c.iommuGroup ?? "none"}, IOMMU ${c.iommu ?? "none"}` +
          (c.unreadable.length ? ` (unreadable: ${c.unreadable.join("; ")})` : "")
        );
        return [
          `VFIO cdevs: ${h.cdevs.length || "none"}`,
          ...cdevs,
          `VFIO group nodes: ${h.groups.join(", ") || "none"}`,
          `IOMMUs: ${h.iommus.join(", ") || "none"}`,
        ].join("\n");
      };
      out(Object.entries(report).map(([k, v]) => human(k, v)).join("\n"), report);
      return;
    }
    case "hw-info":
    case "probe": {
      const cdev = rest[0];
      if (!cdev) throw new CliError(`${command} needs a VFIO cdev path\n${HELP[command]}`, 2);
      await requireGrant(values.iommu);
      await requireGrant(cdev);
      using s = await shim();
      using iommufd = Iommufd.open(s, values.iommu);
      using dev = VfioDevice.open(s, cdev);
      const devId = dev.bind(iommufd);
      const caps = decodeCapabilities(iommufd.getHwInfo(devId));
      if (command === "hw-info") {
        // What the capability registers promise; `probe` asks the kernel for a nesting parent to be sure.
        const mode = caps.iommu.kind === "vtd" ? (caps.iommu.nest ? "nested" : "shadow") : "nested";
        out(
          `${cdev}: ${caps.iommu.kind} IOMMU, PASID bits ${caps.maxPasidLog2}, relay mode ${mode}` +
            `${mode === "shadow" ? " (no ecap.NEST: the guest's table is shadowed into an IOAS)" : ""}\n${
              JSON.stringify(caps.iommu, jsonReplacer, 2)
            }`,
          { ...caps, mode },
        );
        return;
      }
      using ioas = iommufd.allocIoas();
      dev.attach(ioas.id);
      // Detach before the IOAS is destroyed (a device attached to it keeps it busy).
      using _attached = { [Symbol.dispose]: () => dev.detach() };
      const result: Record<string, string> = {};
      try {
        using parent = iommufd.allocHwpt({
          devId,
          ptId: ioas.id,
          flags: HwptAllocFlags.values.IOMMU_HWPT_ALLOC_NEST_PARENT,
        });
        result.nesting = "supported";
        const data = IommuHwptVtdS1.buffer().setU64("pgtbl_addr", 0).set("addr_width", 48);
        try {
          using nested = iommufd.allocHwpt({
            devId,
            ptId: parent.id,
            data: { type: HwptDataType.values.IOMMU_HWPT_DATA_VTD_S1, bytes: data.bytes },
          });
          const r = nested.invalidateRaw(0, new Uint8Array(0), 24, 0);
          result["vtd-s1"] = r === 0 ? "accepted" : `refused (errno ${-r})`;
        } catch (e) {
          result["vtd-s1"] = e instanceof KernelError ? `not offered (${e.errnoName})` : String(e);
        }
      } catch (e) {
        if (!(e instanceof KernelError)) throw e;
        result.nesting = `unsupported (${e.errnoName}: the IOMMU offers no nesting parent)`;
      }
      result.mode = result.nesting === "supported" ? "nested" : "shadow";
      out(Object.entries(result).map(([k, v]) => `${k}: ${v}`).join("\n"), result);
      return;
    }
    case "replay": {
      const file = rest[0];
      if (!file) throw new CliError(`replay needs a trace file\n${HELP.replay}`, 2);
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
      out(
        `${summary.requests} requests: ${summary.ioctls} host ioctls, ${summary.entries} entries, ${summary.waits} waits (${summary.failedWaits} failed)`,
        summary,
      );
      return;
    }
    case "bind-pasid":
    case "unbind-pasid":
    case "invalidate": {
      const pasid = pasidArg(command !== "invalidate");
      const table = command === "bind-pasid" ? tableArg() : undefined;
      let scope: InvalidateRequest["scope"] = { kind: "all" };
      if (values.range !== undefined) {
        const m = /^([^+]+)\+(.+)$/.exec(values.range);
        if (!m) throw new CliError(`--range takes ADDR+BYTES\n${HELP.invalidate}`, 2);
        const start = number(m[1], "--range address"), bytes = number(m[2], "--range size");
        if (bytes === 0) throw new CliError("--range: an empty range invalidates nothing", 2);
        const firstPage = Math.floor(start / 4096);
        const pages = Math.ceil((start + bytes) / 4096) - firstPage;
        scope = typeof pasid === "number"
          ? { kind: "pasid-range", pasid, firstPage, pages }
          : { kind: "range", firstPage, pages };
      } else if (typeof pasid === "number") scope = { kind: "pasid", pasid };
      const { client, device, name } = await openRemote();
      await using _client = client;
      const base = { device: name, domain: device.domain };
      if (command === "bind-pasid") {
        await device.bind(
          validateRequest({ op: "bind", domain: device.domain, pasid: pasid!, table: table! }) as BindRequest,
        );
        out(`${name}: PASID ${pasid} bound to ${values.table}`, { ...base, pasid, table });
      } else if (command === "unbind-pasid") {
        await device.unbind(pasid!);
        out(`${name}: PASID ${pasid} unbound`, { ...base, pasid });
      } else {
        const request = validateRequest({
          op: "invalidate",
          domain: device.domain,
          scope,
          ...(pasid === "rid" ? { noPasid: true } : {}),
          ...(values.leaf ? { leaf: true } : {}),
        }) as InvalidateRequest;
        await device.invalidate(request);
        const r = await device.sync();
        out(
          `${name}: ${r.ok ? "completed" : `failed (${r.failures} failures)`} in ${r.hostIoctls} host ioctl(s)`,
          { ...base, scope, ok: r.ok, failures: r.failures, hostIoctls: r.hostIoctls },
        );
        if (!r.ok) throw new CliError("the host did not complete the invalidation");
      }
      return;
    }
    case "serve": {
      const listens = listenArgs();
      let host: RelayHost;
      let s: NativeShim | undefined;
      const iommufdFd = values["iommufd-fd"] === undefined ? undefined : number(values["iommufd-fd"], "--iommufd-fd");
      if (values["in-process"]) host = RelayHost.inProcess();
      else if (iommufdFd !== undefined) {
        // Handed in by the parent, already open: no device path is opened (or needs a grant).
        s = await shim();
        try {
          host = RelayHost.kernel(s, { fd: iommufdFd });
        } catch (e) {
          s[Symbol.dispose]();
          throw e;
        }
      } else {
        await requireGrant(values.iommu);
        s = await shim();
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
          if (!m) throw new CliError(`--device takes NAME=DOMAIN:KIND, not '${spec}'\n${HELP.serve}`, 2);
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
      const broker = new Broker(host, { named, limits: limitArgs() });
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
      return;
    }
    default:
      throw new CliError(`unknown command '${command}'\n${HELP[""]}`, 2);
  }
}

try {
  await main();
} catch (e) {
  const known = e instanceof CliError || e instanceof KernelError || e instanceof UnsupportedError ||
    e instanceof UapiError || e instanceof BrokerError || e instanceof RequestError || e instanceof ShimRefusedError;
  const errno = e instanceof BrokerError ? ` (${errnoName(-e.errno)}, errno ${e.errno})` : "";
  console.error(`error: ${known ? e.message : e}${errno}`);
  Deno.exit(e instanceof CliError ? e.code : 1);
}
