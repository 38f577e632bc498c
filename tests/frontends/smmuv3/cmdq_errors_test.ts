// The SMMUv3 command queue against what Linux's arm-smmu-v3 driver does: its 64-bit base registers, its answer to
// each CERROR (arm_smmu_cmdq_skip_err), every CMD_SYNC completion form, and queues of any architected size.
import assert from "node:assert/strict";
import { RelayQueue } from "../../../lib/relay/queue.ts";
import type { RelaySink } from "../../../lib/frontends/window.ts";
import {
  CERROR,
  GERROR_CMDQ_ERR,
  GERROR_MSI_CMDQ_ABT_ERR,
  GERROR_SFM_ERR,
  SmmuCommandQueue,
  type SmmuQueueHooks,
  type SmmuQueueOptions,
} from "../../../lib/frontends/smmuv3/cmdq.ts";
import { ModelHost } from "../../../lib/host/model.ts";

const QBASE = 0x40_0000, MSI = 0x8000, RAM = 8 << 20;

function setup(
  log2size = 6,
  options: SmmuQueueOptions = {},
  sink?: (relay: RelayQueue) => RelaySink,
  qbase = QBASE,
) {
  const ram = new Uint8Array(Math.max(RAM, qbase + (16 << log2size)));
  const memory = {
    read: (a: number, n: number) => {
      if (a + n > ram.length) throw new RangeError("outside guest RAM");
      return ram.slice(a, a + n);
    },
    write: (a: number, b: Uint8Array) => {
      if (a + b.length > ram.length) throw new RangeError("outside guest RAM");
      ram.set(b, a);
    },
  };
  const host = new ModelHost();
  const vsmmu = host.createTarget("smmuv3");
  const relay = new RelayQueue(host, { smmuRil: true });
  relay.bind(1, "rid", { targetId: vsmmu, format: "smmuv3", asid: 7 });
  const signals: { kind: string; cons: number }[] = [];
  const self = { cmdq: undefined as unknown as SmmuCommandQueue };
  const hooks: SmmuQueueHooks = {
    asidUsers: (asid) => asid === 7 ? [{ domain: 1, pasid: "rid" }] : [],
    domains: () => [1],
    sev: () => void signals.push({ kind: "sev", cons: self.cmdq.cons }),
    syncInterrupt: () => void signals.push({ kind: "irq", cons: self.cmdq.cons }),
    gerrorInterrupt: () => void signals.push({ kind: "gerror", cons: self.cmdq.cons }),
  };
  const cmdq = self.cmdq = new SmmuCommandQueue(memory, sink ? sink(relay) : relay, hooks, options);
  // As Linux writes it: RA (bit 62) | address | LOG2SIZE, one 64-bit write.
  assert.equal(cmdq.writeBase((1n << 62n) | BigInt(qbase) | BigInt(log2size)), true);
  const entries = 1 << log2size;
  let prod = 0;
  const slotOf = (p: number) => qbase + (p % entries) * 16;
  const put = (w0: bigint, w1: bigint) => {
    const v = new DataView(ram.buffer, slotOf(prod), 16);
    v.setBigUint64(0, w0, true);
    v.setBigUint64(8, w1, true);
    prod = (prod + 1) % (2 * entries);
  };
  // Encodings from the SMMUv3 architecture: TLBI_NH_VA 0x12 ASID [63:48], range TG [11:10]; CMD_SYNC 0x46 CS [13:12].
  const tlbi = (page: number) => put((7n << 48n) | 0x12n, (BigInt(page) << 12n) | (1n << 10n) | 1n);
  const sync = (cs: number, data = 0, address = 0) =>
    put((BigInt(data) << 32n) | (3n << 22n) | (15n << 24n) | (BigInt(cs) << 12n) | 0x46n, BigInt(address));
  return { ram, host, vsmmu, cmdq, put, tlbi, sync, signals, prod: () => prod, slotOf, entries };
}

/**
 * What Linux's arm_smmu_gerror_handler + __arm_smmu_cmdq_skip_err do (drivers/iommu/arm/arm-smmu-v3): on
 * CMDQ_ERR read CONS.ERR; CERROR_ABT: log "retrying command fetch" and change nothing; CERROR_ILL (and anything
 * else but NONE/ATC_INV): overwrite the command at CONS with a CMD_SYNC (CS=SEV); then acknowledge with GERRORN = GERROR.
 */
