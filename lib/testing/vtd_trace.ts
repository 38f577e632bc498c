/**
 * Replay of recorded VT-d invalidation queues ("guest-trace QI v1": every descriptor a real guest driver put in its
 * queue, one doorbell per IQT write) through a VMM's {@linkcode VtdInvalidationQueue}, doorbell by doorbell, with each
 * wait's status write reported at the moment the queue model writes it — so a VMM author can check, right then, that
 * everything before the wait reached the host.
 *
 * Format: `#` header lines, then `seq phase batch slot qw0 qw1 qw2 qw3 type origin key=value...` with the words in
 * hex (`-`: a 128-bit descriptor has no qw2/qw3; `?`: not observed, zero in the guest's queue).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseVtdQueueTrace, replayVtdQueueTrace } from "./vtd_trace.ts";
 * import { VtdInvalidationQueue } from "../frontends/vtd/queue.ts";
 * import { RelayQueue } from "../relay/queue.ts";
 * import { ModelHost } from "../host/model.ts";
 * const trace = parseVtdQueueTrace([
 *   "# guest-trace QI v1",
 *   "0 0 0 0 0000000000000004 0000000000000000 - - iec other g=global idx=0 im=0",
 *   "1 0 0 1 0000000200000025 00000000073b2804 - - wait other sw=1 sdata=0x2 saddr=0x73b2804",
 * ].join("\n"));
 * const statuses: number[] = [];
 * const result = replayVtdQueueTrace(trace, {
 *   queue: (memory) => new VtdInvalidationQueue(memory, new RelayQueue(new ModelHost())),
 *   onWaitStatus: (wait, data) => void statuses.push(data),
 * });
 * assert.equal(result.doorbells, 1);
 * assert.equal(result.waitsCompleted, 1);
 * assert.deepEqual(statuses, [2]);
 * ```
 *
 * @module
 */
import { FSTS, type GuestMemory, type VtdInvalidationQueue } from "../frontends/vtd/queue.ts";

/** One recorded descriptor. */
export interface VtdTraceDescriptor {
  /** 0-based index in queue order. */
  readonly seq: number;
  /** Workload phase (the recording's GT-MARK number; 0 = boot, before the first marker). */
  readonly phase: number;
  /** The doorbell (IQT write) it went out with. */
  readonly batch: number;
  /** The queue slot the guest wrote it to. */
  readonly slot: number;
  /** qw0..qw3 (qw2/qw3 0n for 128-bit descriptors and for words the recorder did not observe). */
  readonly words: readonly [bigint, bigint, bigint, bigint];
  /** The recorder's type label (cc, iotlb, devtlb, iec, wait, piotlb, pc, pdevtlb, t<N>). */
  readonly type: string;
  /** What made the guest send it (map, unmap, flush_all, other, ?). */
  readonly origin: string;
  /** The recorder's decoded fields (for reading only: a replay checks against the raw words). */
  readonly fields: Readonly<Record<string, string>>;
}

/** A parsed recording. */
export interface VtdQueueTrace {
  /** The `#` lines, without the `#`. */
  readonly header: readonly string[];
  /** Descriptor width the guest used: 256 in scalable mode (IQA.DW = 1), else 128. */
  readonly descriptorBits: 128 | 256;
  /** Every descriptor, in queue order. */
  readonly descriptors: readonly VtdTraceDescriptor[];
  /** Descriptors per doorbell, in order. */
  readonly doorbells: readonly (readonly VtdTraceDescriptor[])[];
}

/** A line that is not the format. */
export class VtdTraceFormatError extends Error {
  /** Always `"VtdTraceFormatError"`. */
  override name = "VtdTraceFormatError";
  /** `line` is 1-based; the message is `line <line>: <detail>`. */
  constructor(readonly line: number, detail: string) {
    super(`line ${line}: ${detail}`);
  }
}

const HEX = /^[0-9a-f]{1,16}$/i;

