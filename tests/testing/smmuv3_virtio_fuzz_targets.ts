// Fuzz targets for the SMMUv3 queue models (CMDQ, EVTQ, PRIQ) and the virtio-iommu request queue, run in a Worker by
// tests/testing/smmuv3_virtio_fuzz_test.ts (so a hang fails with its seed). Every input is hostile guest state:
// register values (numbers, bigints, halves, values above 2^53, negative, NaN), queue contents, PROD/CONS values and
// request buffers. Nothing may throw — the models sit under a VMM's MMIO handler — so no thrown value counts as typed;
// the invariants below are asserted inside `run`, so a broken one fails with its seed too.
import assert from "node:assert/strict";
import { CERROR, GERROR_CMDQ_ERR, SmmuCommandQueue } from "../../lib/frontends/smmuv3/cmdq.ts";
import { SmmuEventQueue } from "../../lib/frontends/smmuv3/evtq.ts";
import { SmmuPriQueue } from "../../lib/frontends/smmuv3/priq.ts";
import { handleVirtioIommuKick, VirtioIommuStatus } from "../../lib/frontends/virtio/iommu.ts";
import { shadowMapHooks } from "../../lib/frontends/virtio/shadow.ts";
import { ShadowDomain } from "../../lib/shadow/domain.ts";
import { ModelIoas } from "../../lib/shadow/model_ioas.ts";
import { RelayQueue } from "../../lib/relay/queue.ts";
import { ModelHost } from "../../lib/host/model.ts";
import type { GuestMemory } from "../../lib/frontends/vtd/queue.ts";
import type { FuzzTarget } from "../../lib/testing/fuzz.ts";
import type { Request } from "../../lib/request/request.ts";

/** A word of the input (0 past its end). */
const u32 = (b: Uint8Array, at: number) =>
  at + 4 <= b.length ? new DataView(b.buffer, b.byteOffset + at, 4).getUint32(0, true) : 0;

/**
 * Guest RAM of `bytes` whose contents repeat every `window` bytes (one small buffer stands for it), so a 2^19-entry
 * queue (8 MiB of commands) costs no 8 MiB copy per input. Outside [0, bytes) is not RAM: reads and writes throw, as
 * a VMM's bounds-checked memory does.
 */
function aliasedRam(bytes: number, window: Uint8Array): GuestMemory {
  const inside = (a: number, n: number) => Number.isInteger(a) && a >= 0 && a + n <= bytes;
  const size = window.length;
  return {
    read(a, n) {
      if (!inside(a, n)) throw new RangeError(`not RAM: 0x${a.toString(16)}`);
      const out = new Uint8Array(n);
      for (let i = 0; i < n; i++) out[i] = window[(a + i) % size];
      return out;
    },
    readInto(a, out) {
      if (!inside(a, out.length)) throw new RangeError(`not RAM: 0x${a.toString(16)}`);
      for (let i = 0; i < out.length; i++) out[i] = window[(a + i) % size];
    },
    write(a, b) {
      if (!inside(a, b.length)) throw new RangeError(`not RAM: 0x${a.toString(16)}`);
      for (let i = 0; i < b.length; i++) window[(a + i) % size] = b[i];
    },
  };
}

/** A 64-bit register value from two input words, in one of the forms a VMM might pass it. */
function register64(low: number, high: number, form: number): number | bigint {
  switch (form % 6) {
    case 0:
      return (BigInt(high) << 32n) | BigInt(low); // exact
    case 1:
      return high * 2 ** 32 + low; // a number: above 2^53 when high is large (must be refused, not guessed)
    case 2:
      return -((BigInt(high) << 32n) | BigInt(low)); // negative bigint: taken modulo 2^64
    case 3:
      return -(high * 2 ** 32 + low); // negative number
    case 4:
      return [NaN, Infinity, 0.5, -0, 2 ** 64][low % 5];
    default:
      return (high & 0xfffff) * 2 ** 32 + low; // a safe integer
  }
}