function linuxGerrorHandler(t: ReturnType<typeof setup>): { skipped: number; retried: number } {
  const out = { skipped: 0, retried: 0 };
  const active = t.cmdq.gerror ^ t.cmdq.gerrorn;
  if (active & GERROR_CMDQ_ERR) {
    const err = (t.cmdq.cons >>> 24) & 0x7f;
    if (err === CERROR.ABT) out.retried++;
    else if (err === CERROR.ILL) {
      const v = new DataView(t.ram.buffer, t.slotOf(t.cmdq.cons & 0xffffff), 16);
      v.setBigUint64(0, (2n << 12n) | 0x46n, true);
      v.setBigUint64(8, 0n, true);
      out.skipped++;
    }
  }
  t.cmdq.writeGerrorn(t.cmdq.gerror);
  return out;
}

Deno.test("smmuv3 cmdq: CMDQ_BASE is taken exactly: bit 62 (RA) set by Linux keeps LOG2SIZE and the address", () => {
  const t = setup(18);
  assert.equal(t.cmdq.base, QBASE);
  assert.equal(t.cmdq.log2size, 18);
  assert.equal(t.cmdq.baseRegister.value, (1n << 62n) | BigInt(QBASE) | 18n);
  // The same register by 32-bit halves (low then high).
  t.cmdq.writeBaseLow(0x41000012);
  t.cmdq.writeBaseHigh(0x40000000);
  assert.deepEqual([t.cmdq.base, t.cmdq.log2size], [0x41000000, 18]);
  // Reserved bits 63 and 61:52 are ignored; ADDR is 51:5; a BigInt of any value never throws.
  assert.equal(t.cmdq.writeBase(0xfff0_0000_0000_0005n | (0x123n << 32n)), true);
  assert.deepEqual([t.cmdq.base, t.cmdq.log2size], [0x123n * 2n ** 32n, 5].map(Number));
  assert.equal(t.cmdq.writeBase(-1n), true);
  assert.equal(t.cmdq.log2size, 19, "LOG2SIZE above the maximum reads as the maximum");
  assert.equal(t.cmdq.base % (16 * 2 ** 19), 0, "the base is aligned to the queue's size");
  // A number above 2^53 has already lost its low bits: refused, registers unchanged, nothing thrown.
  t.cmdq.writeBase(BigInt(QBASE) | 6n);
  assert.equal(t.cmdq.writeBase(2 ** 62 + QBASE + 6), false);
  assert.deepEqual([t.cmdq.base, t.cmdq.log2size], [QBASE, 6]);
  // PROD as a bigint works too.
  t.tlbi(0x10);
  t.sync(2);
  assert.deepEqual(t.cmdq.writeProd(BigInt(t.prod())), { processed: 2, syncsCompleted: 1 });
});

Deno.test("smmuv3 cmdq: one injected EINVAL is CERROR_ABT; Linux retries it and the page is invalidated before the sync completes", () => {
  const t = setup();
  t.host.inject.push({ targetId: t.vsmmu, atEntry: 0, errno: 22 });
  t.tlbi(0x900);
  t.sync(2);
  const r = t.cmdq.writeProd(t.prod());
  assert.equal(r.error?.cerror, CERROR.ABT);
  assert.equal(t.cmdq.cons & 0xffffff, 0, "CONS at the TLBI whose invalidation failed");
  assert.equal(t.signals.filter((s) => s.kind === "sev").length, 0, "the sync has not completed");
  assert.equal(t.host.covered(t.vsmmu, 0x900, 7), false);
  const linux = linuxGerrorHandler(t);
  assert.deepEqual(linux, { skipped: 0, retried: 1 });
  assert.ok(t.host.covered(t.vsmmu, 0x900, 7), "the retried TLBI reached the host");
  assert.deepEqual(t.signals.filter((s) => s.kind === "sev"), [{ kind: "sev", cons: 2 }]);
  assert.equal(t.cmdq.cons, t.prod());
});

Deno.test("smmuv3 cmdq: what CERROR_ILL would have cost: Linux skips the command, so the page is never invalidated", () => {
  // The contrast that decides the choice: a guest error (an unknown opcode) is ILL and Linux replaces it.
  const t = setup();
  t.put(0x7fn, 0n);
  t.sync(2);
  t.cmdq.writeProd(t.prod());
  assert.equal((t.cmdq.cons >>> 24) & 0x7f, CERROR.ILL);
  assert.deepEqual(linuxGerrorHandler(t), { skipped: 1, retried: 0 });
  assert.equal(t.cmdq.cons, t.prod(), "the queue ran on past the replaced command");
});

