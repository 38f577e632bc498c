/**
 * SMMUv3 commands as a guest writes them into its command queue (16 bytes, little-endian), decoded. Field
 * layouts follow the Linux driver (`drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.h`, `CMDQ_*`). An opcode the
 * relay does not know is a {@linkcode SmmuCommandError}: the queue model reports it as CERROR_ILL.
 *
 * @module
 */

/** A decoded command. Addresses are 4 KiB page numbers. */
export type SmmuCommand =
  | { readonly op: "prefetch" }
  | { readonly op: "cfgi-ste"; readonly sid: number; readonly leaf: boolean }
  | { readonly op: "cfgi-all" }
  | { readonly op: "cfgi-cd"; readonly sid: number; readonly ssid: number; readonly leaf: boolean }
  | { readonly op: "cfgi-cd-all"; readonly sid: number }
  | { readonly op: "tlbi-nh-all" }
  | { readonly op: "tlbi-nh-asid"; readonly asid: number }
  | {
    readonly op: "tlbi-nh-va" | "tlbi-nh-vaa";
    readonly asid: number;
    readonly leaf: boolean;
    readonly ttl: number;
    /** First 4 KiB page and how many: one granule without TG, else (NUM+1) << SCALE granules of TG. */
    readonly page: number;
    readonly pages: number;
  }
  | {
    readonly op: "atc-inv";
    readonly sid: number;
    readonly ssid: number | undefined;
    readonly global: boolean;
    readonly page: number;
    readonly size: number;
  }
  | {
    readonly op: "pri-resp";
    readonly sid: number;
    readonly ssid: number | undefined;
    readonly grpid: number;
    readonly resp: number;
  }
  | { readonly op: "resume"; readonly sid: number; readonly resp: number; readonly stag: number }
  | {
    readonly op: "sync";
    /** Completion signal (CS, bits 13:12): SIG_NONE, SIG_IRQ (an MSI, or the wired interrupt) or SIG_SEV. */
    readonly cs: "none" | "irq" | "sev";
    /** MSIData (bits 63:32): the 32-bit value the MSI writes. */
    readonly msiData: number;
    /** MSIAddress (bits 115:66 of the command, i.e. word 1 bits 51:2): the MSI's 4-byte aligned guest address. */
    readonly msiAddress: number;
    /** MSH (bits 23:22): the MSI write's shareability. */
    readonly msh: number;
    /** MSIAttr (bits 27:24): the MSI write's memory type. */
    readonly msiAttr: number;
  };

/** A command the relay refuses (the guest sees CERROR_ILL). */
export class SmmuCommandError extends Error {
  override name = "SmmuCommandError";
  constructor(readonly reason: "unknown-opcode" | "reserved-value" | "truncated", detail: string) {
    super(`${reason}: ${detail}`);
  }
}

/** TG → 4 KiB pages per granule (0: not a range command). */
const GRANULE_PAGES = [0, 1, 4, 16];

type Mutable<T> = { -readonly [K in keyof T]: T[K] };
type Of<K extends SmmuCommand["op"]> = Mutable<Extract<SmmuCommand, { op: K }>>;
/** Commands without fields: one frozen object each. */
const PREFETCH: SmmuCommand = Object.freeze({ op: "prefetch" });
const CFGI_ALL: SmmuCommand = Object.freeze({ op: "cfgi-all" });
const TLBI_NH_ALL: SmmuCommand = Object.freeze({ op: "tlbi-nh-all" });

/**
 * Reusable objects for the commands a queue sees most (TLBIs and CMD_SYNC): {@linkcode decodeSmmuCommand} given a
 * scratch fills and returns them (valid until the next decode into it), so a PROD write allocates nothing.
 */
export class SmmuCommandScratch {
  readonly tlbi: Of<"tlbi-nh-va" | "tlbi-nh-vaa"> = {
    op: "tlbi-nh-va",
    asid: 0,
    leaf: false,
    ttl: 0,
    page: 0,
    pages: 1,
  };
  readonly asid: Of<"tlbi-nh-asid"> = { op: "tlbi-nh-asid", asid: 0 };
  readonly sync: Of<"sync"> = { op: "sync", cs: "none", msiData: 0, msiAddress: 0, msh: 0, msiAttr: 0 };
}

/** Little-endian dword at `at`. */
const u32 = (b: Uint8Array, at: number) => (b[at] | (b[at + 1] << 8) | (b[at + 2] << 16) | (b[at + 3] << 24)) >>> 0;
const SYNC_CS = ["none", "irq", "sev"] as const;

/**
 * Decode the command at `at`.
 *
 * @example
 * ```ts
 * import { decodeSmmuCommand } from "./commands.ts";
 * const c = new Uint8Array(16);
 * const v = new DataView(c.buffer);
 * v.setUint32(0, 0x12, true); v.setUint32(4, 5 << 16, true); // TLBI_NH_VA, ASID 5
 * v.setUint32(8, 0x7f000000 | 1, true); // VA 0x7f000000, LEAF
 * console.log(decodeSmmuCommand(c, 0)); // { op: "tlbi-nh-va", asid: 5, leaf: true, ttl: 0, page: 520192, pages: 1 }
 * ```
 */
