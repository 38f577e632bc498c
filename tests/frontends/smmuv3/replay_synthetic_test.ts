// Small recordings in the "guest-trace CMDQ v1" format, written here from the SMMUv3 command layouts (words by hand,
// or `?` with the decoded fields, which the replay rebuilds), for what the Linux fixtures do not hold: several
// streams and substreams, TLBI_NH_ASID / TLBI_NH_ALL / TLBI_S12_VMALL, ATC_INV, PRI_RESP, RESUME, CFGI_CD_ALL, no
// queue size in the header, and a queue that wraps.
import assert from "node:assert/strict";
import { CmdqReplayRig, parseCmdqRecording } from "../../../lib/testing/cmdq_replay.ts";
import type { SmmuCommand } from "../../../lib/frontends/smmuv3/commands.ts";

const SEV = "0000000000002046 0000000000000000 SYNC cs=sev";
// seq phase batch slot w0 w1 opcode fields; 16-entry queue (no header line names it), wrapping after slot 15.
const LINES = [
  "1 0000000800000003 0000000000000001 CFGI_STE sid=0x8",
  "1 0000001000000005 0000000000000001 CFGI_CD sid=0x10 ssid=0",
  "1 0000001000003005 0000000000000001 CFGI_CD sid=0x10 ssid=3",
  "1 0000001000000003 0000000000000001 CFGI_STE sid=0x10",
  `1 ${SEV}`,
  "2 0005000000003012 0000000012345401 TLBI_NH_VA asid=5 tg=1 num=3",
  `2 ${SEV}`,
  "3 0002000000000011 0000000000000000 TLBI_NH_ASID asid=2",
  `3 ${SEV}`,
  "4 0000000000000010 0000000000000000 TLBI_NH_ALL",
  `4 ${SEV}`,
  "5 0000000100000028 0000000000000000 TLBI_S12_VMALL vmid=1",
  `5 ${SEV}`,
  "6 0000001000003840 0000000012345002 ATC_INV sid=0x10 ssid=3 ssv=1 size=2",
  "6 ? ? PRI_RESP sid=0x10 ssid=3 ssv=1 grpid=7 resp=2",
  "6 ? ? RESUME sid=0x8 resp=1 stag=0x42",
  `6 ${SEV}`,
  "7 0000001800000006 0000000000000000 CFGI_CD_ALL sid=0x18",
  "7 0001000000000012 0000000000777001 TLBI_NH_VA asid=1",
  "7 ? ? SYNC cs=sev",
  "8 0002000000003012 0000000000888401 TLBI_NH_VA asid=2 tg=1 num=3",
  `8 ${SEV}`,
];
const TEXT = "# a synthetic recording: two streams, SSIDs 0 and 3\n" +
  LINES.map((l, i) => {
    const [batch, ...rest] = l.split(" ");
    return `${i} 0 ${batch} ${i % 16} ${rest.join(" ")}`;
  }).join("\n") + "\n";

/** What must be at the host when each SYNC completes: [page, ASID] pairs (page -1: the whole space). */
const EXPECTED: [number, number][][] = [
  [],
  [[0x12345, 5], [0x12348, 5]],
  [[0, 2], [0xf_ffff_ffff, 2]],
  [[0x4242, 1], [0x4242, 2], [0x4242, 5]],
  [[0x4242, 1], [0x4242, 2], [0x4242, 5]],
  [],
  [[0x777, 1]],
  [[0x888, 2], [0x88b, 2]],
];

function replay(asidOf?: (sid: number, ssid: number) => number | undefined) {
  const recording = parseCmdqRecording(TEXT);
  let syncs = 0;
  const problems: string[] = [];
  const faults: SmmuCommand[] = [];
  const rig: CmdqReplayRig = new CmdqReplayRig(recording, {
    ...(asidOf ? { asidOf } : {}),
    hooks: {
      sev() {
        for (const [page, asid] of EXPECTED[syncs] ?? []) {
          if (!rig.host.covered(rig.vsmmu, page, asid)) problems.push(`sync ${syncs}: page ${page} ASID ${asid}`);
        }
        syncs++;
        rig.host.resetCoverage();
      },
      faultResponse: (c) => void faults.push({ ...c }),
    },
  });
  const result = rig.replay();
  return { rig, result, syncs, problems, faults };
}

Deno.test("smmuv3 synthetic replay: several streams and SSIDs, every TLBI form, ATC_INV, PRI_RESP, RESUME, CFGI_CD_ALL", () => {
  const { rig, result, syncs, problems, faults } = replay();
  assert.equal(rig.log2size, 4, "inferred from the highest slot of a queue that wrapped");
  assert.deepEqual([result.commands, result.processed, result.errors], [LINES.length, LINES.length, 0]);
  assert.equal(syncs, EXPECTED.length);
  assert.deepEqual(problems, []);
  assert.deepEqual(faults, [
    { op: "pri-resp", sid: 0x10, ssid: 3, grpid: 7, resp: 2 },
    { op: "resume", sid: 8, resp: 1, stag: 0x42 },
  ]);
  // Without the CDs, every ASID the TLBIs name is bound to every configured (stream, substream), SSID 3 as PASID 3.
  assert.deepEqual([...rig.configured].sort(), ["16/0", "16/3", "24/0", "8/0"]);
  assert.ok(rig.contexts.get(5)?.some((c) => c.pasid === 3 && c.domain === 17 * 65_536 + 5));
});

Deno.test("smmuv3 synthetic replay: with the CDs' ASIDs known, each context is bound with its own ASID only", () => {
  const cds: Record<string, number> = { "8/0": 1, "16/0": 2, "16/3": 5, "24/0": 1 };
  const { rig, result, problems } = replay((sid, ssid) => cds[`${sid}/${ssid}`]);
  assert.equal(result.errors, 0);
  assert.deepEqual(problems, []);
  assert.deepEqual(rig.contexts.get(5), [{ domain: 17 * 65_536 + 5, pasid: 3 }]);
  assert.deepEqual(rig.contexts.get(1)?.map((c) => c.domain), [9 * 65_536 + 1, 25 * 65_536 + 1]);
  assert.deepEqual(rig.contexts.get(2), [{ domain: 17 * 65_536 + 2, pasid: "rid" }]);
});