/** A 32-bit register value in a hostile form. */
function register32Value(v: number, form: number): number | bigint {
  switch (form % 5) {
    case 0:
      return v;
    case 1:
      return BigInt(v) << 32n | BigInt(v); // bits above 31
    case 2:
      return v | 0; // negative
    case 3:
      return [NaN, -1, 2 ** 40 + v, 1.5][v % 4];
    default:
      return BigInt(v);
  }
}

const RAM = 16 << 20;
const WINDOW = 1 << 16;
/** A queue base Linux would use (inside RAM, aligned for the largest queue). */
const GOOD_BASE = 0x80_0000;

/** Queue distance from `from` to `to` (index + wrap values) in a queue of 2^log2size entries. */
const distance = (from: number, to: number, log2size: number) => {
  const span = 2 << log2size;
  return ((to & (span - 1)) - (from & (span - 1)) + span) % span;
};

/**
 * The command queue: input words 0..15 are register writes (CMDQ_BASE in hostile forms, PROD values — random, over
 * the queue, bigints —, GERRORN acknowledgements), the rest the queue's contents (repeating through guest RAM, so a
 * 2^19-entry queue is full of them). The sink refuses domain 7 by throwing, and the host fails some batches.
 * Invariants: no throw; CONS never passes PROD; after the guest acknowledges, a good doorbell (a TLBI and a CMD_SYNC
 * written at CONS) is consumed whole and its sync completes.
 */
