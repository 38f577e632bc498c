/**
 * `info`: which iommufd / VFIO nodes this process may open, and what the kernel offers.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { NativeShim, ShimRefusedError } from "../../ffi/native.ts";
import { detectFeatures } from "../../lib/kernel/features.ts";
import { describeHost, type HostDescription, Iommufd, KernelError } from "../../lib/kernel/mod.ts";
import { type Command, guarded, output, parseCommand, PROGRAM } from "../args.ts";
import { granted } from "../grants.ts";

const HELP = `usage: ${PROGRAM} info [--iommu /dev/iommu] [--cdev <path>]... [--shim <path>] [--json]

Opens only the paths this process was granted read and write for; reports each path and the kernel's features.
With --allow-read=/sys,/dev/vfio it also lists the VFIO cdevs with their PCI function, driver, IOMMU group and IOMMU,
the VFIO group nodes and the IOMMUs (read through the shim: Deno's own file APIs would need -A for /sys).

options:
  --iommu <path>   the iommufd node (default /dev/iommu)
  --cdev <path>    a VFIO cdev to try as well (repeatable)
  --shim <path>    a prebuilt shim (default $IOMMU_RELAY_SHIM or the cache)
  --json           machine output
  -h, --help       this text`;

function parse(args: string[]) {
  return parseCommand("info", () =>
    parseArgs({
      args,
      strict: true,
      allowPositionals: false,
      options: {
        help: { type: "boolean", short: "h", default: false },
        json: { type: "boolean", default: false },
        shim: { type: "string" },
        iommu: { type: "string", default: "/dev/iommu" },
        cdev: { type: "string", multiple: true, default: [] },
      },
    }).values);
}

/**
 * Run `info` with the arguments after the command's name; resolves to the exit code (0, or 2 for refused arguments).
 * Each path is reported as `present`, `unavailable (ERRNO)`, `refused (...)` or `not granted`.
 */
export function run(args: string[]): Promise<number> {
  return guarded(async () => {
    const values = parse(args);
    if (values.help) return console.log(HELP);
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
      using s = await NativeShim.load(values.shim);
      report.host = describeHost(s);
    } else report.host = "not granted (--allow-read=/sys,/dev/vfio lists cdevs, drivers, groups and IOMMUs)";
    if (allowed.length) {
      using s = await NativeShim.load(values.shim);
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
    output(values.json, Object.entries(report).map(([k, v]) => human(k, v)).join("\n"), report);
  });
}

/** `info` as the command list shows it. */
export const info: Command = {
  name: "info",
  synopsis: "info",
  summary: "which iommufd / VFIO nodes this process may open, and what the kernel offers",
  help: HELP,
  run,
};