export function decodeSmmuCommand(bytes: Uint8Array, at: number, scratch?: SmmuCommandScratch): SmmuCommand {
  if (!(Number.isInteger(at) && at >= 0 && at + 16 <= bytes.length)) {
    throw new SmmuCommandError("truncated", `16 bytes at ${at} of a ${bytes.length}-byte buffer`);
  }
  const w0lo = u32(bytes, at), w0hi = u32(bytes, at + 4);
  const w1lo = u32(bytes, at + 8), w1hi = u32(bytes, at + 12);
  const opcode = w0lo & 0xff;
  const ssv = (w0lo & (1 << 11)) !== 0;
  const ssid = (w0lo >>> 12) & 0xfffff;
  const page = w1hi * 0x10_0000 + (w1lo >>> 12);
  switch (opcode) {
    case 0x01:
    case 0x02:
      return PREFETCH;
    case 0x03:
      return { op: "cfgi-ste", sid: w0hi, leaf: (w1lo & 1) === 1 };
    case 0x04:
      return CFGI_ALL;
    case 0x05:
      return { op: "cfgi-cd", sid: w0hi, ssid, leaf: (w1lo & 1) === 1 };
    case 0x06:
      return { op: "cfgi-cd-all", sid: w0hi };
    case 0x10:
    case 0x30: // TLBI_NSNH_ALL: everything non-secure, which for a guest is its stage 1
    // TLBI_S12_VMALL and TLBI_S2_IPA: a guest that drives stage 2 (an SMMU advertising S2P) invalidates its VMID's
    // stage-1 and stage-2 entries. The relay holds no guest stage 2, and every stage-1 entry of the VM may have been
    // combined with it: all of them, an over-invalidation (safe) where CERROR_ILL would have the guest skip it.
    case 0x28:
    case 0x2a:
      return TLBI_NH_ALL;
    case 0x11: {
      const c = scratch ? scratch.asid : { op: "tlbi-nh-asid" as const, asid: 0 };
      c.asid = w0hi >>> 16;
      return c;
    }
    case 0x12:
    case 0x13: {
      const tg = (w1lo >>> 10) & 3;
      const num = ((w0lo >>> 12) & 0x1f) + 1;
      // SCALE is bits 24:20 (five bits: the architecture's and QEMU's field); bit 25 is RES0 and ignored.
      const scale = (w0lo >>> 20) & 0x1f;
      const granule = GRANULE_PAGES[tg];
      // A range starts at its granule: an address inside one (a hostile guest's) widens the range down to the
      // granule boundary and keeps its end, so nothing it named is left out.
      const slack = tg === 0 ? 0 : page % granule;
      const pages = tg === 0 ? 1 : num * 2 ** scale * granule + slack;
      if (!Number.isSafeInteger(pages) || pages > 2 ** 52) {
        throw new SmmuCommandError("reserved-value", `range of ${pages} pages`);
      }
      const c: Of<"tlbi-nh-va" | "tlbi-nh-vaa"> = scratch
        ? scratch.tlbi
        : { op: "tlbi-nh-va", asid: 0, leaf: false, ttl: 0, page: 0, pages: 1 };
      c.op = opcode === 0x12 ? "tlbi-nh-va" : "tlbi-nh-vaa";
      c.asid = opcode === 0x12 ? w0hi >>> 16 : 0;
      c.leaf = (w1lo & 1) === 1;
      c.ttl = (w1lo >>> 8) & 3;
      c.page = page - slack;
      c.pages = Math.min(pages, 2 ** 52 - c.page);
      return c;
    }
    case 0x40:
      return {
        op: "atc-inv",
        sid: w0hi,
        ssid: ssv ? ssid : undefined,
        global: (w0lo & (1 << 9)) !== 0,
        page,
        size: w1lo & 0x3f,
      };
    case 0x41:
      return { op: "pri-resp", sid: w0hi, ssid: ssv ? ssid : undefined, grpid: w1lo & 0x1ff, resp: (w1lo >>> 12) & 3 };
    case 0x44:
      return { op: "resume", sid: w0hi, resp: (w0lo >>> 12) & 3, stag: w1lo & 0xffff };
    case 0x46: {
      const cs = (w0lo >>> 12) & 3;
      if (cs === 3) throw new SmmuCommandError("reserved-value", "CMD_SYNC CS 3");
      const c: Of<"sync"> = scratch
        ? scratch.sync
        : { op: "sync", cs: SYNC_CS[0], msiData: 0, msiAddress: 0, msh: 0, msiAttr: 0 };
      c.cs = SYNC_CS[cs];
      c.msiData = w0hi;
      c.msiAddress = (w1hi & 0xfffff) * 2 ** 32 + ((w1lo & ~3) >>> 0);
      c.msh = (w0lo >>> 22) & 3;
      c.msiAttr = (w0lo >>> 24) & 0xf;
      return c;
    }
    default:
      throw new SmmuCommandError("unknown-opcode", `0x${opcode.toString(16)}`);
  }
}
