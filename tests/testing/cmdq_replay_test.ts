// Linux's arm-smmu-v3 driver, recorded (tests/fixtures/traces/smmuv3-*.cmdq.txt.gz), replayed into the command
// queue model slot by slot, one PROD write per recorded doorbell. The checks decode the recording's raw words here,
// per the SMMUv3 command layouts, independently of the front end's decoder.
import assert from "node:assert/strict";
import { CmdqReplayRig, parseCmdqRecording } from "../../lib/testing/cmdq_replay.ts";
import { readRecordingText } from "../../lib/testing/recordings.ts";

const FIXTURES = new URL("../fixtures/traces/", import.meta.url);

/** A command's fields straight from its words (SMMUv3: opcode 7:0; TLBI ASID 63:48, NUM 16:12, SCALE 24:20, TG w1 11:10). */
function independent(w0: bigint, w1: bigint) {
  const opcode = Number(w0 & 0xffn);
  const asid = Number((w0 >> 48n) & 0xffffn);
  const tg = Number((w1 >> 10n) & 3n);
  const granulePages = [1, 1, 4, 16][tg];
  const pages = tg === 0 ? 1 : (Number((w0 >> 12n) & 0x1fn) + 1) * 2 ** Number((w0 >> 20n) & 0x1fn) * granulePages;
  const page = Number((w1 >> 12n) & 0xf_ffff_ffffn);
  const cs = Number((w0 >> 12n) & 3n);
  return { opcode, asid, page, pages, cs };
}

async function load(name: string) {
  const text = await readRecordingText(new URL(`${name}.cmdq.txt.gz`, FIXTURES));
  const stats = JSON.parse(await Deno.readTextFile(new URL(`${name}.stats.json`, FIXTURES)));
  // The raw lines, read here without the replay's parser: seq phase batch slot w0 w1 opcode ...
  const raw = text.split("\n").filter((l) => l && !l.startsWith("#")).map((l) => l.split(" "))
    .map((f) => ({ slot: Number(f[3]), batch: Number(f[2]), w0: BigInt(`0x${f[4]}`), w1: BigInt(`0x${f[5]}`) }));
  return { text, stats, raw };
}

