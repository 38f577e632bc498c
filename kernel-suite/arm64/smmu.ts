// Shared setup of the SMMUv3 tests (kernel-suite/arm64/), which run in the arm64 test VM of `deno task test:kernel
// --kernels arm64-7.3` (tools/kernel/arm64.ts): Linux 7.3's arm-smmu-v3 driver under QEMU's nested SMMUv3, with
// QEMU's edu device on vfio-pci. Everywhere else (the x86 VMs, a host) these tests are ignored with the reason.
//
// The test plays the VMM and its guest at once: guest RAM is one host buffer mapped into the IOAS at IPA 0 (stage 2,
// the nesting parent), in which the "guest" writes what a guest driver writes for stage 1 — a context descriptor and
// 4 KiB-granule AArch64 tables — and the STE that points at them is handed to the project's device layer
// (GuestIommu / AssignedDevice over KernelDeviceHost). edu's DMA engine then shows where a stage-1 address really
// lands, so an invalidation is checked by the device: stale before it, fixed after it.
import assert from "node:assert/strict";
import { NativeShim } from "../../ffi/native.ts";
import { type AssignedDevice, GuestIommu } from "../../lib/device/mod.ts";
import { KernelDeviceHost } from "../../lib/host/kernel_device_host.ts";
import { VfioPort } from "../../lib/host/ports.ts";
import type { Backend, Format, InvalidateStatus } from "../../lib/host/backend.ts";
import { type Ioas, Iommufd } from "../../lib/kernel/mod.ts";
import { RelayQueue } from "../../lib/relay/queue.ts";
import { ViommuType } from "../../lib/uapi/mod.ts";

export const CDEV = "/dev/vfio/devices/vfio0";
/** edu's virtual StreamID (its vDEVICE's id). */
export const VSID = 0x42;

const onArm64 = Deno.build.arch === "aarch64";
/** The shim (only loaded where the tests run). */
export const shim: NativeShim | undefined = onArm64 ? await NativeShim.load() : undefined;

function exists(path: string): boolean {
  const fd = shim!.open(path);
  if (fd < 0) return false;
  shim!.close(fd);
  return true;
}

/** Why the SMMUv3 tests do not run here, or undefined when they do. */
export const noSmmu: string | undefined = !onArm64
  ? "the SMMUv3 tests run in the arm64 VM (deno task test:kernel --kernels arm64-7.3)"
  : !exists("/dev/iommu")
  ? "no /dev/iommu in this VM"
  : !exists(CDEV)
  ? `${CDEV} does not exist (edu is not on vfio-pci)`
  : Deno.env.get("IOMMU_RELAY_EDU_DMA") === undefined
  ? "IOMMU_RELAY_EDU_DMA (the edu DMA helper) is not set"
  : undefined;
if (noSmmu) console.log(`kernel suite: ignoring the SMMUv3 tests because ${noSmmu}`);

/** A test of the arm64 VM. */
export function smmuTest(name: string, fn: () => void | Promise<void>): void {
  Deno.test({ name: `smmuv3: ${name}`, ignore: noSmmu !== undefined, fn, sanitizeResources: false });
}

// Guest RAM (= IPA space, mapped at IPA 0 of the IOAS): what lives where.
export const RAM_SIZE = 16 << 20;
export const CD_TABLE = 0x10_0000;
const TABLES_START = 0x20_0000, TABLES_END = 0x40_0000;
/** Data pages the DMA lands in. */
export const DATA = 0x80_0000;
/** The guest's command queue, event queue and CMD_SYNC status words (the front-end tests). */
export const CMDQ = 0xc0_0000, EVTQ = 0xc1_0000, SYNC_STATUS = 0xc2_0000;
/** The page edu loads its buffer from, and the stage-1 address it is mapped at. */
export const SOURCE = 0xb0_0000, SOURCE_VA = 0x00ff_f000;
/** edu's DMA mask is 28 bits: every stage-1 address the tests use is below 256 MiB. */
export const VA_BASE = 0x0100_0000;

const PAGE = 4096;
/** Stage-1 descriptors (4 KiB granule): valid + table/page, AF, inner shareable, nG (ASID-tagged), AP = EL0 RW. */
const TABLE_DESC = 0x3n, PAGE_DESC = 0x3n | (1n << 10n) | (3n << 8n) | (1n << 11n) | (1n << 6n);
/** T0SZ 25: a 39-bit stage-1 input, walked from level 1 (three levels). */
const T0SZ = 25;

