import assert from "node:assert/strict";
import { ModelDeviceHost } from "../../lib/host/model_device_host.ts";
import { ModelHost } from "../../lib/host/model.ts";
import { GuestIommu } from "../../lib/device/assigned.ts";
import {
  decodeGuestIommuState,
  encodeGuestIommuState,
  RestoreError,
  restoreGuestIommu,
  SnapshotError,
} from "../../lib/device/snapshot.ts";
import { MockConstants, ViommuType } from "../../lib/uapi/mod.ts";

const STE: readonly [bigint, bigint] = [0x8000_0000_0000_0011n, 0xffff_0000_0000_0001n];

Deno.test("device snapshot: vIOMMU mode round trip — virtual ids, ATS, SMMUv3 STE words and CD ASIDs", () => {
  const old = new ModelDeviceHost(new ModelHost());
  using guest = new GuestIommu(old, {
    viommu: { type: ViommuType.values.IOMMU_VIOMMU_TYPE_ARM_SMMUV3, format: "smmuv3" },
  });
  const a = guest.assign(old.port(), { domain: 1, virtId: 0x88, ats: true, key: "a" });
  a.bind("rid", { format: "smmuv3", ste: STE, asid: 0 });
  a.bind(3, { format: "smmuv3", ste: STE, asid: 7 });
  const json = JSON.parse(JSON.stringify(encodeGuestIommuState(guest.state())));
  assert.equal(json.devices[0].bound[0].table.ste[0], "0x8000000000000011", "64-bit words as hex strings");
  const state = decodeGuestIommuState(json);
  assert.deepEqual(state, guest.state());
  const fresh = new ModelDeviceHost(new ModelHost());
  using restored = restoreGuestIommu(fresh, state, () => fresh.port());
  const d = restored.devices[0];
  assert.deepEqual([d.vdevice?.virtId, d.ats, d.key], [0x88, true, "a"]);
  assert.deepEqual(
    fresh.model.configInvalidations.map((c) => [c.vsid, c.ssid]),
    [[0x88, 3]],
    "the PASID's CD is announced to the new vIOMMU (CFGI_CD)",
  );
  assert.deepEqual(restored.queue.bindings(1, 3)[0].asid, 7);
  assert.equal(restored.queue.pending, false, "nothing left queued by the restore");
});

Deno.test("device snapshot: state() is refused while the queue holds work; the key defaults to the port's label", () => {
  const host = new ModelDeviceHost(new ModelHost());
  using guest = new GuestIommu(host);
  const dev = guest.assign(host.port({ label: "nic" }), { domain: 4 });
  dev.bind(2, { format: "selftest", iotlb: 1 });
  dev.handle({ op: "sync" });
  assert.throws(() => guest.state(), (e) => e instanceof SnapshotError && e.reason === "busy");
  dev.drain();
  assert.deepEqual(guest.state().devices[0].key, "nic", "the port's label when no key was given");
});

Deno.test("device snapshot: hostile JSON — each bad field is a SnapshotError naming it", () => {
  const good = {
    devices: [{
      key: "a",
      domain: 1,
      mode: "nested",
      ats: false,
      bound: [{ pasid: 5, table: { format: "selftest", iotlb: 1 } }],
    }],
  };
  const cases: [(j: typeof good & Record<string, unknown>) => void, string][] = [
    [(j) => (j.devices[0].domain = 2 ** 32), "devices[0].domain"],
    [(j) => ((j.devices[0] as Record<string, unknown>).mode = "pass-through"), "devices[0].mode"],
    [(j) => (j.devices[0].key = ""), "devices[0].key"],
    [(j) => j.devices.push(structuredClone(j.devices[0])), "devices[1].key"],
    [(j) => ((j.devices[0].bound[0] as Record<string, unknown>).pasid = -1), "devices[0].bound[0].pasid"],
    [(j) => j.devices[0].bound.push(structuredClone(j.devices[0].bound[0])), "devices[0].bound[1]"],
    [
      (j) => ((j.devices[0].bound[0].table as Record<string, unknown>).format = "amd-v2"),
      "devices[0].bound[0].table.format",
    ],
    [(j) => (j.viommu = { type: 1, format: "x86" }), "viommu.format"],
    [(j) => ((j as Record<string, unknown>).devices = {}), "devices"],
  ];
  for (const [spoil, path] of cases) {
    const j = structuredClone(good) as typeof good & Record<string, unknown>;
    spoil(j);
    assert.throws(() => decodeGuestIommuState(j), (e) => e instanceof SnapshotError && e.path === path, path);
  }
  assert.equal(decodeGuestIommuState(good).devices[0].bound[0].pasid, 5);
});

Deno.test("device snapshot: a port that cannot be made, or a bind the request layer refuses, rolls everything back", () => {
  const host = new ModelDeviceHost(new ModelHost());
  const state = decodeGuestIommuState({
    devices: [
      {
        key: "a",
        domain: 1,
        mode: "nested",
        ats: false,
        bound: [{ pasid: "rid", table: { format: "selftest", iotlb: 1 } }],
      },
      {
        key: "b",
        domain: 2,
        mode: "nested",
        ats: false,
        // A PASID any device may have (20 bits), past what this host's device has (8 bits): refused at its bind.
        bound: [{ pasid: 1 << 10, table: { format: "selftest", iotlb: 2 } }],
      },
    ],
  });
  const ports: ReturnType<ModelDeviceHost["port"]>[] = [];
  assert.throws(
    () => restoreGuestIommu(host, state, () => ports[ports.push(host.port({ pasidBits: 8 })) - 1]),
    (e) => e instanceof RestoreError && e.step === "bind" && e.device === "b" && e.pasid === 1 << 10,
  );
  assert.equal(ports.length, 2);
  assert.ok(ports.every((p) => p.attachedAt("rid") === 0), "both ports released");
  assert.throws(
    () =>
      restoreGuestIommu(host, state, () => {
        throw new Error("no such device on this host");
      }),
    (e) => e instanceof RestoreError && e.step === "assign" && e.device === "a",
  );
  // The selftest vIOMMU needs virtual ids: a state without one for a device is refused at assign.
  const viommu = decodeGuestIommuState({
    viommu: { type: MockConstants.values.IOMMU_VIOMMU_TYPE_SELFTEST, format: "selftest-viommu" },
    devices: [{ key: "a", domain: 1, mode: "nested", ats: false, bound: [] }],
  });
  assert.throws(
    () => restoreGuestIommu(host, viommu, () => host.port()),
    (e) => e instanceof RestoreError && e.step === "assign",
  );
});
