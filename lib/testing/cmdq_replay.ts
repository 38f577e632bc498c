/**
 * Replay of an SMMUv3 command-queue recording ("guest-trace CMDQ v1", see tests/fixtures/traces) through the command
 * queue model the way a VMM wires it: each doorbell's commands written into their queue slots in guest memory, then
 * the PROD value the guest wrote. A VMM author can replay a recording of their own guest into their own queue
 * ({@linkcode replayCmdq} with any {@linkcode CmdqReplayTarget}) or into a ready rig ({@linkcode CmdqReplayRig}: guest
 * RAM, the in-process host, a relay queue and the model, with the streams and contexts bound as the recorded
 * CFGI_STE/CFGI_CD name them).
 *
 * Format: `seq phase batch slot w0 w1 opcode key=value...`; `batch` is one guest write of SMMU_CMDQ_PROD, `slot`
 * the queue index (wrap bit dropped), `w0 w1` the command's 64-bit words in hex, `?` where the recorder lost them
 * (the command is then rebuilt from its decoded fields, per the SMMUv3 command layouts).
 *
 * @example Replaying a recording of your own guest, checking at each CMD_SYNC's completion that its TLBIs reached the
 * host (the recording here is two doorbells written into a file; yours comes from your recorder)
 * ```ts
 * import assert from "node:assert/strict";
 * import { CmdqReplayRig, parseCmdqRecording, readRecordingText } from "./mod.ts";
 * const path = await Deno.makeTempFile({ suffix: ".cmdq.txt" });
 * await Deno.writeTextFile(path, [
 *   "# console: arm-smmu-v3 x: allocated 256 entries for cmdq",
 *   "0 0 1 0 0000000800000005 0000000000000001 CFGI_CD sid=0x8 ssid=0",
 *   "1 0 1 1 0000000000002046 0000000000000000 SYNC cs=sev",
 *   "2 0 2 2 0002000000000012 00000000ffff8401 TLBI_NH_VA asid=2 tg=1",
 *   "3 0 2 3 0000000000002046 0000000000000000 SYNC cs=sev",
 * ].join("\n"));
 * const recording = parseCmdqRecording(await readRecordingText(path));
 * let syncs = 0;
 * const rig: CmdqReplayRig = new CmdqReplayRig(recording, {
 *   // Your VMM reads the CD's ASID from guest memory at CFGI_CD; without the CDs, leave asidOf out.
 *   asidOf: () => 2,
 *   hooks: { sev: () => void (syncs++ === 1 && assert.ok(rig.host.covered(rig.vsmmu, 0xffff8, 2))) },
 * });
 * const result = rig.replay();
 * assert.deepEqual([result.doorbells, result.processed, result.errors, syncs], [2, 4, 0, 2]);
 * await Deno.remove(path);
 * ```
 *
 * @module
 */
import { RelayQueue } from "../relay/queue.ts";
import { ModelHost } from "../host/model.ts";
import { type ProdResult, SmmuCommandQueue, type SmmuQueueHooks } from "../frontends/smmuv3/cmdq.ts";
import type { RelaySink } from "../frontends/window.ts";
import { keyValues, splitRecording } from "./recordings.ts";

/** One recorded command. */
export interface CmdqRecordedCommand {
  readonly seq: number;
  readonly phase: number;
  readonly batch: number;
  readonly slot: number;
  readonly w0: bigint;
  readonly w1: bigint;
  readonly opcode: string;
  /** Whether w0/w1 were rebuilt from the decoded fields (the recording had `?`). */
  readonly rebuilt: boolean;
  readonly fields: Readonly<Record<string, string>>;
}

/** A parsed recording. */
export interface CmdqRecording {
  readonly header: readonly string[];
  readonly commands: readonly CmdqRecordedCommand[];
  /** LOG2SIZE of the guest's queue when the header names it ("allocated N entries for cmdq"). */
  readonly log2size?: number;
}

