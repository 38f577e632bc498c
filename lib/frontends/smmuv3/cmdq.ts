/**
 * A register-level model of an emulated SMMUv3 command queue (CMDQ_BASE/PROD/CONS, GERROR/GERRORN) that turns the
 * guest's commands into relay requests. The VMM forwards MMIO writes and gives guest memory.
 *
 * One PROD write is one relay window: every command from CONS to PROD is decoded and queued, the queue is
 * drained once, then each CMD_SYNC completes in order (MSI write for CS=IRQ). TLBIs name ASIDs, which only the
 * guest's context descriptors tie to PASIDs: the VMM's `asidUsers` hook answers which (domain, PASID) use an
 * ASID. An unknown or malformed command stops the queue with CONS at it, CONS.ERR = CERROR_ILL and GERROR.CMDQ_ERR
 * toggled, until the guest acknowledges through GERRORN. A command whose host invalidation failed is reported
 * the same way (CERROR_ILL at that command): iommu-relay's documented choice, since SMMUv3 has no "host failed".
 *
 * @module
 */
import type { PasidOrRid } from "../../request/request.ts";
import { PAGE_SPACE } from "../../request/request.ts";
import type { GuestMemory } from "../vtd/queue.ts";
import { type RelaySink, RelayWindow, type WaitCompleter } from "../window.ts";
import { decodeSmmuCommand, type SmmuCommand, SmmuCommandError, SmmuCommandScratch } from "./commands.ts";

/** CMDQ_CONS.ERR values. */
export const CERROR = { NONE: 0, ILL: 1, ABT: 2, ATC_INV_SYNC: 3 } as const;
/** GERROR.CMDQ_ERR. */
export const GERROR_CMDQ_ERR = 1;

/** Guest-visible side effects and guest-table knowledge the VMM provides (commands handed to a hook may be reused). */
export interface SmmuQueueHooks {
  /** Which (domain, PASID) use this ASID in the guest's CDs (PASID "rid" = SSID 0 / no PASID). */
  asidUsers(asid: number): readonly { domain: number; pasid: PasidOrRid }[];
  /** Every guest domain behind this vSMMU (for NH_ALL and NH_VAA). */
  domains(): readonly number[];
  /** CFGI_*: the guest changed an STE or CD; re-read them (binds). */
  configChanged?(command: SmmuCommand & { op: "cfgi-ste" | "cfgi-all" | "cfgi-cd" | "cfgi-cd-all" }): void;
  /** CMD_SYNC with CS=SEV. */
  sev?(): void;
  /** PRI_RESP and RESUME (the fault path). */
  faultResponse?(command: SmmuCommand & { op: "pri-resp" | "resume" }): void;
}

/** What one PROD write did (a successful write's result object is reused: read it before the next one). */
export interface ProdResult {
  readonly processed: number;
  readonly syncsCompleted: number;
  readonly error?: { readonly index: number; readonly reason: string };
}

/**
 * One guest SMMUv3 command queue.
 *
 * @example
 * ```ts
 * import { SmmuCommandQueue } from "./cmdq.ts";
 * import { RelayQueue } from "../../relay/queue.ts";
 * import { ModelHost } from "../../host/model.ts";
 * const ram = new Uint8Array(1 << 16);
 * const memory = { read: (a: number, n: number) => ram.slice(a, a + n), write: (a: number, b: Uint8Array) => ram.set(b, a) };
 * const host = new ModelHost();
 * const relay = new RelayQueue(host);
 * relay.bind(1, 3, { targetId: host.createTarget("vtd-s1"), format: "vtd-s1" });
 * const cmdq = new SmmuCommandQueue(memory, relay, { asidUsers: () => [{ domain: 1, pasid: 3 }], domains: () => [1] });
 * cmdq.writeBase(0x1000 | 8); // 256 commands at 0x1000
 * const v = new DataView(ram.buffer, 0x1000);
 * v.setUint32(0, 0x11, true); v.setUint32(4, 9 << 16, true); // TLBI_NH_ASID 9
 * v.setUint32(16, 0x46, true); // CMD_SYNC
 * console.log(cmdq.writeProd(2)); // { processed: 2, syncsCompleted: 1 }
 * ```
 */
export class SmmuCommandQueue {
  base = 0;
  log2size = 0;
  /** PROD and CONS as the registers hold them (index, wrap bit at log2size; CONS.ERR in [30:24]). */
  prod = 0;
  cons = 0;
  gerror = 0;
  gerrorn = 0;

  readonly #window: RelayWindow;

  constructor(readonly memory: GuestMemory, readonly sink: RelaySink, readonly hooks: SmmuQueueHooks) {
    const completer: WaitCompleter = {
      completeWait: (flags, data, address) => this.#completeSync(flags, data, address),
    };
    this.#window = new RelayWindow(sink, completer);
  }

