/**
 * `hw-info <cdev>` and `probe <cdev>`: a VFIO device's IOMMU as the capability registers describe it, and what the
 * kernel actually accepts (a nesting parent, a nested VT-d stage-1 table, the zero-entry invalidation probe).
 *
 * @module
 */
import { parseArgs } from "node:util";
import { NativeShim } from "../../ffi/native.ts";
import { FORMAT_SPECS } from "../../lib/compile/formats.ts";
import { decodeCapabilities } from "../../lib/device/capabilities.ts";
import { Iommufd, KernelError } from "../../lib/kernel/mod.ts";
import { VfioDevice } from "../../lib/kernel/vfio.ts";
import { HwptAllocFlags, HwptDataType, IommuHwptVtdS1 } from "../../lib/uapi/mod.ts";
import { CliError, type Command, guarded, jsonReplacer, output, parseCommand, PROGRAM } from "../args.ts";
import { requireGrant } from "../grants.ts";

const OPTIONS = `options:
  --iommu <path>   the iommufd node (default /dev/iommu); granted read and write, exactly
  --shim <path>    a prebuilt shim (default $IOMMU_RELAY_SHIM or the cache)
  --json           machine output
  -h, --help       this text`;

const HW_INFO_HELP = `usage: ${PROGRAM} hw-info <cdev> [--iommu /dev/iommu] [--shim <path>] [--json]

Binds the VFIO cdev to a fresh iommufd and prints IOMMU_GET_HW_INFO decoded. <cdev> is granted read and write, exactly.

${OPTIONS}`;

const PROBE_HELP = `usage: ${PROGRAM} probe <cdev> [--iommu /dev/iommu] [--shim <path>] [--json]

Tries a nesting-parent HWPT and a nested VT-d stage-1 HWPT (never attached) and the zero-entry invalidation probe.
<cdev> is granted read and write, exactly.

${OPTIONS}`;

function parse(command: string, args: string[]) {
  return parseCommand(command, () =>
    parseArgs({
      args,
      strict: true,
      allowPositionals: true,
      options: {
        help: { type: "boolean", short: "h", default: false },
        json: { type: "boolean", default: false },
        shim: { type: "string" },
        iommu: { type: "string", default: "/dev/iommu" },
      },
    }));
}

/** Open the iommufd and the cdev (both granted exactly), bind them, and hand the device's capabilities on. */
async function withDevice(
  command: "hw-info" | "probe",
  args: string[],
  help: string,
  body: (
    ctx: { iommufd: Iommufd; dev: VfioDevice; devId: number; cdev: string; json: boolean },
    caps: ReturnType<typeof decodeCapabilities>,
  ) => void,
): Promise<void> {
  const { values, positionals } = parse(command, args);
  if (values.help) return console.log(help);
  const cdev = positionals[0];
  if (!cdev) throw new CliError(`${command} needs a VFIO cdev path\n${help}`, 2);
  if (positionals.length > 1) throw new CliError(`${command}: unexpected argument '${positionals[1]}'`, 2);
  await requireGrant(values.iommu);
  await requireGrant(cdev);
  using s = await NativeShim.load(values.shim);
  using iommufd = Iommufd.open(s, values.iommu);
  using dev = VfioDevice.open(s, cdev);
  const devId = dev.bind(iommufd);
  body({ iommufd, dev, devId, cdev, json: values.json }, decodeCapabilities(iommufd.getHwInfo(devId)));
}

/**
 * Run `hw-info <cdev>`: the device's IOMMU kind, PASID width and capability registers, and the relay mode they
 * promise (`nested`, or `shadow` for a VT-d unit without ecap.NEST). Resolves to the exit code.
 */
export function runHwInfo(args: string[]): Promise<number> {
  return guarded(() =>
    withDevice("hw-info", args, HW_INFO_HELP, ({ cdev, json }, caps) => {
      // What the capability registers promise; `probe` asks the kernel for a nesting parent to be sure.
      const mode = caps.iommu.kind === "vtd" ? (caps.iommu.nest ? "nested" : "shadow") : "nested";
      output(
        json,
        `${cdev}: ${caps.iommu.kind} IOMMU, PASID bits ${caps.maxPasidLog2}, relay mode ${mode}` +
          `${mode === "shadow" ? " (no ecap.NEST: the guest's table is shadowed into an IOAS)" : ""}\n${
            JSON.stringify(caps.iommu, jsonReplacer, 2)
          }`,
        { ...caps, mode },
      );
    })
  );
}

/**
 * Run `probe <cdev>`: whether the kernel gives the device a nesting parent, whether a nested VT-d stage-1 table
 * takes the zero-entry invalidation, and the relay mode that follows. Resolves to the exit code.
 */
export function runProbe(args: string[]): Promise<number> {
  return guarded(() =>
    withDevice("probe", args, PROBE_HELP, ({ iommufd, dev, devId, json }) => {
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
          const vtd = FORMAT_SPECS["vtd-s1"];
          const r = nested.invalidateRaw(vtd.dataType!, new Uint8Array(0), vtd.entryLength, 0);
          result["vtd-s1"] = r === 0 ? "accepted" : `refused (errno ${-r})`;
        } catch (e) {
          result["vtd-s1"] = e instanceof KernelError ? `not offered (${e.errnoName})` : String(e);
        }
      } catch (e) {
        if (!(e instanceof KernelError)) throw e;
        result.nesting = `unsupported (${e.errnoName}: the IOMMU offers no nesting parent)`;
      }
      result.mode = result.nesting === "supported" ? "nested" : "shadow";
      output(json, Object.entries(result).map(([k, v]) => `${k}: ${v}`).join("\n"), result);
    })
  );
}

/** `hw-info` as the command list shows it. */
export const hwInfo: Command = {
  name: "hw-info",
  synopsis: "hw-info <cdev>",
  summary: "a VFIO device's IOMMU, decoded (VT-d CAP/ECAP, SMMUv3 IDRs, PASID width)",
  help: HW_INFO_HELP,
  run: runHwInfo,
};

/** `probe` as the command list shows it. */
export const probe: Command = {
  name: "probe",
  synopsis: "probe <cdev>",
  summary: "nesting support and the invalidation data types the kernel accepts",
  help: PROBE_HELP,
  run: runProbe,
};