/** SMMUv3 command opcodes by the names the recordings use. */
export const CMDQ_OPCODES: Readonly<Record<string, number>> = {
  PREFETCH_CONFIG: 0x01,
  PREFETCH_ADDR: 0x02,
  CFGI_STE: 0x03,
  CFGI_STE_RANGE: 0x04,
  CFGI_ALL: 0x04,
  CFGI_CD: 0x05,
  CFGI_CD_ALL: 0x06,
  TLBI_NH_ALL: 0x10,
  TLBI_NH_ASID: 0x11,
  TLBI_NH_VA: 0x12,
  TLBI_NH_VAA: 0x13,
  TLBI_EL3_ALL: 0x18,
  TLBI_EL3_VA: 0x1a,
  TLBI_EL2_ALL: 0x20,
  TLBI_EL2_ASID: 0x21,
  TLBI_EL2_VA: 0x22,
  TLBI_EL2_VAA: 0x23,
  TLBI_S12_VMALL: 0x28,
  TLBI_S2_IPA: 0x2a,
  TLBI_NSNH_ALL: 0x30,
  ATC_INV: 0x40,
  PRI_RESP: 0x41,
  RESUME: 0x44,
  STALL_TERM: 0x45,
  SYNC: 0x46,
};

const num = (s: string | undefined) => (s === undefined ? 0n : BigInt(s.startsWith("0x") ? s : `${Number(s)}`));

/**
 * Rebuild a command's words from its decoded fields (SMMUv3 command layouts), for lines whose raw words were lost.
 * Fields a recording does not carry are 0; a CMD_SYNC without `cs` is taken as SIG_SEV (what Linux sends without MSIs).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { encodeRecordedCommand } from "./cmdq_replay.ts";
 * const [w0, w1] = encodeRecordedCommand("TLBI_NH_VA", { asid: "2", addr: "0xffff8000", leaf: "1", ttl: "3", tg: "1" });
 * assert.equal(w0, 0x0002000000000012n);
 * assert.equal(w1, 0xffff8701n);
 * ```
 */
export function encodeRecordedCommand(opcode: string, f: Readonly<Record<string, string>>): [bigint, bigint] {
  const op = opcode.startsWith("op=") ? Number(opcode.slice(3)) : CMDQ_OPCODES[opcode];
  if (op === undefined) throw new Error(`unknown opcode ${opcode}`);
  let w0 = BigInt(op), w1 = 0n;
  const ssid = num(f.ssid), sid = num(f.sid);
  switch (op) {
    case 0x01:
    case 0x03:
    case 0x04:
    case 0x05:
    case 0x06:
      w0 |= (sid << 32n) | (ssid << 12n) | (num(f.ssec) << 10n);
      w1 = op === 0x04 ? num(f.range ?? "31") : op === 0x01 ? num(f.size) | (num(f.addr) & ~0xfffn) : num(f.leaf);
      break;
    case 0x10:
    case 0x11:
    case 0x12:
    case 0x13:
    case 0x28:
    case 0x2a:
      w0 |= (num(f.asid) << 48n) | (num(f.vmid) << 32n) | (num(f.scale) << 20n) | (num(f.num) << 12n);
      w1 = (num(f.addr) & ~0xfffn) | (num(f.tg) << 10n) | (num(f.ttl) << 8n) | num(f.leaf);
      break;
    case 0x40:
      w0 |= (sid << 32n) | (ssid << 12n) | (num(f.ssv) << 11n);
      w1 = (num(f.addr) & ~0xfffn) | num(f.size) | (num(f.g) << 9n);
      break;
    case 0x41: // PRI_RESP: SSID [31:12], SSV 11, SID [63:32]; PRG index [8:0], RESP [13:12]
      w0 |= (sid << 32n) | (ssid << 12n) | (num(f.ssv) << 11n);
      w1 = (num(f.grpid) & 0x1ffn) | ((num(f.resp) & 3n) << 12n);
      break;
    case 0x44: // RESUME: RESP [13:12], SID [63:32]; STAG [15:0]
      w0 |= (sid << 32n) | ((num(f.resp) & 3n) << 12n);
      w1 = num(f.stag) & 0xffffn;
      break;
    case 0x45: // STALL_TERM: SID [63:32]
      w0 |= sid << 32n;
      break;
    case 0x46: {
      const cs = f.cs === "none" ? 0n : f.cs === "irq" ? 1n : 2n;
      w0 |= (cs << 12n) | (num(f.msh) << 22n) | (num(f.msiattr) << 24n) | (num(f.msidata) << 32n);
      w1 = num(f.msiaddr) & 0x000f_ffff_ffff_fffcn;
      break;
    }
  }
  return [w0, w1];
}