Deno.test("smmuv3 cmdq: a host that keeps failing ends in service failure mode, never in a completed sync", () => {
  const t = setup(6, { maxHostRetries: 4 });
  t.host.inject.push({ targetId: t.vsmmu, atEntry: 0, errno: 5, times: 1000 });
  t.tlbi(0x900);
  t.sync(2);
  t.cmdq.writeProd(t.prod());
  let rounds = 0;
  while (!t.cmdq.failed && rounds < 100) {
    linuxGerrorHandler(t);
    rounds++;
  }
  assert.equal(t.cmdq.failed, true);
  assert.equal(rounds, 3, "4 failures at the same command: the first plus 3 retries");
  assert.ok(((t.cmdq.gerror ^ t.cmdq.gerrorn) & GERROR_SFM_ERR) !== 0, "GERROR.SFM_ERR raised");
  assert.equal(t.signals.filter((s) => s.kind === "sev").length, 0);
  linuxGerrorHandler(t);
  assert.equal(t.cmdq.writeProd(t.prod()).processed, 0, "service failure mode processes nothing");
  t.cmdq.reset();
  assert.equal(t.cmdq.failed, false);
});

Deno.test("smmuv3 cmdq: whatever the sink throws becomes CERROR_ABT at the failing command; the next write works", () => {
  let throwAt = 3, submits = 0;
  const t = setup(6, {}, (relay) => ({
    submit: (r) => {
      if (++submits === throwAt) throw new Error("sink exploded");
      return relay.submit(r);
    },
    drain: () => relay.drain(),
  }));
  t.tlbi(0x10);
  t.sync(2); // submit 1 (TLBI), 2 (SYNC)
  t.tlbi(0x20); // submit 3: throws
  t.sync(2);
  const r = t.cmdq.writeProd(t.prod());
  assert.equal(r.error?.cerror, CERROR.ABT);
  assert.ok((t.cmdq.cons & 0xffffff) <= 2, "CONS no further than the command whose submit threw");
  assert.ok(t.host.covered(t.vsmmu, 0x10, 7) || (t.cmdq.cons & 0xffffff) === 0);
  throwAt = -1;
  linuxGerrorHandler(t);
  assert.equal(t.cmdq.cons, t.prod());
  assert.ok(t.host.covered(t.vsmmu, 0x10, 7) && t.host.covered(t.vsmmu, 0x20, 7));
});

Deno.test("smmuv3 cmdq: 70,000 CMD_SYNCs in one PROD write are processed whole, and so is the next write", () => {
  const t = setup(17);
  for (let i = 0; i < 70_000; i++) t.sync(0);
  const r = t.cmdq.writeProd(t.prod());
  assert.equal(r.error, undefined);
  assert.equal(r.processed, 70_000);
  assert.equal(r.syncsCompleted, 70_000);
  assert.equal(t.cmdq.cons, t.prod());
  for (let i = 0; i < 100; i++) t.tlbi(i);
  t.sync(2);
  assert.deepEqual(t.cmdq.writeProd(t.prod()), { processed: 101, syncsCompleted: 1 });
  assert.ok(t.host.covered(t.vsmmu, 99, 7));
});

Deno.test("smmuv3 cmdq: a full 2^19-entry queue (Linux's largest) in one PROD write, across the wrap, then the next write", () => {
  const t = setup(19, {}, undefined, 8 << 20);
  for (let i = 0; i < 100; i++) t.sync(0);
  assert.equal(t.cmdq.writeProd(t.prod()).processed, 100);
  // Every slot: TLBI_NH_VA + CMD_SYNC pairs, PROD a whole queue ahead of CONS (index equal, wrap bit flipped).
  for (let i = 0; i < t.entries / 2; i++) t.tlbi(i), t.sync(0);
  assert.equal(t.prod(), (100 + t.entries) % (2 * t.entries));
  const r = t.cmdq.writeProd(t.prod());
  assert.equal(r.error, undefined);
  assert.deepEqual([r.processed, r.syncsCompleted], [t.entries, t.entries / 2]);
  assert.equal(t.cmdq.cons, t.prod());
  assert.ok(t.host.covered(t.vsmmu, t.entries / 2 - 1, 7));
  t.tlbi(1), t.sync(2);
  assert.deepEqual(t.cmdq.writeProd(t.prod()), { processed: 2, syncsCompleted: 1 });
});