  /** CMDQ_BASE: address [51:5], LOG2SIZE [4:0]. Resets PROD and CONS. */
  writeBase(value: number): void {
    this.log2size = Math.min(value % 32, 19);
    this.base = Math.floor(value / 32) * 32 % 2 ** 52;
    this.prod = 0;
    this.cons = 0;
  }

  /** GERRORN write: acknowledging CMDQ_ERR lets the queue run again from CONS. */
  writeGerrorn(value: number): ProdResult | undefined {
    this.gerrorn = value;
    if (!this.#stalled()) {
      this.cons &= ~(0x7f << 24);
      return this.process();
    }
    return undefined;
  }

  /** CMDQ_PROD write: the doorbell. */
  writeProd(value: number): ProdResult {
    this.prod = value & ((2 << this.log2size) - 1);
    return this.process();
  }

  #stalled(): boolean {
    return ((this.gerror ^ this.gerrorn) & GERROR_CMDQ_ERR) !== 0;
  }

  #error(index: number, wrap: number, reason: string, processed: number, syncs: number): ProdResult {
    this.cons = (CERROR.ILL << 24) | wrap | index;
    this.gerror ^= GERROR_CMDQ_ERR;
    return { processed, syncsCompleted: syncs, error: { index, reason } };
  }

  process(): ProdResult {
    if (this.#stalled()) {
      return {
        processed: 0,
        syncsCompleted: 0,
        error: { index: this.cons & this.#mask(), reason: "CMDQ_ERR pending" },
      };
    }
    const entries = 1 << this.log2size;
    const mask = this.#mask();
    const wrapBit = entries;
    const start = this.cons & ((wrapBit << 1) - 1); // index + wrap
    let cursor = start;
    const end = this.prod;
    const window = this.#window;
    window.begin();
    let processed = 0;
    // Queue order from CONS, across the wrap: position = (cursor - start) mod 2 * entries.
    while (cursor !== end) {
      const position = (cursor - start + 2 * entries) % (2 * entries);
      let c: SmmuCommand;
      try {
        const gpa = this.base + (cursor & mask) * 16;
        if (this.memory.readInto) this.memory.readInto(gpa, this.#bytes);
        else this.#bytes.set(this.memory.read(gpa, 16));
        c = decodeSmmuCommand(this.#bytes, 0, this.#scratch);
      } catch (e) {
        const failedAt = window.settle();
        if (failedAt >= 0) return this.#stop(start, failedAt, HOST_FAILURE, processed);
        const reason = e instanceof SmmuCommandError ? e.message : `command unreadable: ${(e as Error).message}`;
        return this.#stop(start, position, reason, processed);
      }
      this.#submitRequests(c, position);
      if (c.op === "sync") {
        window.wait(position, c.cs === "irq" ? 1 : c.cs === "sev" ? 2 : 0, c.msiData, c.msiAddress);
      } else if (c.op === "cfgi-ste" || c.op === "cfgi-all" || c.op === "cfgi-cd" || c.op === "cfgi-cd-all") {
        const failedAt = window.settle();
        if (failedAt >= 0) return this.#stop(start, failedAt, HOST_FAILURE, processed);
        this.hooks.configChanged?.(c);
      } else if (c.op === "pri-resp" || c.op === "resume") this.hooks.faultResponse?.(c);
      cursor = (cursor + 1) % (2 * entries);
      processed++;
    }
    const failedAt = window.settle();
    if (failedAt >= 0) return this.#stop(start, failedAt, HOST_FAILURE, processed);
    this.cons = end;
    const result = this.#result;
    result.processed = processed;
    result.syncsCompleted = window.completed;
    return result;
  }

  /** Stop with CERROR_ILL at queue position `position` of this PROD write. */
  #stop(start: number, position: number, reason: string, processed: number): ProdResult {
    const entries = 1 << this.log2size;
    const at = (start + position) % (2 * entries);
    return this.#error(at & this.#mask(), at & entries, reason, processed, this.#window.completed);
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

  /** A CMD_SYNC's completion: flags 1 = MSI write (CS=IRQ), 2 = SEV. */
  #completeSync(flags: number, data: number, address: number): void {
    if (flags === 1 && address !== 0) {
      this.#msiView.setUint32(0, data, true);
      this.memory.write(address, this.#msi);
    } else if (flags === 2) this.hooks.sev?.();
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
    this.#window.submit(r, position);
  }

  /** Queue the relay requests a command stands for, one per (domain, PASID) its ASID reaches. */
  #submitRequests(c: SmmuCommand, position: number): void {
    const window = this.#window;
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

const HOST_FAILURE = "host invalidation failed or sync MSI not writable";

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