/**
 * Parse a "guest-trace CMDQ v1" recording.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseCmdqRecording } from "./cmdq_replay.ts";
 * const r = parseCmdqRecording("# console: arm-smmu-v3 x: allocated 256 entries for cmdq\n" +
 *   "0 0 2 0 0000000000000004 000000000000001f CFGI_ALL sid=0x0 range=31\n");
 * assert.equal(r.log2size, 8);
 * assert.deepEqual([r.commands[0].batch, r.commands[0].w1, r.commands[0].opcode], [2, 31n, "CFGI_ALL"]);
 * ```
 */
export function parseCmdqRecording(text: string): CmdqRecording {
  const { header, rows } = splitRecording(text);
  const commands: CmdqRecordedCommand[] = [];
  for (const r of rows) {
    if (r.length < 7) throw new Error(`CMDQ recording: short line "${r.join(" ")}"`);
    const fields = keyValues(r.slice(7));
    const rebuilt = r[4] === "?" || r[5] === "?";
    const [w0, w1] = rebuilt ? encodeRecordedCommand(r[6], fields) : [BigInt(`0x${r[4]}`), BigInt(`0x${r[5]}`)];
    commands.push({
      seq: Number(r[0]),
      phase: Number(r[1]),
      batch: Number(r[2]),
      slot: Number(r[3]),
      w0,
      w1,
      opcode: r[6],
      rebuilt,
      fields,
    });
  }
  let log2size: number | undefined;
  for (const h of header) {
    const m = /allocated (\d+) entries for cmdq/.exec(h);
    if (m) log2size = Math.log2(Number(m[1]));
  }
  return { header, commands, ...(log2size !== undefined && Number.isInteger(log2size) ? { log2size } : {}) };
}

/** Where a replay writes: the guest's queue memory and the PROD register. */
export interface CmdqReplayTarget {
  writeCommand(slot: number, w0: bigint, w1: bigint): void;
  writeProd(value: number): ProdResult;
}

/** One doorbell of a recording: its commands in queue order and the PROD value (index and wrap bit) after them. */
export interface CmdqDoorbell {
  readonly batch: number;
  readonly commands: readonly CmdqRecordedCommand[];
  readonly prod: number;
}

/**
 * The recording's doorbells, with PROD as the guest wrote it: the wrap bit flips whenever the slot index goes back.
 */
export function cmdqDoorbells(recording: CmdqRecording, log2size: number): CmdqDoorbell[] {
  const entries = 2 ** log2size;
  const out: CmdqDoorbell[] = [];
  let wrap = 0, last = -1;
  let current: { batch: number; commands: CmdqRecordedCommand[]; prod: number } | undefined;
  for (const c of recording.commands) {
    if (c.slot >= entries) throw new Error(`slot ${c.slot} outside a queue of ${entries}`);
    if (c.slot <= last) wrap ^= entries;
    last = c.slot;
    if (!current || current.batch !== c.batch) out.push(current = { batch: c.batch, commands: [], prod: 0 });
    current.commands.push(c);
    // PROD after this command: the next index, its wrap bit flipped when the index wraps to 0.
    current.prod = c.slot + 1 === entries ? wrap ^ entries : wrap | (c.slot + 1);
  }
  return out;
}

/** What a replay did. */
export interface CmdqReplayResult {
  readonly doorbells: number;
  readonly commands: number;
  readonly processed: number;
  readonly syncsCompleted: number;
  /** PROD writes that ended in an error (CONS.ERR set). */
  readonly errors: number;
}

/**
 * Replay `recording` into `target`: per doorbell, write its commands into their slots, then PROD.
 */