/** A guest's stage-1 tables in guest RAM: AArch64 long descriptors, 4 KiB granule, 39-bit input. */
export class Stage1Tables {
  readonly root: number;
  #next: number;
  readonly #view: DataView;

  constructor(readonly ram: Uint8Array, start = TABLES_START, readonly end = TABLES_END) {
    this.#view = new DataView(ram.buffer, ram.byteOffset, ram.byteLength);
    this.#next = start;
    this.root = this.#alloc();
  }

  #alloc(): number {
    if (this.#next >= this.end) throw new RangeError("stage-1 table pool exhausted");
    const at = this.#next;
    this.#next += PAGE;
    this.ram.fill(0, at, at + PAGE);
    return at;
  }

  /** The leaf entry's address for `va`, allocating the tables on the way. */
  #leaf(va: number): number {
    let table = this.root;
    for (const shift of [30, 21]) {
      const at = table + (Math.floor(va / 2 ** shift) % 512) * 8;
      let entry = this.#view.getBigUint64(at, true);
      if ((entry & 3n) !== 3n) {
        entry = BigInt(this.#alloc()) | TABLE_DESC;
        this.#view.setBigUint64(at, entry, true);
      }
      table = Number(entry & 0xffff_ffff_f000n);
    }
    return table + (Math.floor(va / PAGE) % 512) * 8;
  }

  /** Map the 4 KiB page at stage-1 address `va` to IPA `ipa` (read-write). */
  map(va: number, ipa: number): void {
    this.#view.setBigUint64(this.#leaf(va), BigInt(ipa) | PAGE_DESC, true);
  }

  /** Unmap the page at `va`. */
  unmap(va: number): void {
    this.#view.setBigUint64(this.#leaf(va), 0n, true);
  }
}

/**
 * Write a stage-1 context descriptor (SMMUv3 5.4) at `at`: V, AArch64, 4 KiB granule, T0SZ 25, TTB0 = `ttb0`, ASID
 * `asid`, faults recorded (R) and aborted (A), EPD1 (no TTB1), inner write-back walks, MAIR attr0 normal write-back.
 */
export function writeCd(ram: Uint8Array, at: number, ttb0: number, asid: number): void {
  const v = new DataView(ram.buffer, ram.byteOffset + at, 64);
  for (let i = 0; i < 64; i += 8) v.setBigUint64(i, 0n, true);
  const w0 = BigInt(T0SZ) | (1n << 8n) | (1n << 10n) | (3n << 12n) | (1n << 30n) | (1n << 31n) | (2n << 32n) |
    (1n << 41n) | (1n << 45n) | (1n << 46n) | (1n << 47n) | (BigInt(asid) << 48n);
  v.setBigUint64(0, w0, true);
  v.setBigUint64(8, BigInt(ttb0), true);
  v.setBigUint64(24, 0xffn, true); // MAIR
}

/** STE Config values (bits 3:1). */
export const STE_CONFIG = { abort: 0, bypass: 4, s1: 5, s2: 6, nested: 7 } as const;

/**
 * A guest STE (SMMUv3 5.2) for stage-1 translation through the CD at `cdIpa` (one CD: S1CDMax 0), as the guest's
 * stream table holds it: V, Config, S1ContextPtr; word 1: S1DSS = substream 0, CD fetches inner/outer write-back,
 * inner shareable.
 */
export function guestSte(cdIpa: number, config: number = STE_CONFIG.s1): [bigint, bigint] {
  return [1n | (BigInt(config) << 1n) | BigInt(cdIpa), 2n | (1n << 2n) | (1n << 4n) | (3n << 6n)];
}

/** QEMU's edu, driven through its DMA engine by the cross-built helper (kernel-suite/arm64/edu_dma.c). */
export class EduDma implements AsyncDisposable {
  readonly #child: Deno.ChildProcess;
  readonly #writer: WritableStreamDefaultWriter<Uint8Array>;
  readonly #lines: AsyncIterator<string>;
  /** DMAs done. */
  count = 0;

