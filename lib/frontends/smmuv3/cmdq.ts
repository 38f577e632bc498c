/**
 * A register-level model of an emulated SMMUv3 command queue (CMDQ_BASE/PROD/CONS, GERROR/GERRORN) that turns the
 * guest's commands into relay requests. The VMM forwards MMIO writes and gives guest memory.
 *
 * One PROD write is one relay window: every command from CONS to PROD is decoded and queued, the queue is drained,
 * then each CMD_SYNC completes in order — CONS moves past it first, then its signal (an MSI write of MSIData for
 * CS=SIG_IRQ with an MSI address, the wired interrupt for SIG_IRQ without one, an event for SIG_SEV, nothing for
 * SIG_NONE). A PROD write with more commands than the relay takes at once (a queue has up to 2^19) is drained in
 * slices of `drainEvery` commands, CONS moving at each slice, so any architected queue is processed whole.
 *
 * TLBIs name ASIDs, which only the guest's context descriptors tie to PASIDs: the VMM's `asidUsers` hook answers
 * which (domain, PASID) use an ASID.
 *
 * Errors, and why each is the one chosen (see docs/frontends-smmuv3-virtio.md):
 * - an unknown or malformed command (the guest's fault) stops the queue with CONS at it, CONS.ERR = CERROR_ILL and
 *   GERROR.CMDQ_ERR toggled, until the guest acknowledges through GERRORN. Linux then replaces the command with a
 *   CMD_SYNC: the guest's own command is dropped, which is right for a command that means nothing.
 * - a host failure (the relay's invalidation failed, the sink or a hook threw) and a command fetch from memory that
 *   is not guest RAM stop the queue with CERROR_ABT at the first command not known complete. Linux retries the
 *   command after CERROR_ABT ("retrying command fetch"), so the invalidation is sent again rather than skipped; the
 *   syncs after it have not completed, so the guest never believes a page invalidated that is not. Retries are
 *   bounded: after `maxHostRetries` consecutive failures at the same command the SMMU enters service failure mode
 *   (GERROR.SFM_ERR), on which Linux disables the SMMU: the guest stops rather than losing the invalidation.
 * - an MSI write that does not reach guest RAM toggles GERROR.MSI_CMDQ_ABT_ERR; the CMD_SYNC is complete (CONS has
 *   moved past it).
 *
 * Nothing a guest writes, and nothing the sink throws, escapes a register write: the model stays consistent for
 * the next PROD write.
 *
 * @module
 */
import type { PasidOrRid } from "../../request/request.ts";
import { PAGE_SPACE } from "../../request/request.ts";
import type { GuestMemory } from "../../memory/guest_memory.ts";
import { type RelaySink, RelayWindow, type WaitCompleter } from "../window.ts";
import { decodeSmmuCommand, type SmmuCommand, SmmuCommandScratch } from "./commands.ts";
import { QueueBaseRegister, register32 } from "./outq.ts";
import { SnapshotFields as F } from "../../device/snapshot.ts";

/** The command queue in a snapshot (docs/snapshot.md): its registers and the retry state behind SFM_ERR. */
export interface SmmuCmdqState {
  /** CMDQ_BASE as written, a `0x` hex string (a 64-bit register). */
  readonly base: string;
  /** CMDQ_PROD and CMDQ_CONS (with CONS.ERR). */
  readonly prod: number;
  /** CMDQ_CONS: index, wrap, ERR. */
  readonly cons: number;
  /** SMMU_GERROR and SMMU_GERRORN. */
  readonly gerror: number;
  /** SMMU_GERRORN as the guest last wrote it. */
  readonly gerrorn: number;
  /** In service failure mode. */
  readonly serviceFailure: boolean;
  /** The position of the last host failure (-1: none) and how many times in a row it failed there. */
  readonly failedAt: number;
  /** Consecutive host failures at `failedAt`. */
  readonly failuresInARow: number;
}