export function replayCmdq(
  recording: CmdqRecording,
  target: CmdqReplayTarget,
  log2size: number,
  onDoorbell?: (doorbell: CmdqDoorbell, result: ProdResult) => void,
): CmdqReplayResult {
  let processed = 0, syncs = 0, errors = 0, doorbells = 0;
  for (const d of cmdqDoorbells(recording, log2size)) {
    for (const c of d.commands) target.writeCommand(c.slot, c.w0, c.w1);
    const r = target.writeProd(d.prod);
    processed += r.processed;
    syncs += r.syncsCompleted;
    if (r.error) errors++;
    doorbells++;
    onDoorbell?.(d, r);
  }
  return { doorbells, commands: recording.commands.length, processed, syncsCompleted: syncs, errors };
}

/** Options of {@linkcode CmdqReplayRig}. */
export interface CmdqReplayRigOptions {
  /**
   * LOG2SIZE of the queue (default: the recording's header, else the smallest queue holding its highest slot — exact
   * for a recording that wrapped, and any larger size replays the same when it did not).
   */
  readonly log2size?: number;
  /** Guest-physical address of the queue (default 0x4100_0000, aligned to the queue's size). */
  readonly queueAddress?: number;
  /**
   * The ASID the guest's CD for (StreamID, SubstreamID) holds, which a VMM reads from guest memory at CFGI_CD.
   * The recordings do not hold the CDs: by default every ASID a TLBI names is taken to belong to the streams the
   * CFGI_CDs configured (over-invalidation when several streams exist, never under).
   */
  readonly asidOf?: (sid: number, ssid: number) => number | undefined;
  /** Put something in front of the relay (a counting or failing sink). */
  readonly sink?: (relay: RelayQueue) => RelaySink;
  /** Extra hooks (sev, syncInterrupt, ...): the rig's own context bookkeeping runs first. */
  readonly hooks?: Partial<SmmuQueueHooks>;
}

/**
 * Guest RAM, the in-process host's vSMMU, a relay queue and the queue model, wired as a VMM would: CFGI_STE/CFGI_CD
 * bind the stream's context (domain = StreamID + 1, PASID "rid" for SubstreamID 0) to the vSMMU with its ASID.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { CmdqReplayRig, parseCmdqRecording } from "./cmdq_replay.ts";
 * const rec = parseCmdqRecording([
 *   "0 0 1 0 0000000800000005 0000000000000001 CFGI_CD sid=0x8",
 *   "1 0 1 1 000000000fc02046 0000000000000000 SYNC cs=sev",
 *   "2 0 2 2 0002000000000012 00000000ffff8701 TLBI_NH_VA asid=2",
 *   "3 0 2 3 000000000fc02046 0000000000000000 SYNC cs=sev",
 * ].join("\n"));
 * const rig = new CmdqReplayRig(rec, { asidOf: () => 2 });
 * const result = rig.replay();
 * assert.deepEqual([result.processed, result.syncsCompleted, result.errors], [4, 2, 0]);
 * assert.ok(rig.host.covered(rig.vsmmu, 0xffff8, 2));
 * ```
 */
export class CmdqReplayRig {
  readonly host: ModelHost = new ModelHost();
  readonly vsmmu: number;
  readonly relay: RelayQueue;
  readonly cmdq: SmmuCommandQueue;
  readonly log2size: number;
  readonly queueAddress: number;
  /** Guest RAM: the queue, then 64 KiB for MSIs. */
  readonly ram: Uint8Array;
  /** (domain, PASID) contexts bound per ASID. */
  readonly contexts: Map<number, { domain: number; pasid: "rid" | number }[]> = new Map();
  /** Streams and substreams the guest configured (CFGI_STE / CFGI_CD), as "sid/ssid". */
  readonly configured: Set<string> = new Set();
  readonly #asids: number[];