/** Parse a recording's text. */
export function parseVtdQueueTrace(text: string): VtdQueueTrace {
  const header: string[] = [];
  const descriptors: VtdTraceDescriptor[] = [];
  const doorbells: VtdTraceDescriptor[][] = [];
  let bits: 128 | 256 | undefined;
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i].trim();
    if (line === "") continue;
    if (line.startsWith("#")) {
      header.push(line);
      continue;
    }
    const f = line.split(" ");
    if (f.length < 10) throw new VtdTraceFormatError(i + 1, `${f.length} fields, want at least 10`);
    const [seq, phase, batch, slot] = f.slice(0, 4).map((x) => Number(x));
    if (![seq, phase, batch, slot].every((x) => Number.isInteger(x) && x >= 0)) {
      throw new VtdTraceFormatError(i + 1, "seq, phase, batch and slot must be non-negative integers");
    }
    const word = (s: string, name: string): bigint => {
      if (s === "-" || s === "?") return 0n;
      if (!HEX.test(s)) throw new VtdTraceFormatError(i + 1, `${name} ${s} is not hex`);
      return BigInt(`0x${s}`);
    };
    const lineBits = f[6] === "-" ? 128 : 256;
    if (bits !== undefined && bits !== lineBits) {
      throw new VtdTraceFormatError(i + 1, "128- and 256-bit descriptors mixed");
    }
    bits = lineBits;
    const fields: Record<string, string> = {};
    for (const kv of f.slice(10)) {
      const eq = kv.indexOf("=");
      if (eq > 0) fields[kv.slice(0, eq)] = kv.slice(eq + 1);
    }
    const d: VtdTraceDescriptor = {
      seq,
      phase,
      batch,
      slot,
      words: [word(f[4], "qw0"), word(f[5], "qw1"), word(f[6], "qw2"), word(f[7], "qw3")],
      type: f[8],
      origin: f[9],
      fields,
    };
    if (descriptors.length && d.batch < descriptors[descriptors.length - 1].batch) {
      throw new VtdTraceFormatError(i + 1, `batch ${d.batch} after batch ${descriptors.at(-1)!.batch}`);
    }
    descriptors.push(d);
    if (doorbells.length === 0 || doorbells[doorbells.length - 1][0].batch !== d.batch) doorbells.push([]);
    doorbells[doorbells.length - 1].push(d);
  }
  return { header, descriptorBits: bits ?? 128, descriptors, doorbells };
}

/** Read a recording from a file (gzip-compressed when its name ends in .gz). */
export async function readVtdQueueTrace(path: string | URL): Promise<VtdQueueTrace> {
  const file = await Deno.open(path);
  const stream = String(path).endsWith(".gz")
    ? file.readable.pipeThrough(new DecompressionStream("gzip"))
    : file.readable;
  return parseVtdQueueTrace(await new Response(stream).text());
}

/**
 * Guest memory for a replay: `ram` (guest-physical 0 up) where the VMM keeps its tables, and 4 KiB pages made on
 * first write everywhere else (the recorded queue and status addresses lie wherever the guest had them).
 */
export class SparseGuestMemory implements GuestMemory {
  readonly #pages = new Map<number, Uint8Array>();
  /** Memory with `ram` at guest-physical 0 and sparse pages above it. */
  constructor(readonly ram: Uint8Array = new Uint8Array(0)) {}

  #page(page: number): Uint8Array {
    let p = this.#pages.get(page);
    if (!p) this.#pages.set(page, p = new Uint8Array(4096));
    return p;
  }

  /** A copy of `length` bytes at `gpa`; unwritten pages read as zero; a RangeError past 2^52. */
  read(gpa: number, length: number): Uint8Array {
    const out = new Uint8Array(length);
    this.readInto(gpa, out);
    return out;
  }

  readInto(gpa: number, out: Uint8Array): void {
    if (!Number.isInteger(gpa) || gpa < 0 || gpa + out.length > 2 ** 52) throw new RangeError(`gpa ${gpa}`);
    if (gpa + out.length <= this.ram.length) return out.set(this.ram.subarray(gpa, gpa + out.length));
    for (let i = 0; i < out.length; i++) {
      const a = gpa + i;
      out[i] = a < this.ram.length ? this.ram[a] : (this.#pages.get(Math.floor(a / 4096))?.[a % 4096] ?? 0);
    }
  }

  /** Write `bytes` at `gpa`, into `ram` or pages made on first write; a RangeError past 2^52. */
  write(gpa: number, bytes: Uint8Array): void {
    if (!Number.isInteger(gpa) || gpa < 0 || gpa + bytes.length > 2 ** 52) throw new RangeError(`gpa ${gpa}`);
    for (let i = 0; i < bytes.length; i++) {
      const a = gpa + i;
      if (a < this.ram.length) this.ram[a] = bytes[i];
      else this.#page(Math.floor(a / 4096))[a % 4096] = bytes[i];
    }
  }
}