/** CMDQ_CONS.ERR values. */
export const CERROR = { NONE: 0, ILL: 1, ABT: 2, ATC_INV_SYNC: 3 } as const;
/** GERROR.CMDQ_ERR. */
export const GERROR_CMDQ_ERR = 1;
/** GERROR.MSI_CMDQ_ABT_ERR: a CMD_SYNC's MSI write was aborted. */
export const GERROR_MSI_CMDQ_ABT_ERR = 1 << 4;
/** GERROR.SFM_ERR: the SMMU entered service failure mode. */
export const GERROR_SFM_ERR = 1 << 8;

/** Guest-visible side effects and guest-table knowledge the VMM provides (commands handed to a hook may be reused). */
export interface SmmuQueueHooks {
  /** Which (domain, PASID) use this ASID in the guest's CDs (PASID "rid" = SSID 0 / no PASID). */
  asidUsers(asid: number): readonly { domain: number; pasid: PasidOrRid }[];
  /** Every guest domain behind this vSMMU (for NH_ALL and NH_VAA). */
  domains(): readonly number[];
  /** CFGI_*: the guest changed an STE or CD; re-read them (binds). */
  configChanged?(command: SmmuCommand & { op: "cfgi-ste" | "cfgi-all" | "cfgi-cd" | "cfgi-cd-all" }): void;
  /** CMD_SYNC with CS=SEV is complete (CONS is past it). */
  sev?(): void;
  /** CMD_SYNC with CS=SIG_IRQ and no MSI (MSIAddress 0, or an SMMU without MSIs) is complete: the wired interrupt. */
  syncInterrupt?(): void;
  /** GERROR changed (an error was raised): the SMMU's gerror interrupt. */
  gerrorInterrupt?(): void;
  /** PRI_RESP and RESUME (the fault path). */
  faultResponse?(command: SmmuCommand & { op: "pri-resp" | "resume" }): void;
}

/** Queue options. */
export interface SmmuQueueOptions {
  /** Consecutive host failures at one command before service failure mode (default 8). */
  readonly maxHostRetries?: number;
  /** Commands per relay drain within one PROD write (default 4096; the relay takes at most 65,536 waits). */
  readonly drainEvery?: number;
  /** SMMU_IDR0.MSI: whether CMD_SYNC's SIG_IRQ writes an MSI (default true); without, it raises the wired interrupt. */
  readonly msi?: boolean;
}

/** What one PROD write did (a successful write's result object is reused: read it before the next one). */
export interface ProdResult {
  /** Commands taken from the queue by this write (decoded and acted on), up to the one it stopped at. */
  readonly processed: number;
  /** CMD_SYNCs this write completed (CONS moved past them, their signal given). */
  readonly syncsCompleted: number;
  /**
   * Why the write stopped short of PROD: `index` is the queue slot (wrap bit dropped) CONS stays at, `reason` says
   * why, `cerror` is the CMDQ_CONS.ERR value raised ({@linkcode CERROR}). Without `cerror` nothing was raised: service
   * failure mode, a CMDQ_ERR not yet acknowledged, or a PROD more than the queue's size ahead of CONS.
   */
  readonly error?: { readonly index: number; readonly reason: string; readonly cerror?: number };
}

/**
 * One guest SMMUv3 command queue.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { SmmuCommandQueue } from "./cmdq.ts";
 * import { RelayQueue } from "../../relay/queue.ts";
 * import { ModelHost } from "../../host/model.ts";
 * const ram = new Uint8Array(1 << 16);
 * const memory = { read: (a: number, n: number) => ram.slice(a, a + n), write: (a: number, b: Uint8Array) => ram.set(b, a) };
 * const host = new ModelHost();
 * const relay = new RelayQueue(host);
 * relay.bind(1, 3, { targetId: host.createTarget("vtd-s1"), format: "vtd-s1" });
 * const cmdq = new SmmuCommandQueue(memory, relay, { asidUsers: () => [{ domain: 1, pasid: 3 }], domains: () => [1] });
 * cmdq.writeBase(0x4000_0000_0000_1008n); // RA | 256 commands at 0x1000
 * const v = new DataView(ram.buffer, 0x1000);
 * v.setUint32(0, 0x11, true); v.setUint32(4, 9 << 16, true); // TLBI_NH_ASID 9
 * v.setUint32(16, 0x46, true); // CMD_SYNC
 * assert.deepEqual(cmdq.writeProd(2), { processed: 2, syncsCompleted: 1 });
 * assert.equal(cmdq.cons, 2);
 * ```
 */
