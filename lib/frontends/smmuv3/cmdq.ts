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
import type { PasidOrRid, Request } from "../../core/request.ts";
import { PAGE_SPACE } from "../../core/request.ts";
import type { GuestMemory, RelaySink } from "../vtd/queue.ts";
import { decodeSmmuCommand, type SmmuCommand, SmmuCommandError } from "./commands.ts";

/** CMDQ_CONS.ERR values. */
export const CERROR = { NONE: 0, ILL: 1, ABT: 2, ATC_INV_SYNC: 3 } as const;
/** GERROR.CMDQ_ERR. */
export const GERROR_CMDQ_ERR = 1;

/** Guest-visible side effects and guest-table knowledge the VMM provides. */
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

/** What one PROD write did. */
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
 * import { RelayQueue } from "../../core/queue.ts";
 * import { ModelHost } from "../../model/host.ts";
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

  constructor(readonly memory: GuestMemory, readonly sink: RelaySink, readonly hooks: SmmuQueueHooks) {}

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
    let cursor = this.cons & ((wrapBit << 1) - 1); // index + wrap
    const end = this.prod;
    const origin = new Map<number, number>(); // request seq → cursor
    const syncs: { seq: number; cursor: number; c: SmmuCommand & { op: "sync" } }[] = [];
    let processed = 0, completed = 0;
    const order = (c: number) => (c - (this.cons & ((wrapBit << 1) - 1)) + 2 * entries) % (2 * entries);
    const settle = (): number | undefined => {
      const report = this.sink.drain();
      let failedAt: number | undefined;
      for (const f of report.failures) {
        const at = origin.get(f.seq);
        if (at !== undefined && (failedAt === undefined || order(at) < order(failedAt))) failedAt = at;
      }
      for (const s of syncs.splice(0)) {
        if (failedAt !== undefined && order(s.cursor) > order(failedAt)) continue;
        try {
          this.#completeSync(s.c);
        } catch {
          if (failedAt === undefined || order(s.cursor) < order(failedAt)) failedAt = s.cursor;
          continue;
        }
        completed++;
      }
      origin.clear();
      return failedAt;
    };
    const fail = (at: number, reason: string) => this.#error(at & mask, at & wrapBit, reason, processed, completed);
    while (cursor !== end) {
      let c: SmmuCommand;
      try {
        c = decodeSmmuCommand(this.memory.read(this.base + (cursor & mask) * 16, 16), 0);
      } catch (e) {
        const failedAt = settle();
        if (failedAt !== undefined) return fail(failedAt, "host invalidation failed or sync MSI not writable");
        return fail(cursor, e instanceof SmmuCommandError ? e.message : `command unreadable: ${(e as Error).message}`);
      }
      for (const r of this.#requests(c)) origin.set(this.sink.submit(r), cursor);
      if (c.op === "sync") syncs.push({ seq: this.sink.submit({ op: "sync" }), cursor, c });
      else if (c.op === "cfgi-ste" || c.op === "cfgi-all" || c.op === "cfgi-cd" || c.op === "cfgi-cd-all") {
        const failedAt = settle();
        if (failedAt !== undefined) return fail(failedAt, "host invalidation failed or sync MSI not writable");
        this.hooks.configChanged?.(c);
      } else if (c.op === "pri-resp" || c.op === "resume") this.hooks.faultResponse?.(c);
      cursor = (cursor + 1) % (2 * entries);
      processed++;
    }
    const failedAt = settle();
    if (failedAt !== undefined) return fail(failedAt, "host invalidation failed or sync MSI not writable");
    this.cons = end;
    return { processed, syncsCompleted: completed };
  }

  #mask(): number {
    return (1 << this.log2size) - 1;
  }

  #completeSync(c: SmmuCommand & { op: "sync" }): void {
    if (c.cs === "irq" && c.msiAddress !== 0) {
      const data = new Uint8Array(4);
      new DataView(data.buffer).setUint32(0, c.msiData, true);
      this.memory.write(c.msiAddress, data);
    } else if (c.cs === "sev") this.hooks.sev?.();
  }

  #requests(c: SmmuCommand): Request[] {
    const range = (page: number, pages: number) => ({ firstPage: page, pages: Math.min(pages, PAGE_SPACE - page) });
    switch (c.op) {
      case "tlbi-nh-all":
        return this.hooks.domains().map((domain) => ({ op: "invalidate", domain, scope: { kind: "all" } }));
      case "tlbi-nh-asid":
        return this.hooks.asidUsers(c.asid).map(({ domain, pasid }) =>
          pasid === "rid"
            ? { op: "invalidate", domain, scope: { kind: "all" }, noPasid: true }
            : { op: "invalidate", domain, scope: { kind: "pasid", pasid } }
        );
      case "tlbi-nh-va":
        return this.hooks.asidUsers(c.asid).map(({ domain, pasid }) =>
          pasid === "rid"
            ? {
              op: "invalidate",
              domain,
              scope: { kind: "range", ...range(c.page, c.pages) },
              noPasid: true,
              leaf: c.leaf,
              hints: { ttl: c.ttl },
            }
            : {
              op: "invalidate",
              domain,
              scope: { kind: "pasid-range", pasid, ...range(c.page, c.pages) },
              leaf: c.leaf,
              hints: { ttl: c.ttl },
            }
        );
      case "tlbi-nh-vaa":
        return this.hooks.domains().map((domain) => ({
          op: "invalidate",
          domain,
          scope: { kind: "range", ...range(c.page, c.pages) },
          leaf: c.leaf,
          hints: { ttl: c.ttl },
        }));
      default:
        // ATC_INV: the relay sends ATC_INV with every TLBI for ATS devices itself; PREFETCH: nothing to do.
        return [];
    }
  }
}