export function smmuCmdqTarget(): FuzzTarget {
  const window = new Uint8Array(WINDOW);
  const memory = aliasedRam(RAM, window);
  return {
    name: "smmuv3 command queue",
    sizes: [64, 96, 320, 1088],
    corpus: [cmdqCorpus(8, 64), cmdqCorpus(19, 16_384)],
    run(bytes) {
      // The queue's contents repeat through RAM: a queue of any size is full of the input's commands.
      const contents = bytes.subarray(64, 64 + WINDOW);
      window.fill(0);
      if (contents.length >= 16) {
        for (let at = 0; at < WINDOW; at += contents.length - (contents.length % 16)) {
          window.set(contents.subarray(0, Math.min(contents.length - (contents.length % 16), WINDOW - at)), at);
        }
      }
      const host = new ModelHost();
      const target = host.createTarget("smmuv3");
      const relay = new RelayQueue(host, { smmuRil: true });
      relay.bind(1, "rid", { targetId: target, format: "smmuv3", asid: 1 });
      relay.bind(7, "rid", { targetId: target, format: "smmuv3", asid: 7 });
      if (bytes[1] & 1) host.inject.push({ targetId: target, atEntry: 0, errno: 22, times: 1 + (bytes[1] >> 5) });
      const sink = {
        submit(r: Request) {
          if ("domain" in r && r.domain === 7 && bytes[2] & 1) throw new RangeError("the sink refuses domain 7");
          return relay.submit(r);
        },
        drain: () => relay.drain(),
      };
      const users = [{ domain: 1, pasid: "rid" as const }, { domain: 7, pasid: "rid" as const }];
      const cmdq = new SmmuCommandQueue(memory, sink, {
        asidUsers: (asid) => (asid === 1 ? users.slice(0, 1) : asid === 7 ? users.slice(1) : []),
        domains: () => [1, 7],
        sev() {
          if (bytes[3] & 1) throw new Error("a VMM hook that throws");
        },
      }, { drainEvery: 1 + (bytes[4] % 64) * 64, maxHostRetries: 1 + (bytes[5] & 15) });
      // CMDQ_BASE: hostile forms, or a good base with a LOG2SIZE from the input (19 now and then: 2^19 entries).
      const log2 = bytes[6] % 16 === 0 ? 19 : bytes[6] % 12;
      if (bytes[7] & 1) cmdq.writeBase(register64(u32(bytes, 8), u32(bytes, 12), bytes[0]));
      else if (bytes[7] & 2) {
        cmdq.writeBaseHigh(register32Value(u32(bytes, 12), bytes[0])), cmdq.writeBaseLow(u32(bytes, 8));
      } else cmdq.writeBase((1n << 62n) | BigInt(GOOD_BASE) | BigInt(log2));
      for (let at = 16; at + 4 <= Math.min(64, bytes.length); at += 4) {
        const word = u32(bytes, at), before = cmdq.cons & ((2 << cmdq.log2size) - 1);
        switch (bytes[at] % 5) {
          case 0:
          case 1: {
            // A PROD at most the queue's size ahead (what a guest may write; at most 16,384 commands, so that a run
            // stays short: tests/frontends/smmuv3 processes a full 2^19-entry queue), or anything at all.
            const ahead = (word >>> 8) % (Math.min(1 << cmdq.log2size, 16_384) + 1);
            const prod = bytes[at] % 5 === 0 ? before + ahead : word;
            const value = register32Value(prod >>> 0, bytes[at + 1]);
            cmdq.writeProd(value);
            const d = distance(before, cmdq.prod, cmdq.log2size);
            if (d <= 1 << cmdq.log2size) {
              assert.ok(
                distance(cmdq.cons, cmdq.prod, cmdq.log2size) <= d,
                `CONS ${cmdq.cons.toString(16)} passed PROD ${cmdq.prod.toString(16)} (from ${before.toString(16)})`,
              );
            }
            break;
          }
          case 2:
            cmdq.writeGerrorn(register32Value(cmdq.gerror ^ (word & 0xffff_fffe), bytes[at + 1]));
            break;
          case 3:
            cmdq.writeGerrorn(cmdq.gerror);
            break;
          default:
            if (word % 7 === 0) cmdq.writeBaseLow(register32Value(word, bytes[at + 1]));
        }
      }
      // A later good doorbell works, written as Linux would after an error: TLBI_NH_ASID 1 + CMD_SYNC at CONS, PROD
      // after them, then (if the queue stopped) the acknowledgement through GERRORN, which restarts it at CONS.
      if (cmdq.failed) cmdq.reset();
      host.inject.length = 0;
      if (cmdq.base + (16 << cmdq.log2size) > RAM || cmdq.log2size < 1) {
        cmdq.writeBase((1n << 62n) | BigInt(GOOD_BASE) | 8n);
      }
      const mask = (2 << cmdq.log2size) - 1, cons = cmdq.cons & mask;
      const slot = (i: number) => cmdq.base + ((cons + i) & ((1 << cmdq.log2size) - 1)) * 16;
      const command = new Uint8Array(16), v = new DataView(command.buffer);
      v.setUint32(0, 0x11, true), v.setUint32(4, 1 << 16, true);
      memory.write(slot(0), command);
      command.fill(0), v.setUint32(0, 0x46, true);
      memory.write(slot(1), command);
      let r = cmdq.writeProd((cons + 2) & mask);
      if ((cmdq.gerror ^ cmdq.gerrorn) & GERROR_CMDQ_ERR) r = cmdq.writeGerrorn(cmdq.gerror)!;
      assert.equal(r.error, undefined, `the good doorbell failed: ${r.error?.reason}`);
      assert.deepEqual([r.processed, r.syncsCompleted], [2, 1]);
      assert.equal(cmdq.cons, (cons + 2) & mask);
      assert.equal((cmdq.gerror ^ cmdq.gerrorn) & GERROR_CMDQ_ERR, 0);
      assert.notEqual(cmdq.cons >>> 24, CERROR.ILL);
    },
    typed: () => false,
  };
}

/**
 * Linux's strict unmap doorbells (TLBI_NH_VA range + CMD_SYNC SEV) with a CFGI_CD now and then and a TLBI for domain
 * 7's ASID, in a queue of 2^`log2size` entries; the first PROD write takes `commands` of them.
 */
