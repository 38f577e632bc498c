import assert from "node:assert/strict";
import { ModelDeviceHost } from "../../lib/host/model_device_host.ts";
import { ModelHost } from "../../lib/host/model.ts";
import { RestoreError, SnapshotError } from "../../lib/device/snapshot.ts";
import {
  crc32,
  decodeRelaySnapshot,
  encodeRelaySnapshot,
  HOST_RESPONSE,
  type RelaySink,
  restoreRelay,
  SmmuCommandQueue,
  SmmuEventQueue,
  SmmuPriQueue,
  SNAPSHOT_VERSION,
  snapshotRelay,
} from "../../lib/frontends/mod.ts";
import {
  assignAndBind,
  DESCRIPTORS,
  FAULT_PASID,
  frontends,
  GROUP,
  IQA,
  memoryOver,
  PQA,
  RID_A,
  STATUS,
  target,
  writeDescriptors,
} from "./snapshot_workload.ts";

const HALF = 60;

/** The first process's part: bind, ring the first half, leave a page request unanswered, take the snapshot. */
function firstHalf(clock: { now: number }) {
  const ram = new Uint8Array(1 << 20);
  writeDescriptors(ram);
  const host = new ModelDeviceHost(new ModelHost());
  const guest = assignAndBind(host);
  const answers: [number, number][] = [];
  const fe = frontends(ram, guest.queue, (cookie, code) => answers.push([cookie, code]), () => clock.now);
  fe.vtdQueue.writeIqa(IQA);
  fe.vtdPrq.writePqa(PQA);
  const first = fe.vtdQueue.writeIqt(HALF * 16);
  assert.deepEqual([first.processed, first.waitsCompleted, first.error], [HALF, HALF / 10, undefined]);
  fe.vtdPrq.deliver({
    rid: RID_A,
    pasid: FAULT_PASID,
    page: 0x10005,
    read: true,
    write: false,
    exec: false,
    priv: false,
    lastInGroup: true,
    grpid: GROUP,
    cookie: 4242,
  });
  assert.equal(fe.vtdPrq.pending, 1);
  // A non-recoverable fault the guest has not read yet: its FRCD and FSTS travel with the snapshot.
  fe.vtdFaults.record({ sid: RID_A, pasid: 3, address: 0x7000_1000, read: false, reason: 0x5 });
  return { ram, host, guest, answers, fe };
}

