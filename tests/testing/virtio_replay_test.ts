// Linux's virtio-iommu driver, recorded (tests/fixtures/traces/virtio-*.txt.gz: arm64 strict, x86 lazy), replayed
// through the virtio front end onto shadowed domains, one request at a time and one kick at a time (a kick's UNMAPs
// merged into fewer IOAS unmaps). When the guest can read a status (after its request, or after its kick when the
// kick is handled as one batch) the host's mappings must equal what the guest's MAP/UNMAP history says; that history
// is kept here from the recording's text alone.
import assert from "node:assert/strict";
import { parseVirtioRecording, VirtioReplayRig } from "../../lib/testing/virtio_replay.ts";
import { readRecordingText } from "../../lib/testing/recordings.ts";

const FIXTURES = new URL("../fixtures/traces/", import.meta.url);

for (const name of ["virtio-strict-thp", "virtio-x86-lazy"]) {
  for (const batchKicks of [false, true]) {
    const how = batchKicks ? "kick by kick (UNMAPs merged)" : "request by request";
    Deno.test(`virtio replay ${name}, ${how}: every request OK; the IOAS equals the guest's map history`, async () => {
      const text = await readRecordingText(new URL(`${name}.txt.gz`, FIXTURES));
      const stats = JSON.parse(await Deno.readTextFile(new URL(`${name}.stats.json`, FIXTURES)));
      // The guest's view, from the text: domain -> live mappings (first page -> pages, phys page, flags).
      const live = new Map<string, Map<number, { pages: number; phys: number; flags: number }>>();
      const lines = text.split("\n").filter((l) => l && !l.startsWith("#")).map((l) => l.split(" "));
      const byType: Record<string, number> = {};
      const problems: string[] = [];
      const rig = new VirtioReplayRig(2 ** 40, { batchKicks });
      const requests = parseVirtioRecording(text);
      assert.equal(requests.length, lines.length);
      // Pages UNMAPped since the last check, per domain.
      const unmapped: [string, number][] = [];
      let i = 0;
      const result = rig.replay(requests, (_r, status) => {
        const f = lines[i++];
        const lastOfKick = i === lines.length || lines[i][2] !== f[2];
        byType[f[3]] = (byType[f[3]] ?? 0) + 1;
        if (status !== 0) problems.push(`seq ${f[0]} ${f[3]}: status ${status}`);
        const domain = f[4];
        if (f[3] === "MAP" || f[3] === "UNMAP") {
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
            unmapped.push([domain, first], [domain, first + pages - 1]);
          }
        }
        if (batchKicks && !lastOfKick) return;
        for (const [d, p] of unmapped.splice(0)) {
          const guestMapped = [...live.get(d)!].some(([s, m]) => p >= s && p < s + m.pages);
          if (!guestMapped && rig.ioas(Number(d))?.lookup(p)) {
            problems.push(`seq ${f[0]}: page ${p} mapped after UNMAP`);
          }
        }
        for (const [d, maps] of live) {
          const ioas = rig.ioas(Number(d));
          if ((ioas?.areas.size ?? 0) !== maps.size) {
            problems.push(`seq ${f[0]}: domain ${d} has ${ioas?.areas.size} areas, the guest ${maps.size} mappings`);
          }
          for (const [start, m] of maps) {
            for (const k of [0, m.pages - 1]) {
              const got = ioas?.lookup(start + k);
              if (
                !got || got.gpaPage !== m.phys + k || got.read !== !!(m.flags & 1) || got.write !== !!(m.flags & 2)
              ) {
                problems.push(`seq ${f[0]}: page ${start + k} is ${JSON.stringify(got)}, guest mapped ${m.phys + k}`);
              }
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
      assert.equal(result.ioasMaps, maps, "one IOAS map per MAP");
      if (!batchKicks) assert.equal(result.ioasUnmaps, unmaps, "one IOAS unmap per UNMAP");
      else assert.ok(result.ioasUnmaps <= unmaps, "merging never adds a host call");
      console.log(
        `${name} ${how}: ${stats.requests} requests in ${result.kicks} kicks; IOAS calls: ${result.ioasMaps} maps, ` +
          `${result.ioasUnmaps} unmaps (${(result.ioasUnmaps / unmaps).toFixed(2)} per UNMAP)`,
      );
    });
  }
}

Deno.test("virtio replay, synthetic: domains live while an endpoint is attached; an ATTACH elsewhere moves the endpoint", () => {
  // seq phase kick type domain endpoint virt_start virt_end phys_start flags extra (written from the spec, not Linux).
  const text = [
    "0 0 1 ATTACH 1 8 - - - -",
    "1 0 2 MAP 1 - 0x10000 0x10fff 0x5000 3",
    "2 0 3 ATTACH 2 8 - - - -", // endpoint 8 leaves domain 1, its last: domain 1 and its mapping are gone
    "3 0 4 ATTACH 1 9 - - - -",
    "4 0 5 MAP 1 - 0x10000 0x10fff 0x6000 1", // a fresh domain 1: no overlap
    "5 0 6 DETACH 1 8 - - - -", // 8 is attached to 2: INVAL
    "6 0 7 DETACH 1 77 - - - -", // unknown endpoint: NOENT
    "7 0 8 ATTACH 3 10 - - - -",
    "8 0 9 ATTACH 3 11 - - - -",
    "9 0 10 MAP 3 - 0x20000 0x21fff 0x7000 2",
    "10 0 11 DETACH 3 10 - - - -", // 11 still attached: the mapping stays
    "11 0 12 DETACH 3 11 - - - -", // the last one: unmapped on the host
  ].join("\n");
  const statuses: number[] = [];
  const rig = new VirtioReplayRig(2 ** 40, { batchKicks: true });
  let after10 = false;
  rig.replay(parseVirtioRecording(text), (r, status) => {
    statuses.push(status);
    if (r.seq === 10) after10 = rig.ioas(3)?.lookup(0x21)?.gpaPage === 8;
  });
  assert.deepEqual(statuses, [0, 0, 0, 0, 0, 4, 6, 0, 0, 0, 0, 0]);
  assert.deepEqual(rig.ioas(1)?.lookup(0x10), { gpaPage: 6, read: true, write: false });
  assert.ok(after10, "domain 3 kept its mapping while endpoint 11 was attached");
  assert.equal(rig.ioas(3), undefined, "domain 3 destroyed");
  assert.equal(rig.ioasUnmaps, 2, "one host unmap per destroyed domain");
});