  constructor(readonly recording: CmdqRecording, readonly options: CmdqReplayRigOptions = {}) {
    this.log2size = options.log2size ?? recording.log2size ?? inferredLog2size(recording);
    const bytes = 16 * 2 ** this.log2size;
    this.queueAddress = options.queueAddress ?? Math.max(0x4100_0000 - (0x4100_0000 % bytes), bytes);
    this.ram = new Uint8Array(bytes + 0x10000);
    const ram = this.ram, offset = this.queueAddress;
    const memory = {
      read: (a: number, n: number) => {
        if (a < offset || a + n > offset + ram.length) throw new RangeError("outside guest RAM");
        return ram.slice(a - offset, a - offset + n);
      },
      readInto: (a: number, out: Uint8Array) => {
        if (a < offset || a + out.length > offset + ram.length) throw new RangeError("outside guest RAM");
        out.set(ram.subarray(a - offset, a - offset + out.length));
      },
      write: (a: number, b: Uint8Array) => {
        if (a < offset || a + b.length > offset + ram.length) throw new RangeError("outside guest RAM");
        ram.set(b, a - offset);
      },
    };
    this.vsmmu = this.host.createTarget("smmuv3");
    this.relay = new RelayQueue(this.host, { smmuRil: true });
    // Every ASID the recording's TLBIs name (TLBI_NH_ASID, TLBI_NH_VA: ASID in bits 63:48, read from the words, not
    // from the recorder's names), for the default (CDs unknown) binding.
    const asids = new Set<number>();
    for (const c of recording.commands) {
      const opcode = Number(c.w0 & 0xffn);
      if (opcode === 0x11 || opcode === 0x12) asids.add(Number((c.w0 >> 48n) & 0xffffn));
    }
    this.#asids = [...asids];
    const extra = options.hooks ?? {};
    const hooks: SmmuQueueHooks = {
      ...extra,
      asidUsers: (asid) => this.contexts.get(asid) ?? NONE,
      domains: () => [...new Set([...this.contexts.values()].flat().map((c) => c.domain))],
      configChanged: (c) => {
        // CFGI_CD_ALL names a stream whose CDs all changed: at least its SSID 0 (the others have their CFGI_CDs).
        if (c.op === "cfgi-cd" || c.op === "cfgi-ste" || c.op === "cfgi-cd-all") {
          this.#configure(c.sid, c.op === "cfgi-cd" ? c.ssid : 0);
        }
        extra.configChanged?.(c);
      },
    };
    this.cmdq = new SmmuCommandQueue(memory, options.sink ? options.sink(this.relay) : this.relay, hooks);
    // As Linux writes CMDQ_BASE: RA (bit 62) | address | LOG2SIZE.
    this.cmdq.writeBase((1n << 62n) | BigInt(this.queueAddress) | BigInt(this.log2size));
  }

  /** A stream's context changed: bind it (once) with the ASID its CD holds, or with every recorded ASID. */
  #configure(sid: number, ssid: number): void {
    const key = `${sid}/${ssid}`;
    if (this.configured.has(key)) return;
    this.configured.add(key);
    const known = this.options.asidOf?.(sid, ssid);
    const asids = known !== undefined ? [known] : this.options.asidOf ? [] : this.#asids;
    for (const asid of asids) {
      // One relay domain per (stream, ASID): the relay's binding carries one host ASID.
      const domain = (sid + 1) * 65_536 + asid;
      const pasid = ssid === 0 ? "rid" as const : ssid;
      this.relay.bind(domain, pasid, { targetId: this.vsmmu, format: "smmuv3", asid });
      let list = this.contexts.get(asid);
      if (!list) this.contexts.set(asid, list = []);
      list.push({ domain, pasid });
    }
  }

  /** Write a command into its slot of guest RAM. */
  writeCommand(slot: number, w0: bigint, w1: bigint): void {
    const v = new DataView(this.ram.buffer, slot * 16, 16);
    v.setBigUint64(0, w0, true);
    v.setBigUint64(8, w1, true);
  }

  writeProd(value: number): ProdResult {
    return this.cmdq.writeProd(value);
  }

  /** Replay the whole recording. */
  replay(onDoorbell?: (doorbell: CmdqDoorbell, result: ProdResult) => void): CmdqReplayResult {
    return replayCmdq(this.recording, this, this.log2size, onDoorbell);
  }
}

const NONE: readonly { domain: number; pasid: "rid" | number }[] = [];

/** The smallest LOG2SIZE whose queue holds every recorded slot (at least 1). */
function inferredLog2size(recording: CmdqRecording): number {
  let highest = 0;
  for (const c of recording.commands) highest = Math.max(highest, c.slot);
  return Math.max(1, Math.ceil(Math.log2(highest + 1)));
}