function cmdqCorpus(log2size: number, commands: number): Uint8Array {
  const b = new Uint8Array(64 + 1024);
  const v = new DataView(b.buffer);
  b[6] = log2size === 19 ? 16 : log2size; // see the LOG2SIZE choice in smmuCmdqTarget
  v.setUint32(16, commands << 8, true); // case 0: a PROD `commands` ahead of CONS
  v.setUint32(20, 3, true); // case 3: acknowledge an error
  v.setUint32(24, 64 << 8, true); // another doorbell
  for (let at = 28; at < 64; at += 4) v.setUint32(at, 4, true); // nothing
  for (let i = 0; i < 32; i++) {
    const at = 64 + 32 * i;
    v.setUint32(at, 0x12 | (0 << 12) | (1 << 20), true); // TLBI_NH_VA, NUM 0, SCALE 1
    v.setUint32(at + 4, (i % 5 === 0 ? 7 : 1) << 16, true);
    v.setUint32(at + 8, ((0xfffdf + i) << 12) | (1 << 10) | 1, true);
    v.setUint32(at + 16, i % 8 === 0 ? 0x05 : 0x46 | (2 << 12), true); // CFGI_CD or CMD_SYNC (SEV)
  }
  return b;
}

/** What the output queues' inputs do, 16 bytes per step. */
const OUTQ_STEPS = 16;

/**
 * The event queue: EVTQ_BASE in hostile forms (bases outside RAM among them), CONS values anywhere, records posted
 * (full queue → OVFLG), host losses, stalls and CMD_RESUMEs. Invariants: no throw; PROD never more than the queue's
 * size ahead of CONS; after the guest consumes everything and acknowledges the overflow, a post on a RAM base works.
 */
export function smmuEvtqTarget(): FuzzTarget {
  const window = new Uint8Array(WINDOW);
  const memory = aliasedRam(RAM, window);
  let now = 0;
  return {
    name: "smmuv3 event queue",
    sizes: [64, 256],
    run(bytes) {
      const q = new SmmuEventQueue(memory, { now: () => now });
      q.enableStalls(() => {}, 100);
      const record = new Uint8Array(32);
      for (let at = 0; at + OUTQ_STEPS <= bytes.length; at += OUTQ_STEPS) {
        const a = u32(bytes, at + 4), b = u32(bytes, at + 8), c = u32(bytes, at + 12);
        const mask = (2 << q.log2size) - 1;
        switch (bytes[at] % 8) {
          case 0:
            q.writeBase(register64(a, b, c));
            break;
          case 1:
            q.writeBaseLow(register32Value(a, c)), q.writeBaseHigh(register32Value(b, c >>> 8));
            break;
          case 2:
            q.writeCons(register32Value(a, c));
            break;
          case 3:
            q.writeCons(((q.prod & mask) | (q.prod & 0x8000_0000)) >>> 0); // a guest that consumed all, acked
            break;
          case 4:
          case 5:
            record.fill(bytes[at + 1]);
            q.post(record);
            break;
          case 6:
            q.hostLost(a | 0);
            break;
          default:
            if (c & 1) {
              q.postStall({
                rid: a,
                page: b,
                read: true,
                write: false,
                exec: false,
                priv: false,
                lastInGroup: true,
                grpid: 0,
                cookie: c,
              });
            } else q.guestResume({ op: "resume", sid: a, resp: c & 3, stag: b & 0xffff });
            now += c % 50;
            q.expire();
        }
        assert.ok(distance(q.cons, q.prod, q.log2size) <= 1 << q.log2size, "PROD more than a queue ahead of CONS");
      }
      if (q.base + (32 << q.log2size) > RAM) q.writeBase(BigInt(GOOD_BASE) | 4n);
      q.writeCons(q.prod >>> 0);
      const posted = q.telemetry.posted;
      assert.ok(q.post(record), "a post after the guest consumed everything");
      assert.equal(q.telemetry.posted, posted + 1);
    },
    typed: () => false,
  };
}

/**
 * The PRI queue: PRIQ_BASE in hostile forms, CONS anywhere, page requests delivered into a full queue (OVFLG, the
 * host answered INVALID), CMD_PRI_RESPs, unbinds and deadlines. Invariants: no throw; every host request is answered
 * at most once; PROD never more than a queue ahead of CONS; after recovery a delivery works.
 */