for (const name of ["smmuv3-strict-thp", "smmuv3-lazy"]) {
  Deno.test(`smmuv3 replay ${name}: every command consumed with its effect; every TLBI at the host before its SYNC completes`, async () => {
    const { text, stats, raw } = await load(name);
    const recording = parseCmdqRecording(text);
    assert.equal(recording.log2size, stats.cmdq_log2size);
    let next = 0, checkedTlbis = 0, checkedSyncs = 0, tlbiBytes = 0, cfgis = 0;
    const byOpcode = new Map<number, number>();
    const problems: string[] = [];
    const entries = 2 ** stats.cmdq_log2size;
    // Completion of a SYNC, seen where Linux sees it (CS=SEV: it polls CONS): CONS is past the SYNC and every
    // command before it in queue order has reached the host.
    const rig: CmdqReplayRig = new CmdqReplayRig(recording, {
      hooks: {
        sev() {
          const syncSlot = ((rig.cmdq.cons & (2 * entries - 1)) - 1 + entries) % entries;
          for (; next < raw.length; next++) {
            const c = raw[next], f = independent(c.w0, c.w1);
            byOpcode.set(f.opcode, (byOpcode.get(f.opcode) ?? 0) + 1);
            if (f.opcode === 0x12) {
              tlbiBytes += f.pages * 4096;
              checkedTlbis++;
              for (const p of [f.page, f.page + f.pages - 1]) {
                if (!rig.host.covered(rig.vsmmu, p, f.asid)) problems.push(`seq ${next}: page ${p} asid ${f.asid}`);
              }
            } else if (f.opcode === 0x11) {
              checkedTlbis++;
              for (const p of [0, 0xf_ffff_ffff]) {
                if (!rig.host.covered(rig.vsmmu, p, f.asid)) problems.push(`seq ${next}: ASID ${f.asid} page ${p}`);
              }
            } else if (f.opcode === 0x30 || f.opcode === 0x10) {
              for (const asid of rig.contexts.keys()) {
                if (!rig.host.covered(rig.vsmmu, 0x12345, asid)) problems.push(`seq ${next}: NH_ALL asid ${asid}`);
              }
            } else if (f.opcode >= 0x03 && f.opcode <= 0x06) cfgis++;
            if (f.opcode === 0x46 && c.slot === syncSlot) {
              assert.equal(f.cs, 2, "the recorded SYNCs ask for SEV");
              checkedSyncs++;
              next++;
              break;
            }
          }
          // Coverage is per SYNC: what the next SYNC needs must reach the host after this one.
          rig.host.resetCoverage();
        },
      },
    });
    const result = rig.replay();
    // PREFETCH_CONFIG doorbells have no SYNC: count what follows the last SYNC too.
    for (; next < raw.length; next++) {
      const f = independent(raw[next].w0, raw[next].w1);
      byOpcode.set(f.opcode, (byOpcode.get(f.opcode) ?? 0) + 1);
    }
    assert.deepEqual(problems.slice(0, 5), [], `${problems.length} TLBIs not at the host when their SYNC completed`);
    assert.equal(result.errors, 0);
    assert.equal(rig.cmdq.telemetry.sinkExceptions + rig.cmdq.telemetry.hostFailures, 0);
    assert.equal(result.processed, stats.commands, "every command consumed");
    assert.equal(result.syncsCompleted, stats.syncs);
    assert.equal(checkedSyncs, stats.syncs);
    assert.equal(rig.cmdq.cons, result.doorbells ? rig.cmdq.prod : 0, "CONS at PROD after the last doorbell");
    assert.equal(result.doorbells, stats.prod_writes - stats.prod_writes_without_commands);
    assert.equal(checkedTlbis, (stats.by_opcode.TLBI_NH_VA ?? 0) + (stats.by_opcode.TLBI_NH_ASID ?? 0));
    assert.equal(tlbiBytes, stats.tlbi_va_bytes_total);
    const names: Record<number, string> = {
      0x01: "PREFETCH_CONFIG",
      0x03: "CFGI_STE",
      0x04: "CFGI_ALL",
      0x05: "CFGI_CD",
      0x11: "TLBI_NH_ASID",
      0x12: "TLBI_NH_VA",
      0x30: "TLBI_NSNH_ALL",
      0x46: "SYNC",
    };
    assert.deepEqual(
      Object.fromEntries([...byOpcode].map(([op, n]) => [names[op] ?? `op=${op}`, n]).sort()),
      Object.fromEntries(Object.entries(stats.by_opcode).sort()),
    );
    assert.equal(
      cfgis,
      (stats.by_opcode.CFGI_STE ?? 0) + (stats.by_opcode.CFGI_CD ?? 0) + (stats.by_opcode.CFGI_ALL ?? 0),
    );
    assert.deepEqual([...rig.configured].sort(), ["0/0", "16/0", "8/0"], "the three streams' contexts bound");
  });
}

Deno.test("smmuv3 replay: two CPUs' TLBI+SYNC pairs in one PROD write go to the host as one ioctl", async () => {
  const { text } = await load("smmuv3-strict-thp");
  const recording = parseCmdqRecording(text);
  // Two CPUs: each strict-unmap doorbell after boot shares its PROD write with the next one (Linux's cmdlist
  // batching across CPUs writes PROD once for both CPUs' commands).
  const boot = recording.commands.findIndex((c) => c.phase > 0);
  const merged = {
    ...recording,
    commands: recording.commands.map((c, i) =>
      i < boot ? c : { ...c, batch: 1_000_000 + Math.floor((c.batch - recording.commands[boot].batch) / 2) }
    ),
  };
  const single = new CmdqReplayRig(recording);
  const one = single.replay();
  const pair = new CmdqReplayRig(merged);
  const two = pair.replay();
  assert.equal(two.errors, 0);
  assert.equal(two.processed, one.processed);
  console.log(
    `smmuv3 strict: ${one.doorbells} doorbells -> ${single.host.callCount} ioctls; paired two-CPU doorbells: ${two.doorbells} -> ${pair.host.callCount} ioctls (${
      (pair.host.callCount / two.doorbells).toFixed(3)
    } per PROD write)`,
  );
  assert.ok(pair.host.callCount <= two.doorbells, "at most one ioctl per PROD write");
  assert.ok(pair.host.callCount < single.host.callCount * 0.6, "pairs halve the ioctls");
});