  private constructor(sysfs: string) {
    this.#child = new Deno.Command(Deno.env.get("IOMMU_RELAY_EDU_DMA")!, {
      args: [sysfs],
      stdin: "piped",
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    this.#writer = this.#child.stdin.getWriter();
    this.#lines = this.#child.stdout.pipeThrough(new TextDecoderStream()).pipeThrough(lineSplitter())[
      Symbol.asyncIterator
    ]();
  }

  /** The helper on the edu function found in sysfs (vendor 0x1234, device 0x11e8). */
  static async open(): Promise<EduDma> {
    for (const e of Deno.readDirSync("/sys/bus/pci/devices")) {
      const dir = `/sys/bus/pci/devices/${e.name}`;
      const id = `${Deno.readTextFileSync(`${dir}/vendor`).trim()}:${Deno.readTextFileSync(`${dir}/device`).trim()}`;
      if (id === "0x1234:0x11e8") {
        const edu = new EduDma(dir);
        assert.equal(await edu.#ask("ident"), "0x010000ed", "edu's identification register");
        return edu;
      }
    }
    throw new Error("no edu device in /sys/bus/pci/devices");
  }

  async #ask(line: string): Promise<string> {
    await this.#writer.write(new TextEncoder().encode(line + "\n"));
    const r = await this.#lines.next();
    if (r.done) throw new Error(`the edu helper exited (asked: ${line})`);
    return r.value;
  }

  async #dma(dir: "to-ram" | "to-dev", iova: number, offset: number, count: number): Promise<void> {
    const answer = await this.#ask(`dma ${dir} ${iova.toString(16)} ${offset.toString(16)} ${count.toString(16)}`);
    this.count++;
    if (answer !== "ok") throw new Error(`edu DMA ${dir} 0x${iova.toString(16)}: ${answer}`);
  }

  /** edu writes `count` bytes of its buffer at `offset` to stage-1 address `va`. */
  write(va: number, offset: number, count: number): Promise<void> {
    return this.#dma("to-ram", va, offset, count);
  }

  /** edu reads `count` bytes at stage-1 address `va` into its buffer at `offset`. */
  read(va: number, offset: number, count: number): Promise<void> {
    return this.#dma("to-dev", va, offset, count);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.#writer.close().catch(() => {});
    await this.#child.status;
  }
}

function lineSplitter(): TransformStream<string, string> {
  let pending = "";
  return new TransformStream({
    transform(chunk, controller) {
      pending += chunk;
      const lines = pending.split("\n");
      pending = lines.pop() ?? "";
      for (const line of lines) controller.enqueue(line.trim());
    },
  });
}

/** A backend that records each batch's opcodes (byte 0 of each 16-byte command) before passing it on. */
export class RecordingBackend implements Backend {
  readonly batches: { targetId: number; opcodes: number[]; entries: Uint8Array; errno: number; handled: number }[] = [];
  constructor(readonly inner: Backend) {}
  invalidate(targetId: number, format: Format, entries: Uint8Array, count: number, status: InvalidateStatus): void {
    const opcodes = Array.from({ length: count }, (_, i) => entries[i * 16]);
    const copy = entries.slice(0, count * 16);
    this.inner.invalidate(targetId, format, entries, count, status);
    this.batches.push({ targetId, opcodes, entries: copy, errno: status.errno, handled: status.handled });
  }
  /** Every opcode sent since the last call, in order. */
  take(): number[] {
    const all = this.batches.flatMap((b) => b.opcodes);
    this.batches.length = 0;
    return all;
  }
}

/** Everything one test needs: iommufd, IOAS with guest RAM at IPA 0, the device layer, edu assigned and bound. */
export interface SmmuRig extends AsyncDisposable {
  readonly iommufd: Iommufd;
  readonly ioas: Ioas;
  readonly ram: Uint8Array;
  readonly tables: Stage1Tables;
  readonly guest: GuestIommu;
  readonly dev: AssignedDevice;
  readonly backend: RecordingBackend;
  readonly edu: EduDma;
  /** The vIOMMU's object id. */
  readonly viommuId: number;
  /** The ASID of CD 0. */
  readonly asid: number;
  /** Fill the source page with `pattern(i)` per 64-byte slot and load it into edu's buffer. */
  loadPatterns(): Promise<void>;
  /** The 64-byte pattern edu's buffer holds at slot `slot` (after loadPatterns). */
  pattern(slot: number): Uint8Array;
  /** Whether guest RAM at `ipa` holds pattern `slot`. */
  holds(ipa: number, slot: number): boolean;
}