Deno.test("snapshot: mid-workload, restored in another process — nothing lost, nothing done twice, page request answered to the old host", async () => {
  const clock = { now: 1_000 };
  const { ram, host, guest, answers, fe } = firstHalf(clock);
  using _guest = guest;
  clock.now += 4_000; // 6 s of the page request's 10 s left
  const bytes = snapshotRelay(guest, fe);
  assert.deepEqual(answers, [[4242, HOST_RESPONSE.SUCCESS]], "the old host was answered before the snapshot");
  assert.equal(fe.vtdPrq.pending, 0);
  for (let i = 0; i < HALF; i++) {
    const t = target(i);
    if (!t) continue;
    const dev = guest.devices.find((d) => d.key === t.key)!;
    assert.ok(host.model.covered(dev.boundTo(t.pasid)!, t.page), `descriptor ${i} reached the old host`);
  }

  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeFile(`${dir}/snapshot`, bytes);
    await Deno.writeFile(`${dir}/ram`, ram);
    const out = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--allow-read",
        new URL("./snapshot_restore_process.ts", import.meta.url).pathname,
        `${dir}/snapshot`,
        `${dir}/ram`,
        String(clock.now + 100),
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stderr = new TextDecoder().decode(out.stderr);
    assert.ok(out.success, stderr);
    const r = JSON.parse(new TextDecoder().decode(out.stdout));
    assert.equal(r.error, undefined);
    assert.deepEqual(r.asked, ["00:03.0", "00:04.0"], "each device's new port asked for by its key, in order");
    assert.deepEqual(r.doorbell, { processed: DESCRIPTORS - HALF, waitsCompleted: (DESCRIPTORS - HALF) / 10 });
    assert.equal(r.iqh, DESCRIPTORS * 16);
    for (let i = 0; i < DESCRIPTORS; i++) {
      if (!target(i)) continue;
      assert.equal(
        r.covered[i],
        i >= HALF,
        i >= HALF ? `descriptor ${i} was lost` : `descriptor ${i} was relayed again after the restore`,
      );
    }
    for (let k = 0; k < DESCRIPTORS / 10; k++) assert.equal(r.statuses[k], 0x100 + 10 * k + 9, `wait ${k}`);
    assert.deepEqual(r.answers, [], "the guest's answer after the restore is not forwarded: its host was answered");
    assert.equal(r.prq.lateAnswers, 1, "and it was taken, not refused");
    assert.equal(r.prq.refused, 0);
    assert.deepEqual(r.faults, fe.vtdFaults.saveState(), "the fault recording registers as the guest left them");
    assert.deepEqual(r.devices, [
      {
        key: "00:03.0",
        domain: 1,
        mode: "nested",
        ats: false,
        bound: [1, 2, 3, 4].map((p) => ({
          pasid: p,
          table: { format: "vtd-s1", tableAddress: 0x40000 + p * 0x1000, addressWidth: 48 },
        })),
      },
      {
        key: "00:04.0",
        domain: 2,
        mode: "nested",
        ats: false,
        bound: [
          { pasid: "rid", table: { format: "vtd-s1", tableAddress: 0x50000, addressWidth: 48 } },
          { pasid: 7, table: { format: "vtd-s1", tableAddress: 0x51000, addressWidth: 57, sre: true } },
        ],
      },
    ]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("snapshot: refused while the relay holds work — before any page request is answered", () => {
  const clock = { now: 0 };
  const { guest, answers, fe } = firstHalf(clock);
  using _guest = guest;
  guest.queue.submit({ op: "invalidate", domain: 1, scope: { kind: "pasid", pasid: 1 } });
  assert.throws(() => snapshotRelay(guest, fe), (e) => e instanceof SnapshotError && e.reason === "busy");
  assert.deepEqual(answers, [], "nothing answered for a snapshot that was not taken");
  assert.equal(fe.vtdPrq.pending, 1);
  guest.queue.drain();
  assert.ok(snapshotRelay(guest, fe).length > 20);
});

/** A restore target: a fresh host and front ends that must stay untouched when the restore fails. */
function fresh() {
  const ram = new Uint8Array(1 << 20);
  const host = new ModelDeviceHost(new ModelHost());
  const sink: RelaySink = { submit: () => 0, drain: () => assert.fail("not drained") };
  const fe = frontends(ram, sink, () => assert.fail("no host answer"), () => 0);
  return { host, fe, ports: [] as ReturnType<ModelDeviceHost["port"]>[] };
}

function snapshotBytes(): Uint8Array {
  const { guest, fe } = firstHalf({ now: 0 });
  using _guest = guest;
  return snapshotRelay(guest, fe);
}

function expectSnapshotError(bytes: Uint8Array, reason: SnapshotError["reason"], what?: string): void {
  const t = fresh();
  assert.throws(
    () => restoreRelay(bytes, t.host, () => assert.fail("no port is asked for before every check passed"), t.fe),
    (e) => e instanceof SnapshotError && e.reason === reason,
    what,
  );
  assert.deepEqual([t.fe.vtdQueue.base, t.fe.vtdQueue.iqh, t.fe.vtdPrq.base], [0, 0, 0], "front ends untouched");
}

Deno.test("snapshot: a newer version, a corrupted byte, a cut, a foreign file — typed errors, nothing restored", () => {
  const bytes = snapshotBytes();
  const body = JSON.parse(new TextDecoder().decode(bytes.subarray(20)));
  expectSnapshotError(encodeRelaySnapshot(body, SNAPSHOT_VERSION + 1), "newer-version");
  expectSnapshotError(encodeRelaySnapshot(body, 0), "unknown-version");
  for (const at of [20, 100, bytes.length - 1]) {
    const bad = bytes.slice();
    bad[at] ^= 0x20;
    expectSnapshotError(bad, "checksum");
  }
  const badCrc = bytes.slice();
  badCrc[17] ^= 1;
  expectSnapshotError(badCrc, "checksum");
  expectSnapshotError(bytes.subarray(0, bytes.length - 5), "truncated");
  expectSnapshotError(bytes.subarray(0, 12), "truncated");
  const foreign = bytes.slice();
  foreign[0] = 0x7f;
  expectSnapshotError(foreign, "bad-magic");
  // A good checksum over a body that breaks the format: every field is checked all the same.
  const tampered = structuredClone(body);
  tampered.guest.devices[1].bound[0].table.addressWidth = 39;
  expectSnapshotError(encodeRelaySnapshot(tampered), "malformed");
  const outside = structuredClone(body);
  outside.frontends.vtdQueue.iqh = 1 << 20;
  expectSnapshotError(encodeRelaySnapshot(outside), "malformed");
  const unknown = structuredClone(body);
  unknown.frontends.gicv3 = {};
  expectSnapshotError(encodeRelaySnapshot(unknown), "malformed");
  // The CRC is no MAC: whoever writes a body recomputes it. A bind no guest could make, a virtual id given twice, a
  // page request group carried twice or for longer than any group is given, a key that JSON.parse makes an own
  // property called __proto__: each is malformed before any port is asked for, not a rollback half-way.
  const hostile: Record<string, (b: typeof body) => void> = {
    "PASID past 20 bits": (b) => b.guest.devices[0].bound[1].pasid = 2 ** 20,
    "PASID 2^32 - 1": (b) => b.guest.devices[0].bound[1].pasid = 2 ** 32 - 1,
    "misaligned table": (b) => b.guest.devices[0].bound[0].table.tableAddress = 0x1001,
    "virtual id twice": (b) => {
      b.guest.devices[0].virtId = 5;
      b.guest.devices[1].virtId = 5;
    },
    "group carried twice": (b) => b.frontends.vtdPrq.groups.carried.push(b.frontends.vtdPrq.groups.carried[0]),
    "group carried forever": (b) => b.frontends.vtdPrq.groups.carried[0].remainingMs = 2 ** 53 - 1,
    "__proto__ for the device list": (b) => b.guest = JSON.parse('{"__proto__": {"devices": []}}'),
  };
  for (const [what, change] of Object.entries(hostile)) {
    const b = structuredClone(body);
    change(b);
    expectSnapshotError(encodeRelaySnapshot(b), "malformed", what);
  }
  assert.equal(crc32(bytes.subarray(20)), new DataView(bytes.buffer).getUint32(16, true), "the documented CRC-32");
  assert.equal(decodeRelaySnapshot(bytes).version, 1);
});

Deno.test("snapshot: a bind the new host refuses rolls the whole restore back; the front ends stay as they were", () => {
  const bytes = snapshotBytes();
  const t = fresh();
  const made: number[] = [];
  const model = t.host.model;
  const create = model.createTarget.bind(model);
  model.createTarget = (format, iotlb) => {
    const id = create(format, iotlb);
    made.push(id);
    return id;
  };
  assert.throws(
    () =>
      restoreRelay(bytes, t.host, (d) => {
        const port = t.host.port({ label: d.key });
        t.ports.push(port);
        if (d.key === "00:04.0") {
          // The second device's PASID 7 attach fails on the new host (EBUSY, as a PASID attached already is).
          port.attachPasid(7, 999);
        }
        return port;
      }, t.fe),
    (e) => e instanceof RestoreError && e.step === "bind" && e.device === "00:04.0" && e.pasid === 7,
  );
  assert.ok(made.length >= 4, "parents and nested tables were built before the failing bind");
  for (const id of made) assert.deepEqual(model.iotlb(id), [], `host object ${id} destroyed by the rollback`);
  assert.ok(t.ports.every((p) => p.attachedAt("rid") === 0), "every port released");
  assert.deepEqual([t.fe.vtdQueue.base, t.fe.vtdPrq.base], [0, 0], "front ends untouched");
});

Deno.test("snapshot: a front end missing on either side is a RestoreError before anything is built", () => {
  const bytes = snapshotBytes();
  const t = fresh();
  assert.throws(
    () => restoreRelay(bytes, t.host, () => assert.fail("nothing built"), { vtdQueue: t.fe.vtdQueue }),
    (e) => e instanceof RestoreError && e.step === "frontend" && e.device === "vtdPrq",
  );
});

Deno.test("snapshot: SMMUv3 queues — registers, a CONS error, stalls and PRI groups carried", () => {
  const ram = new Uint8Array(1 << 16);
  const memory = memoryOver(ram);
  const host = new ModelDeviceHost(new ModelHost());
  using guest = assignAndBind(host);
  const hooks = { asidUsers: () => [], domains: () => [1] };
  const answers: [number, number][] = [];
  const make = () => {
    const cmdq = new SmmuCommandQueue(memory, guest.queue, hooks, { maxHostRetries: 1 });
    const evtq = new SmmuEventQueue(memory, { now: () => 0 });
    evtq.enableStalls((c, code) => answers.push([c, code]));
    const priq = new SmmuPriQueue(memory, (c, code) => answers.push([c, code]), { now: () => 0 });
    return { smmuCmdq: cmdq, smmuEvtq: evtq, smmuPriq: priq };
  };
  const a = make();
  a.smmuCmdq.writeBase(0x4000_0000_0000_2008n);
  a.smmuEvtq.writeBase(0x3000n | 3n);
  a.smmuPriq.writeBase(0x3400n | 3n);
  new DataView(ram.buffer).setUint32(0x2000, 0xff, true); // an unknown opcode: CERROR_ILL at 0
  a.smmuCmdq.writeProd(1);
  const fault = {
    rid: 0x88,
    pasid: 5,
    page: 7,
    read: true,
    write: false,
    exec: false,
    priv: false,
    lastInGroup: true,
    grpid: 3,
  };
  a.smmuPriq.deliver({ ...fault, cookie: 1 });
  a.smmuEvtq.postStall({ ...fault, cookie: 2 });
  const bytes = snapshotRelay(guest, a, { pageResponse: HOST_RESPONSE.INVALID });
  assert.deepEqual(answers.sort(), [[1, 1], [2, 1]], "both answered to the old host with the code asked for");
  const b = make();
  const fresh = new ModelDeviceHost(new ModelHost());
  using restored = restoreRelay(bytes, fresh, (d) => fresh.port({ label: d.key }), b);
  assert.deepEqual(b.smmuCmdq.saveState(), a.smmuCmdq.saveState());
  assert.deepEqual(b.smmuEvtq.saveState(), a.smmuEvtq.saveState());
  assert.deepEqual(b.smmuPriq.saveState(), a.smmuPriq.saveState());
  assert.equal(b.smmuCmdq.cons >>> 24, 1, "CONS.ERR = CERROR_ILL carried");
  assert.equal(b.smmuPriq.guestResponse({ op: "pri-resp", sid: 0x88, ssid: 5, grpid: 3, resp: 2 }), undefined);
  assert.equal(b.smmuEvtq.guestResume({ op: "resume", sid: 0x88, stag: 1, resp: 1 }), undefined);
  assert.equal(answers.length, 2, "late answers are taken, not forwarded");
  assert.equal(restored.devices.length, 2);
});

Deno.test("snapshot: STATUS words and the descriptor layout of the shared workload are what the test expects", () => {
  // Guards the workload itself: if the descriptors stopped being distinct pages, 'nothing done twice' could not fail.
  const pages = new Set<string>();
  for (let i = 0; i < DESCRIPTORS; i++) {
    const t = target(i);
    if (t) pages.add(`${t.key}/${t.pasid}/${t.page}`);
  }
  assert.equal(pages.size, DESCRIPTORS - DESCRIPTORS / 10 - 1);
  assert.ok(STATUS > 0x1000 + DESCRIPTORS * 16);
});