export class SmmuCommandQueue {
  /** The queue's guest-physical base address, from CMDQ_BASE.ADDR (aligned down to the queue's size in bytes). */
  base = 0;
  /** CMDQ_BASE.LOG2SIZE: the queue holds 2^log2size 16-byte commands. */
  log2size = 0;
  /** CMDQ_PROD as the guest last wrote it: index in the low log2size bits, wrap bit at bit log2size. */
  prod = 0;
  /** CMDQ_CONS as the SMMU holds it: index and wrap bit as in PROD, CONS.ERR (a {@linkcode CERROR}) in bits 30:24. */
  cons = 0;
  /**
   * SMMU_GERROR: each error bit ({@linkcode GERROR_CMDQ_ERR}, {@linkcode GERROR_MSI_CMDQ_ABT_ERR},
   * {@linkcode GERROR_SFM_ERR}) toggles when raised; an error is active while it differs from GERRORN.
   */
  gerror = 0;
  /** SMMU_GERRORN as the guest last wrote it: toggling a bit to match GERROR acknowledges that error. */
  gerrorn = 0;
  /** The CMDQ_BASE register, exactly as written. */
  readonly baseRegister: QueueBaseRegister = new QueueBaseRegister(16);
  /**
   * Counters: `hostFailures` CERROR_ABT stops (a failed invalidation, an aborted command fetch, an exception);
   * `sinkExceptions` the sink or a hook throwing; `hookExceptions` a signal hook (sev, syncInterrupt,
   * gerrorInterrupt) throwing; `msiAborts` CMD_SYNC MSI writes outside guest RAM; `slices` drains inside one PROD
   * write (at every `drainEvery` commands or relay requests).
   */
  readonly telemetry = { hostFailures: 0, sinkExceptions: 0, hookExceptions: 0, msiAborts: 0, slices: 0 };

  #window: RelayWindow;
  readonly #completer: WaitCompleter;
  readonly #maxHostRetries: number;
  readonly #drainEvery: number;
  readonly #msiCapable: boolean;
  /** The queue position (index + wrap) of the last host failure and how many times in a row it failed there. */
  #failedAt = -1;
  #failuresInARow = 0;
  /** Service failure mode: sticky until reset (acknowledging SFM_ERR in GERRORN does not leave it). */
  #serviceFailure = false;
  /** This PROD write's start (CONS at the doorbell) and its CMD_SYNCs' positions, completed in order. */
  #start = 0;
  readonly #syncPositions: number[] = [];
  #syncsQueued = 0;
  #syncsCompleted = 0;
  #requestsSinceDrain = 0;