/** How to replay. */
export interface VtdReplayOptions {
  /** The VMM's queue model over `memory` (its sink wired as the VMM wires it). */
  queue(memory: GuestMemory): VtdInvalidationQueue;
  /** Guest memory (default: a {@linkcode SparseGuestMemory} without RAM). */
  readonly memory?: GuestMemory;
  /** Where the queue lives (default 0x7000_0000; must not overlap what the VMM keeps in memory). */
  readonly queueBase?: number;
  /** Before each doorbell: the guest changes its tables (e.g. for the invalidations in `doorbell`). */
  beforeDoorbell?(doorbell: readonly VtdTraceDescriptor[], index: number): void;
  /** A wait's status write, called just before the queue model's write lands: check coverage here. */
  onWaitStatus?(wait: VtdTraceDescriptor, data: number, doorbell: number): void;
}

/** What a replay did. */
export interface VtdReplayResult {
  /** IQT writes replayed. */
  readonly doorbells: number;
  /** Descriptors the queue consumed. */
  readonly descriptors: number;
  /** Wait descriptors among them. */
  readonly waits: number;
  /** Waits whose status write reached guest memory. */
  readonly waitsCompleted: number;
  /** Doorbells that ended in IQE, with why (the replay then skips to the tail, as a guest's error handler would). */
  readonly errors: readonly { readonly doorbell: number; readonly index: number; readonly reason: string }[];
  /** Exceptions out of the doorbell (a VMM's MMIO handler would have seen them): must be 0. */
  readonly exceptions: number;
}

const TYPE_WAIT = 5;

/** Replay `trace` doorbell by doorbell. */
export function replayVtdQueueTrace(trace: VtdQueueTrace, opts: VtdReplayOptions): VtdReplayResult {
  const size = trace.descriptorBits === 256 ? 32 : 16;
  let maxSlot = 0;
  for (const d of trace.descriptors) maxSlot = Math.max(maxSlot, d.slot);
  let qs = 0;
  while (qs < 7 && 2 ** qs * 4096 < (maxSlot + 1) * size) qs++;
  const entries = (2 ** qs * 4096) / size;
  const base = opts.queueBase ?? 0x7000_0000;
  const inner = opts.memory ?? new SparseGuestMemory();
  // Waits of the current doorbell whose status write is still due, by status address (in queue order).
  const due: VtdTraceDescriptor[] = [];
  let doorbellIndex = 0, waitsCompleted = 0;
  const memory: GuestMemory = {
    read: (gpa, n) => inner.read(gpa, n),
    readInto: (gpa, out) => inner.readInto ? inner.readInto(gpa, out) : out.set(inner.read(gpa, out.length)),
    write(gpa, bytes) {
      const k = bytes.length === 4 ? due.findIndex((w) => Number(w.words[1] & ~3n) === gpa) : -1;
      if (k >= 0) {
        const [wait] = due.splice(k, 1);
        waitsCompleted++;
        opts.onWaitStatus?.(wait, new DataView(bytes.buffer, bytes.byteOffset, 4).getUint32(0, true), doorbellIndex);
      }
      inner.write(gpa, bytes);
    },
  };
  const qi = opts.queue(memory);
  qi.writeIqa(base + (size === 32 ? 0x800 : 0) + qs);
  const errors: { doorbell: number; index: number; reason: string }[] = [];
  let exceptions = 0, waits = 0;
  const slot = new Uint8Array(size);
  const view = new DataView(slot.buffer);
  for (const doorbell of trace.doorbells) {
    due.length = 0;
    for (const d of doorbell) {
      for (let w = 0; w < size / 8; w++) view.setBigUint64(8 * w, d.words[w], true);
      inner.write(base + (d.slot % entries) * size, slot);
      const qw0 = d.words[0];
      const type = Number(qw0 & 0xfn) | (Number((qw0 >> 9n) & 7n) << 4);
      if (type === TYPE_WAIT) {
        waits++;
        if (qw0 & (1n << 5n)) due.push(d);
      }
    }
    opts.beforeDoorbell?.(doorbell, doorbellIndex);
    const tail = ((doorbell[doorbell.length - 1].slot + 1) % entries) * size;
    try {
      const r = qi.writeIqt(tail);
      if (r.error) {
        errors.push({ doorbell: doorbellIndex, index: r.error.index, reason: r.error.reason });
        qi.writeFsts(FSTS.IQE);
        qi.iqh = tail;
      }
    } catch {
      exceptions++;
      qi.writeFsts(FSTS.IQE);
      qi.iqh = tail;
    }
    doorbellIndex++;
  }
  return {
    doorbells: trace.doorbells.length,
    descriptors: trace.descriptors.length,
    waits,
    waitsCompleted,
    errors,
    exceptions,
  };
}