Deno.test("smmuv3 cmdq: a PROD more than the queue's size ahead of CONS is not taken (no CERROR); a good PROD then is", () => {
  const t = setup(4);
  t.tlbi(1), t.sync(2);
  // 17 ahead in a 16-entry queue: over-full. CERROR_ILL would make Linux skip the good TLBI at CONS.
  const r = t.cmdq.writeProd(17);
  assert.equal(r.processed, 0);
  assert.match(r.error?.reason ?? "", /beyond the queue/);
  assert.equal(t.cmdq.cons, 0);
  assert.equal(t.cmdq.gerror, 0, "no CMDQ_ERR: the guest's commands are fine, its register value is not");
  assert.deepEqual(t.cmdq.writeProd(t.prod()), { processed: 2, syncsCompleted: 1 });
  assert.ok(t.host.covered(t.vsmmu, 1, 7));
});

Deno.test("smmuv3 cmdq: CMD_SYNC completes in every CS form, CONS past it when it signals; MSI data lands", () => {
  for (const msiCapable of [true, false]) {
    const t = setup(6, { msi: msiCapable });
    t.tlbi(0x40);
    t.sync(0); // SIG_NONE
    t.sync(1, 0xcafe, MSI); // SIG_IRQ with an MSI
    t.sync(1); // SIG_IRQ, MSIAddress 0: the wired interrupt
    t.sync(2); // SIG_SEV
    const r = t.cmdq.writeProd(t.prod());
    assert.deepEqual(r, { processed: 5, syncsCompleted: 4 });
    const msi = new DataView(t.ram.buffer).getUint32(MSI, true);
    if (msiCapable) {
      assert.equal(msi, 0xcafe);
      assert.deepEqual(t.signals, [{ kind: "irq", cons: 4 }, { kind: "sev", cons: 5 }]);
    } else {
      assert.equal(msi, 0, "an SMMU without MSIs writes none");
      assert.deepEqual(t.signals, [{ kind: "irq", cons: 3 }, { kind: "irq", cons: 4 }, { kind: "sev", cons: 5 }]);
    }
  }
});

Deno.test("smmuv3 cmdq: Linux's MSI-polled sync (MSI aimed at the CMD_SYNC itself) and an MSI outside RAM", () => {
  const t = setup();
  t.tlbi(0x40);
  // arm_smmu_cmdq_build_sync_cmd with MSIs: the MSI address is the sync's own slot, data 0; Linux polls it.
  t.sync(1, 0, t.slotOf(1));
  const before = new DataView(t.ram.buffer).getUint32(t.slotOf(1), true);
  assert.notEqual(before, 0);
  t.cmdq.writeProd(t.prod());
  assert.equal(new DataView(t.ram.buffer).getUint32(t.slotOf(1), true), 0, "the MSI cleared the polled word");
  t.sync(1, 5, RAM + 0x1000);
  const r = t.cmdq.writeProd(t.prod());
  assert.equal(r.error, undefined);
  assert.equal(t.cmdq.cons, t.prod(), "the sync is complete; its MSI's abort is a GERROR, not a stopped queue");
  assert.ok(((t.cmdq.gerror ^ t.cmdq.gerrorn) & GERROR_MSI_CMDQ_ABT_ERR) !== 0);
});

Deno.test("smmuv3 cmdq: CONS moves exactly past the syncs whose commands are done, not past a failed TLBI", () => {
  const t = setup();
  t.tlbi(0x10);
  t.sync(2); // completes
  t.tlbi(0x20);
  t.sync(2); // must not complete
  // The relay coalesces one doorbell into one call: make its second entry (page 0x20) fail.
  t.host.inject.push({ targetId: t.vsmmu, atEntry: 1, errno: 22 });
  const r = t.cmdq.writeProd(t.prod());
  assert.equal(r.error?.cerror, CERROR.ABT);
  assert.deepEqual(t.signals.filter((s) => s.kind === "sev"), [{ kind: "sev", cons: 2 }]);
  assert.equal(t.cmdq.cons & 0xffffff, 2, "stopped at the failed TLBI");
});

Deno.test("smmuv3 cmdq: a queue base outside guest RAM is an abort on command fetch (CERROR_ABT), never a throw", () => {
  const t = setup();
  t.cmdq.writeBase(BigInt(RAM * 2) | 4n);
  const r = t.cmdq.writeProd(3);
  assert.equal(r.error?.cerror, CERROR.ABT);
  assert.equal(t.cmdq.cons & 0xffffff, 0);
});