/**
 * The rig: edu assigned through the device layer in vIOMMU mode (ARM_SMMUV3, vSID 0x42), CD 0 of ASID `asid` at
 * CD_TABLE over fresh stage-1 tables, the RID bound to the STE that points at it, edu's source page mapped.
 */
export async function smmuRig(opts: { ril?: boolean; asid?: number } = {}): Promise<SmmuRig> {
  const s = shim!;
  await using stack = new AsyncDisposableStack();
  const iommufd = stack.use(Iommufd.open(s));
  const ioas = stack.use(iommufd.allocIoas());
  const ram = s.alignedBuffer(RAM_SIZE);
  ram.fill(0);
  ioas.map(ram, { iova: 0 });
  const host = new KernelDeviceHost(iommufd, ioas);
  const backend = new RecordingBackend(host.backend);
  const guest = stack.use(
    new GuestIommu(host, {
      viommu: { type: ViommuType.values.IOMMU_VIOMMU_TYPE_ARM_SMMUV3, format: "smmuv3" },
      queue: new RelayQueue(backend, { smmuRil: opts.ril ?? false }),
    }),
  );
  const dev = guest.assign(VfioPort.open(s, iommufd, CDEV), { domain: 1, virtId: VSID });
  const asid = opts.asid ?? 1;
  const tables = new Stage1Tables(ram);
  tables.map(SOURCE_VA, SOURCE);
  writeCd(ram, CD_TABLE, tables.root, asid);
  dev.bind("rid", { format: "smmuv3", ste: guestSte(CD_TABLE), asid });
  const viommuId = guest.queue.bindings(1, "rid")[0].targetId;
  const edu = stack.use(await EduDma.open());
  const pattern = (slot: number) => Uint8Array.from({ length: 64 }, (_, i) => (slot * 37 + i * 11 + 1) & 0xff);
  const owned = stack.move();
  return {
    iommufd,
    ioas,
    ram,
    tables,
    guest,
    dev,
    backend,
    edu,
    viommuId,
    asid,
    pattern,
    async loadPatterns() {
      for (let slot = 0; slot < 64; slot++) ram.set(pattern(slot), SOURCE + slot * 64);
      await edu.read(SOURCE_VA, 0, PAGE);
    },
    holds(ipa, slot) {
      const want = pattern(slot);
      return ram.subarray(ipa, ipa + 64).every((b, i) => b === want[i]);
    },
    [Symbol.asyncDispose]: () => owned.disposeAsync(),
  };
}

/**
 * The device's view of one stage-1 change: `va` mapped to page `from` (edu's DMA lands there, which also puts the
 * translation in the SMMU's TLB), then remapped to `to` with no invalidation — edu's next DMA still lands in `from`
 * (stale) — then `invalidate()` (the relay's commands), after which it lands in `to`. Uses three pattern slots from
 * `slot`.
 */
export async function staleThenFixed(
  rig: SmmuRig,
  va: number,
  from: number,
  to: number,
  slot: number,
  invalidate: () => void | Promise<void>,
  what: string,
): Promise<void> {
  rig.tables.map(va, from);
  await rig.edu.write(va, slot * 64, 64);
  assert.ok(rig.holds(from, slot), `${what}: edu's first DMA lands in the mapped page`);
  rig.tables.map(va, to);
  await rig.edu.write(va, (slot + 1) * 64, 64);
  assert.ok(rig.holds(from, slot + 1), `${what}: without an invalidation the SMMU still uses the old translation`);
  assert.ok(!rig.holds(to, slot + 1), `${what}: and the new page is untouched`);
  await invalidate();
  await rig.edu.write(va, (slot + 2) * 64, 64);
  assert.ok(rig.holds(to, slot + 2), `${what}: after the invalidation edu's DMA lands in the new page`);
  assert.ok(rig.holds(from, slot + 1), `${what}: and the old page keeps what it had`);
}

/** The page of guest RAM at index `n` of the data area. */
export function dataPage(n: number): number {
  return DATA + n * PAGE;
}