  /**
   * A queue reading commands from `memory` (guest RAM), queueing their invalidations on `sink` (a relay queue or a
   * plugin), with the VMM's `hooks` for what only it knows or does. Registers start at their reset values (zero).
   */
  constructor(
    readonly memory: GuestMemory,
    readonly sink: RelaySink,
    readonly hooks: SmmuQueueHooks,
    options: SmmuQueueOptions = {},
  ) {
    this.#completer = {
      completeWait: (flags, data, address) => this.#completeSync(flags, data, address),
    };
    this.#window = new RelayWindow(sink, this.#completer);
    this.#maxHostRetries = Math.max(1, options.maxHostRetries ?? 8);
    this.#drainEvery = Math.max(1, Math.min(options.drainEvery ?? 4096, 32_768));
    this.#msiCapable = options.msi ?? true;
  }

  /**
   * CMDQ_BASE (64-bit, as a bigint or a safe integer): ADDR [51:5], LOG2SIZE [4:0], RA [62]. Resets PROD and CONS.
   * False, and nothing changed, for a number above 2^53 (pass a bigint or the halves); never throws.
   */
  writeBase(value: number | bigint): boolean {
    if (!this.baseRegister.write(value)) return false;
    this.#applyBase();
    return true;
  }

  /** CMDQ_BASE bits 31:0, as a 32-bit MMIO write. */
  writeBaseLow(value: number | bigint): void {
    this.baseRegister.low = register32(value);
    this.#applyBase();
  }

  /** CMDQ_BASE bits 63:32, as a 32-bit MMIO write. */
  writeBaseHigh(value: number | bigint): void {
    this.baseRegister.high = register32(value);
    this.#applyBase();
  }

  #applyBase(): void {
    const b = this.baseRegister.decode();
    this.base = b.address;
    this.log2size = b.log2size;
    this.prod = 0;
    this.cons = 0;
    this.#failedAt = -1;
    this.#failuresInARow = 0;
  }

  /**
   * The registers a snapshot keeps. A PROD write is processed whole inside `writeProd`: between them CONS is where
   * the queue stands (commands before it were relayed and their syncs signalled; from it on, not yet).
   */
  saveState(): SmmuCmdqState {
    return {
      base: `0x${this.baseRegister.value.toString(16)}`,
      prod: this.prod,
      cons: this.cons,
      gerror: this.gerror,
      gerrorn: this.gerrorn,
      serviceFailure: this.#serviceFailure,
      failedAt: this.#failedAt,
      failuresInARow: this.#failuresInARow,
    };
  }

  /** Check a snapshot's registers without changing anything; the function returned sets them (cannot fail). */
  prepareRestore(json: unknown, path = "smmuCmdq"): () => void {
    const o = F.object(json, path);
    const base = F.u64(o.base, `${path}.base`);
    const log2size = Math.min(Number(base & 31n), 19);
    const prod = F.u32(o.prod, `${path}.prod`), cons = F.u32(o.cons, `${path}.cons`);
    if (prod >= 2 << log2size) F.malformed(`${path}.prod`, "an index and wrap bit of the queue CMDQ_BASE sizes");
    if ((cons & ~(0x7f << 24)) >= 2 << log2size) F.malformed(`${path}.cons`, "an index, wrap bit and ERR");
    const gerror = F.u32(o.gerror, `${path}.gerror`), gerrorn = F.u32(o.gerrorn, `${path}.gerrorn`);
    const serviceFailure = F.boolean(o.serviceFailure, `${path}.serviceFailure`);
    const failedAt = o.failedAt === -1 ? -1 : F.u32(o.failedAt, `${path}.failedAt`);
    const failuresInARow = F.u32(o.failuresInARow, `${path}.failuresInARow`);
    return () => {
      this.writeBase(base);
      this.prod = prod;
      this.cons = cons;
      this.gerror = gerror;
      this.gerrorn = gerrorn;
      this.#serviceFailure = serviceFailure;
      this.#failedAt = failedAt;
      this.#failuresInARow = failuresInARow;
    };
  }

  /** Whether the SMMU is in service failure mode (it processes no command until {@linkcode SmmuCommandQueue.reset}). */
  get failed(): boolean {
    return this.#serviceFailure;
  }

  /** A device reset: registers to their reset values, service failure mode left. */
  reset(): void {
    this.baseRegister.low = this.baseRegister.high = 0;
    this.#applyBase();
    this.gerror = this.gerrorn = 0;
    this.#serviceFailure = false;
  }

  /** GERRORN write: acknowledging CMDQ_ERR lets the queue run again from CONS. Never throws. */
  writeGerrorn(value: number | bigint): ProdResult | undefined {
    this.gerrorn = register32(value);
    if (!this.#stalled() && !this.failed) {
      this.cons &= ~(0x7f << 24);
      return this.process();
    }
    return undefined;
  }

  /** CMDQ_PROD write: the doorbell. Never throws. */
  writeProd(value: number | bigint): ProdResult {
    this.prod = register32(value) & ((2 << this.log2size) - 1);
    return this.process();
  }

  #stalled(): boolean {
    return ((this.gerror ^ this.gerrorn) & GERROR_CMDQ_ERR) !== 0;
  }

  /** Process the commands from CONS to PROD (what a PROD write or an acknowledged error does). Never throws. */
  process(): ProdResult {
    if (this.failed) {
      return {
        processed: 0,
        syncsCompleted: 0,
        error: { index: this.cons & this.#mask(), reason: "service failure mode" },
      };
    }
    if (this.#stalled()) {
      return {
        processed: 0,
        syncsCompleted: 0,
        error: { index: this.cons & this.#mask(), reason: "CMDQ_ERR pending" },
      };
    }
    const entries = 1 << this.log2size;
    const start = this.#start = this.cons & ((entries << 1) - 1); // index + wrap
    if ((this.prod - start + 2 * entries) % (2 * entries) > entries) {
      // PROD more than the queue's size ahead of CONS: a queue holding more commands than it has slots. There is no
      // CERROR for a register value (CERROR_ILL would make Linux skip the good command at CONS): nothing is taken
      // until the guest writes a PROD the queue can hold.
      return {
        processed: 0,
        syncsCompleted: 0,
        error: { index: start & (entries - 1), reason: "PROD beyond the queue" },
      };
    }
    this.#syncsQueued = this.#syncsCompleted = this.#requestsSinceDrain = 0;
    this.#window.begin();
    let processed = 0;
    /** Commands before this position are complete (drained, their syncs signalled). */
    let settled = 0;
    try {
      const mask = entries - 1;
      const end = this.prod;
      const window = this.#window;
      let cursor = start;
      let sinceDrain = 0;
      // Queue order from CONS, across the wrap: position = (cursor - start) mod 2 * entries.
      while (cursor !== end) {
        const position = (cursor - start + 2 * entries) % (2 * entries);
        const gpa = this.base + (cursor & mask) * 16;
        try {
          if (this.memory.readInto) this.memory.readInto(gpa, this.#bytes);
          else this.#bytes.set(this.memory.read(gpa, 16));
        } catch (e) {
          // An abort on command fetch: architecturally CERROR_ABT, which the guest retries.
          const failedAt = this.#settle();
          if (failedAt >= 0) return this.#hostFailure(failedAt, processed);
          return this.#stop(position, CERROR.ABT, `command fetch aborted: ${(e as Error)?.message}`, processed, true);
        }
        let c: SmmuCommand;
        try {
          c = decodeSmmuCommand(this.#bytes, 0, this.#scratch);
        } catch (e) {
          const failedAt = this.#settle();
          if (failedAt >= 0) return this.#hostFailure(failedAt, processed);
          return this.#stop(position, CERROR.ILL, (e as Error).message, processed, false);
        }
        this.#submitRequests(c, position);
        if (c.op === "sync") {
          const flags = c.cs === "irq"
            ? (this.#msiCapable && c.msiAddress !== 0 ? SYNC_MSI : SYNC_IRQ)
            : c.cs === "sev"
            ? SYNC_SEV
            : SYNC_NONE;
          this.#syncPositions[this.#syncsQueued++] = position;
          window.wait(position, flags, c.msiData, c.msiAddress);
        } else if (c.op === "cfgi-ste" || c.op === "cfgi-all" || c.op === "cfgi-cd" || c.op === "cfgi-cd-all") {
          // The VMM re-reads the guest's tables after every invalidation before this one reached the host.
          const failedAt = this.#settle();
          if (failedAt >= 0) return this.#hostFailure(failedAt, processed);
          settled = position;
          this.hooks.configChanged?.(c);
        } else if (c.op === "pri-resp" || c.op === "resume") this.hooks.faultResponse?.(c);
        cursor = (cursor + 1) % (2 * entries);
        processed++;
        if (++sinceDrain >= this.#drainEvery || this.#requestsSinceDrain >= this.#drainEvery) {
          // An internal cap, not the guest's: drain what is queued, move CONS, and go on.
          const failedAt = this.#settle();
          if (failedAt >= 0) return this.#hostFailure(failedAt, processed);
          settled = position + 1;
          this.cons = cursor;
          this.telemetry.slices++;
          sinceDrain = this.#requestsSinceDrain = 0;
        }
      }
      const failedAt = this.#settle();
      if (failedAt >= 0) return this.#hostFailure(failedAt, processed);
      this.cons = end;
      this.#failedAt = -1;
      this.#failuresInARow = 0;
      const result = this.#result;
      result.processed = processed;
      result.syncsCompleted = this.#window.completed;
      return result;
    } catch (e) {
      // The sink or a hook threw (a relay limit, a backend bug): nothing escapes into the MMIO handler. The window
      // may hold half a doorbell: start a new one (the relay may still send what it queued: over-invalidation, safe).
      this.telemetry.sinkExceptions++;
      const completed = this.#window.completed;
      this.#window = new RelayWindow(this.sink, this.#completer);
      this.#window.completed = completed;
      // Commands before the last completed sync or drained slice are done; restart from the first that is not.
      const done = this.#syncsCompleted > 0
        ? Math.max(settled, this.#syncPositions[this.#syncsCompleted - 1] + 1)
        : settled;
      return this.#stop(done, CERROR.ABT, `host failure: ${(e as Error)?.message ?? String(e)}`, processed, true);
    }
  }

  /** Drain the window; the earliest failing position, or -1. */
  #settle(): number {
    const failedAt = this.#window.settle();
    this.#syncsQueued = this.#syncsCompleted = 0;
    return failedAt;
  }

  #hostFailure(position: number, processed: number): ProdResult {
    return this.#stop(position, CERROR.ABT, HOST_FAILURE, processed, true);
  }

  /**
   * Stop with `cerror` at queue position `position` of this PROD write. A host-side stop (CERROR_ABT) counts toward
   * service failure mode when it repeats at the same command.
   */
  #stop(position: number, cerror: number, reason: string, processed: number, host: boolean): ProdResult {
    const entries = 1 << this.log2size;
    const at = (this.#start + position) % (2 * entries);
    this.cons = (cerror << 24) | at;
    if (host) {
      this.telemetry.hostFailures++;
      this.#failuresInARow = at === this.#failedAt ? this.#failuresInARow + 1 : 1;
      this.#failedAt = at;
      if (this.#failuresInARow >= this.#maxHostRetries) {
        this.#serviceFailure = true;
        this.gerror ^= GERROR_SFM_ERR;
        reason = `service failure mode after ${this.#failuresInARow} failures: ${reason}`;
      }
    }
    this.gerror ^= GERROR_CMDQ_ERR;
    this.#signal(this.hooks.gerrorInterrupt);
    return { processed, syncsCompleted: this.#window.completed, error: { index: at & (entries - 1), reason, cerror } };
  }

  // Per PROD write, reused so that one allocates nothing once these have grown.
  readonly #scratch = new SmmuCommandScratch();
  readonly #bytes = new Uint8Array(16);
  readonly #result = { processed: 0, syncsCompleted: 0 };
  readonly #msi = new Uint8Array(4);
  readonly #msiView = new DataView(this.#msi.buffer);
  readonly #asidAll = { op: "invalidate" as const, domain: 0, scope: { kind: "all" as const }, noPasid: true };
  readonly #pasidAll = { op: "invalidate" as const, domain: 0, scope: { kind: "pasid" as const, pasid: 0 } };
  readonly #ridRange = {
    op: "invalidate" as const,
    domain: 0,
    scope: { kind: "range" as const, firstPage: 0, pages: 1 },
    noPasid: true,
    leaf: false,
    hints: { ttl: 0 },
  };
  readonly #pasidRange = {
    op: "invalidate" as const,
    domain: 0,
    scope: { kind: "pasid-range" as const, pasid: 0, firstPage: 0, pages: 1 },
    leaf: false,
    hints: { ttl: 0 },
  };
  readonly #vaaRange = {
    op: "invalidate" as const,
    domain: 0,
    scope: { kind: "range" as const, firstPage: 0, pages: 1 },
    leaf: false,
    hints: { ttl: 0 },
  };
  readonly #all = { op: "invalidate" as const, domain: 0, scope: { kind: "all" as const } };

  #mask(): number {
    return (1 << this.log2size) - 1;
  }

  /**
   * A CMD_SYNC's completion, in queue order: CONS moves past it first (a guest polling CONS sees it exactly when its
   * commands are done), then its signal. An MSI that does not reach guest RAM is MSI_CMDQ_ABT_ERR, not a lost sync.
   */
  #completeSync(flags: number, data: number, address: number): void {
    const entries = 1 << this.log2size;
    const position = this.#syncPositions[this.#syncsCompleted++];
    this.cons = (this.#start + position + 1) % (2 * entries);
    if (flags === SYNC_MSI) {
      this.#msiView.setUint32(0, data, true);
      try {
        this.memory.write(address, this.#msi);
      } catch {
        this.telemetry.msiAborts++;
        this.gerror ^= GERROR_MSI_CMDQ_ABT_ERR;
        this.#signal(this.hooks.gerrorInterrupt);
      }
    } else if (flags === SYNC_SEV) this.#signal(this.hooks.sev);
    else if (flags === SYNC_IRQ) this.#signal(this.hooks.syncInterrupt);
  }

  /** Call a VMM signal hook: the sync is complete whatever the hook does, so its exception is counted, not thrown. */
  #signal(hook: (() => void) | undefined): void {
    if (!hook) return;
    try {
      hook.call(this.hooks);
    } catch {
      this.telemetry.hookExceptions++;
    }
  }

  /** Queue `r` — one of the reused range requests — for `domain`, with the pages and hints of TLBI `c`. */
  #submitRange(
    r: ReusedRange,
    domain: number,
    c: SmmuCommand & { op: "tlbi-nh-va" | "tlbi-nh-vaa" },
    position: number,
  ): void {
    r.domain = domain;
    r.scope.firstPage = c.page;
    r.scope.pages = Math.min(c.pages, PAGE_SPACE - c.page);
    r.leaf = c.leaf;
    r.hints.ttl = c.ttl;
    this.#requestsSinceDrain++;
    this.#window.submit(r, position);
  }

  /** Queue the relay requests a command stands for, one per (domain, PASID) its ASID reaches. */
  #submitRequests(c: SmmuCommand, position: number): void {
    const window = this.#window;
    this.#requestsSinceDrain++;
    switch (c.op) {
      case "tlbi-nh-all": {
        const r = this.#all, domains = this.hooks.domains();
        for (let i = 0; i < domains.length; i++) {
          r.domain = domains[i];
          window.submit(r, position);
        }
        return;
      }
      case "tlbi-nh-asid": {
        const users = this.hooks.asidUsers(c.asid);
        for (let i = 0; i < users.length; i++) {
          const { domain, pasid } = users[i];
          if (pasid === "rid") {
            this.#asidAll.domain = domain;
            window.submit(this.#asidAll, position);
          } else {
            this.#pasidAll.domain = domain;
            this.#pasidAll.scope.pasid = pasid;
            window.submit(this.#pasidAll, position);
          }
        }
        return;
      }
      case "tlbi-nh-va": {
        const users = this.hooks.asidUsers(c.asid);
        for (let i = 0; i < users.length; i++) {
          const { domain, pasid } = users[i];
          if (pasid !== "rid") this.#pasidRange.scope.pasid = pasid;
          this.#submitRange(pasid === "rid" ? this.#ridRange : this.#pasidRange, domain, c, position);
        }
        return;
      }
      case "tlbi-nh-vaa": {
        const domains = this.hooks.domains();
        for (let i = 0; i < domains.length; i++) this.#submitRange(this.#vaaRange, domains[i], c, position);
        return;
      }
      default:
        // ATC_INV: the relay sends ATC_INV with every TLBI for ATS devices itself; PREFETCH: nothing to do.
        return;
    }
  }
}

const HOST_FAILURE = "host invalidation failed";
/** How a CMD_SYNC signals completion (the window's wait flags). */
const SYNC_NONE = 0, SYNC_MSI = 1, SYNC_SEV = 2, SYNC_IRQ = 3;

/** The shape of the queue's reused range requests (mutable, unlike `Request`, which each of them is). */
interface ReusedRange {
  readonly op: "invalidate";
  domain: number;
  readonly scope:
    | { readonly kind: "range"; firstPage: number; pages: number }
    | { readonly kind: "pasid-range"; pasid: number; firstPage: number; pages: number };
  leaf: boolean;
  readonly hints: { ttl: number };
}