export function smmuPriqTarget(): FuzzTarget {
  const window = new Uint8Array(WINDOW);
  const memory = aliasedRam(RAM, window);
  let now = 0;
  return {
    name: "smmuv3 PRI queue",
    sizes: [64, 256],
    run(bytes) {
      const answered = new Set<number>();
      const q = new SmmuPriQueue(
        memory,
        (cookie) => {
          assert.ok(!answered.has(cookie), `host request ${cookie} answered twice`);
          answered.add(cookie);
        },
        { now: () => now },
        100,
      );
      let cookie = 0;
      for (let at = 0; at + OUTQ_STEPS <= bytes.length; at += OUTQ_STEPS) {
        const a = u32(bytes, at + 4), b = u32(bytes, at + 8), c = u32(bytes, at + 12);
        switch (bytes[at] % 7) {
          case 0:
            q.writeBase(register64(a, b, c));
            break;
          case 1:
            q.writeBaseLow(register32Value(a, c)), q.writeBaseHigh(register32Value(b, c >>> 8));
            break;
          case 2:
            q.writeCons(register32Value(a, c));
            break;
          case 3:
          case 4:
            q.deliver({
              rid: a & 7,
              ...(b & 1 ? { pasid: c & 3 } : {}),
              page: (b >>> 4) * 1024,
              read: true,
              write: (b & 2) !== 0,
              exec: false,
              priv: false,
              lastInGroup: (b & 4) !== 0,
              grpid: c % 4,
              cookie: ++cookie,
            });
            break;
          case 5:
            q.guestResponse({ op: "pri-resp", sid: a & 7, ssid: b & 1 ? c & 3 : undefined, grpid: c % 4, resp: b % 4 });
            break;
          default:
            if (c & 1) q.pasidUnbound(a & 7, b & 3);
            now += c % 50;
            q.expire();
        }
        assert.ok(distance(q.cons, q.prod, q.log2size) <= 1 << q.log2size, "PROD more than a queue ahead of CONS");
      }
      if (q.base + (16 << q.log2size) > RAM) q.writeBase(BigInt(GOOD_BASE) | 4n);
      q.writeCons(q.prod >>> 0);
      assert.ok(
        q.deliver({
          rid: 1,
          page: 1,
          read: true,
          write: false,
          exec: false,
          priv: false,
          lastInGroup: true,
          grpid: 1,
          cookie: -1,
        }),
        "a delivery after the guest consumed everything",
      );
    },
    typed: () => false,
  };
}

const S = VirtioIommuStatus;
const STATUSES = new Set<number>(Object.values(S));

/**
 * The virtio-iommu request queue: one kick of request buffers cut from the input (types biased towards the real
 * ones, lengths right or wrong, ranges over a small space so UNMAPs meet mappings), handled by
 * `handleVirtioIommuKick` over shadowed domains (batched UNMAPs) and a relay whose drain fails now and then.
 * Invariants: no throw; every buffer's tail holds the status returned, one of the spec's; each domain's area map
 * equals its IOAS; a later good MAP and UNMAP on a fresh range answer OK.
 */
