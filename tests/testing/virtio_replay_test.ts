// Linux's virtio-iommu driver, recorded (tests/fixtures/traces/virtio-*.txt.gz: arm64 strict, x86 lazy), replayed
// through the virtio front end onto shadowed domains. After every request's status the host's mappings must equal
// what the guest's MAP/UNMAP history says; that history is kept here from the recording's text alone.
import assert from "node:assert/strict";
import { parseVirtioRecording, VirtioReplayRig } from "../../lib/testing/virtio_replay.ts";
import { readRecordingText } from "../../lib/testing/recordings.ts";

const FIXTURES = new URL("../fixtures/traces/", import.meta.url);

for (const name of ["virtio-strict-thp", "virtio-x86-lazy"]) {
  Deno.test(`virtio replay ${name}: every request OK; after each status the IOAS equals the guest's map history`, async () => {
    const text = await readRecordingText(new URL(`${name}.txt.gz`, FIXTURES));
    const stats = JSON.parse(await Deno.readTextFile(new URL(`${name}.stats.json`, FIXTURES)));
    // The guest's view, from the text: domain -> live mappings (first page -> pages, phys page, flags).
    const live = new Map<string, Map<number, { pages: number; phys: number; flags: number }>>();
    const lines = text.split("\n").filter((l) => l && !l.startsWith("#")).map((l) => l.split(" "));
    const byType: Record<string, number> = {};
    const problems: string[] = [];
    const rig = new VirtioReplayRig();
    const requests = parseVirtioRecording(text);
    assert.equal(requests.length, lines.length);
    let i = 0;
    const result = rig.replay(requests, (_r, status) => {
      const f = lines[i++];
      byType[f[3]] = (byType[f[3]] ?? 0) + 1;
      if (status !== 0) problems.push(`seq ${f[0]} ${f[3]}: status ${status}`);
      const domain = f[4];
      if (f[3] !== "MAP" && f[3] !== "UNMAP") return;
      const first = Number(BigInt(f[6]) / 4096n), pages = Number((BigInt(f[7]) + 1n - BigInt(f[6])) / 4096n);
      let maps = live.get(domain);
      if (!maps) live.set(domain, maps = new Map());
      if (f[3] === "MAP") maps.set(first, { pages, phys: Number(BigInt(f[8]) / 4096n), flags: Number(f[9]) });
      else {
        let removed = 0;
        for (const [start, m] of maps) {
          if (start >= first && start + m.pages <= first + pages) maps.delete(start), removed++;
        }
        if (f[10] !== `removed=${removed}`) {
          problems.push(`seq ${f[0]}: history removes ${removed}, recording ${f[10]}`);
        }
        for (const p of [first, first + pages - 1]) {
          if (rig.ioas(Number(domain))?.lookup(p)) problems.push(`seq ${f[0]}: page ${p} still mapped after UNMAP`);
        }
      }
      const ioas = rig.ioas(Number(domain));
      for (const [start, m] of maps) {
        for (const k of [0, m.pages - 1]) {
          const got = ioas?.lookup(start + k);
          if (!got || got.gpaPage !== m.phys + k || got.read !== !!(m.flags & 1) || got.write !== !!(m.flags & 2)) {
            problems.push(`seq ${f[0]}: page ${start + k} is ${JSON.stringify(got)}, guest mapped ${m.phys + k}`);
          }
        }
      }
    });
    assert.deepEqual(problems.slice(0, 5), [], `${problems.length} problems`);
    assert.equal(result.requests, stats.requests);
    assert.deepEqual(result.statuses, { 0: stats.requests });
    assert.deepEqual(byType, stats.by_type);
    assert.equal(result.kicks, stats.request_queue_kicks);
    const unmaps = stats.by_type.UNMAP, maps = stats.by_type.MAP;
    console.log(
      `${name}: ${stats.requests} requests in ${result.kicks} kicks; IOAS calls: ${result.ioasMaps} maps, ` +
        `${result.ioasUnmaps} unmaps (${(result.ioasUnmaps / unmaps).toFixed(2)} per UNMAP, ${
          (result.ioasMaps / maps).toFixed(2)
        } per MAP)`,
    );
  });
}