export function virtioRequestTarget(): FuzzTarget {
  return {
    name: "virtio-iommu request queue",
    sizes: [64, 256, 1024],
    corpus: [virtioCorpus()],
    run(bytes) {
      const ioas = [new ModelIoas(), new ModelIoas()];
      const domains = ioas.map((io) => new ShadowDomain({ read: () => new Uint8Array(4096) }, 1 << 24, io));
      const attached = new Set<number>();
      const maps = shadowMapHooks((d) => (attached.has(d) ? domains[d - 1] : undefined));
      let seq = 0;
      const relay = {
        submit: () => ++seq,
        drain: () => ({ failures: bytes[0] & 1 ? [{ seq, errno: 5 }] : [] }) as never,
      };
      const hooks = {
        ...maps,
        attach: (
          r: { domain: number },
        ) => (r.domain === 1 || r.domain === 2 ? (attached.add(r.domain), S.OK) : S.NOENT),
        detach: (r: { domain: number }) => (attached.delete(r.domain) ? S.OK : S.NOENT),
        probe: (_r: unknown, properties: Uint8Array) => (properties.fill(0), S.OK),
      };
      if (bytes[1] & 1) ioas[0].busy.add(0x10 + (bytes[1] >> 4));
      attached.add(1);
      const buffers: Uint8Array[] = [];
      for (let at = 4; at + 8 <= bytes.length;) {
        const kind = bytes[at] % 8;
        const type = [1, 2, 3, 4, 4, 4, 5, 6][kind];
        const sizes: Record<number, number> = { 1: 24, 2: 24, 3: 40, 4: 32, 5: 4 + 4 + 64 + 64 + 4, 6: 48 };
        const size = bytes[at + 1] % 16 === 0 ? bytes[at + 2] % 80 : sizes[type];
        const b = bytes.slice(at, at + size);
        const buffer = new Uint8Array(size);
        buffer.set(b);
        buffer[0] = bytes[at + 3] % 32 === 0 ? bytes[at + 3] : type;
        if (bytes[at + 1] % 4 !== 1) buffer[1] = buffer[2] = buffer[3] = 0;
        if ((type === 3 || type === 4) && size >= 24 && bytes[at + 1] % 3 !== 0) {
          // A range over 64 pages, aligned, domain 1 or 2: the requests meet each other's mappings.
          const v = new DataView(buffer.buffer);
          const first = bytes[at + 4] % 64, pages = 1 + bytes[at + 5] % 6;
          v.setUint32(4, 1 + (bytes[at + 6] & 1), true);
          v.setBigUint64(8, BigInt(first) * 4096n, true);
          v.setBigUint64(16, BigInt(first + pages) * 4096n - 1n, true);
          if (type === 3 && size >= 40) {
            v.setBigUint64(24, BigInt(bytes[at + 7]) * 4096n, true);
            v.setUint32(32, 1 + (bytes[at + 7] % 3), true);
          }
          if (type === 4 && size >= 28) v.setUint32(24, 0, true);
        }
        buffers.push(buffer);
        at += 48;
      }
      const statuses = handleVirtioIommuKick(buffers, hooks, relay);
      assert.equal(statuses.length, buffers.length);
      for (let i = 0; i < buffers.length; i++) {
        assert.ok(STATUSES.has(statuses[i]), `status ${statuses[i]}`);
        const b = buffers[i];
        if (b.length >= 4) assert.equal(b[b.length - 4], statuses[i], "the tail holds the status");
      }
      for (let d = 0; d < 2; d++) assert.deepEqual(domains[d].areas.all, ioas[d].areas.all, "area map = IOAS");
      ioas[0].busy.clear();
      attached.add(1);
      const good = [new Uint8Array(40), new Uint8Array(32)];
      const page = 0x1000 + (bytes[2] ?? 0);
      for (const [i, type] of [[0, 3], [1, 4]]) {
        const v = new DataView(good[i].buffer);
        good[i][0] = type;
        v.setUint32(4, 1, true);
        v.setBigUint64(8, BigInt(page) * 4096n, true);
        v.setBigUint64(16, BigInt(page + 1) * 4096n - 1n, true);
      }
      new DataView(good[0].buffer).setUint32(32, 1, true);
      assert.deepEqual(handleVirtioIommuKick(good, hooks, relay), [S.OK, S.OK]);
    },
    typed: () => false,
  };
}

/** Linux's lazy kick: ATTACH, four MAPs, then four UNMAPs and a MAP. */
function virtioCorpus(): Uint8Array {
  const b = new Uint8Array(4 + 48 * 10);
  for (let i = 0; i < 10; i++) {
    const at = 4 + 48 * i;
    b[at] = i === 0 ? 0 : i < 5 || i === 9 ? 2 : 3; // ATTACH, MAP×4, UNMAP×4, MAP (kinds: see the type table)
    b[at + 1] = 2;
    b[at + 4] = i === 0 ? 0 : i < 5 ? i : i === 9 ? 8 : i - 4;
  }
  return b;
}
