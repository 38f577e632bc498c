// Capabilities decoded from GET_HW_INFO's bytes (Tegra241 CMDQV, AMD, the ATS and dirty-tracking bits), what a VMM
// may offer the guest from them, the AMD guest DTE's encoding, and the device layer acting on them at assign: no ATS
// where the host withholds it, no dirty-tracking guest over an IOMMU without it, no nesting on AMD.
import assert from "node:assert/strict";
import {
  amdGuestHwptData,
  decodeCapabilities,
  GuestIommu,
  guestOffer,
  requireNestingSupport,
} from "../../lib/device/mod.ts";
import { ModelHost } from "../../lib/host/model.ts";
import { ModelDeviceHost } from "../../lib/host/model_device_host.ts";
import { UnsupportedError } from "../../lib/kernel/errors.ts";
import { HwCapabilities, HwInfoType, IommuHwInfoTegra241Cmdqv, IommuHwptAmdGuest } from "../../lib/uapi/mod.ts";

const T = HwInfoType.values, C = HwCapabilities.values;

Deno.test("capabilities: Tegra241 CMDQV hw info decoded from its bytes (PARAM fields, VCMDQ count)", () => {
  const bytes = new Uint8Array([0, 0, 0, 0, 0x01, 0x06, 0x04, 0]); // version 1, 64 VCMDQs, 16 SID replacements
  assert.equal(bytes.byteLength, IommuHwInfoTegra241Cmdqv.size);
  const caps = decodeCapabilities({
    type: T.IOMMU_HW_INFO_TYPE_TEGRA241_CMDQV,
    data: bytes,
    maxPasidLog2: 0,
    capabilities: 0n,
  });
  assert.deepEqual(caps.iommu, {
    kind: "tegra241-cmdqv",
    flags: 0,
    version: 1,
    log2vcmdqs: 6,
    log2vsids: 4,
    vcmdqs: 64,
  });
  assert.equal(guestOffer(caps).hardwareQueues, 64, "guest commands can go to 64 hardware queues");
  // A flag this decoder does not know is reported, not fatal; too few bytes is "other".
  bytes[0] = 2;
  const future = decodeCapabilities({ type: 3, data: bytes, maxPasidLog2: 0, capabilities: 0n });
  assert.equal(future.iommu.kind === "tegra241-cmdqv" && future.iommu.flags, 2);
  assert.equal(
    decodeCapabilities({ type: 3, data: bytes.subarray(0, 6), maxPasidLog2: 0, capabilities: 0n }).iommu.kind,
    "other",
  );
  assert.equal(
    guestOffer(decodeCapabilities({ type: 0, data: new Uint8Array(0), maxPasidLog2: 0, capabilities: 0n }))
      .hardwareQueues,
    0,
  );
});

Deno.test("capabilities: AMD EFR decoded from its bytes (the VMM-allowed bits)", () => {
  const data = new Uint8Array(16);
  const v = new DataView(data.buffer);
  const efr = (1n << 4n) | (1n << 1n) | (1n << 7n) | (1n << 48n) | (1n << 50n) | (1n << 12n) | (2n << 14n) |
    (15n << 32n);
  v.setBigUint64(0, efr, true);
  v.setBigUint64(8, 0x5n, true);
  const caps = decodeCapabilities({ type: T.IOMMU_HW_INFO_TYPE_AMD, data, maxPasidLog2: 16, capabilities: 0n });
  assert.deepEqual(caps.iommu, {
    kind: "amd",
    efr,
    efr2: 5n,
    guestTranslation: true,
    ppr: true,
    guestVapic: true,
    guestIoProtection: true,
    enhancedPpr: true,
    gats: 1,
    glx: 2,
    pasidBits: 16,
  });
  v.setBigUint64(0, 0n, true);
  const bare = decodeCapabilities({ type: T.IOMMU_HW_INFO_TYPE_AMD, data, maxPasidLog2: 0, capabilities: 0n });
  assert.equal(bare.iommu.kind === "amd" && bare.iommu.guestTranslation, false);
});

Deno.test("capabilities: the AMD guest DTE encodes as IOMMU_HWPT_DATA_AMD_GUEST, four little-endian words", () => {
  const dte: [bigint, bigint, bigint, bigint] = [0x1n, 0x2_0000_0000n, 0n, 0x8000_0000_0000_0001n];
  const data = amdGuestHwptData(dte);
  assert.equal(data.type, 3);
  assert.deepEqual(IommuHwptAmdGuest.decode(data.bytes).dte, dte);
});

Deno.test("capabilities: AMD nesting is refused with a typed unsupported (7.3 has no AMD vIOMMU or invalidation type)", () => {
  const amd = decodeCapabilities({
    type: T.IOMMU_HW_INFO_TYPE_AMD,
    data: new Uint8Array(16),
    maxPasidLog2: 0,
    capabilities: 0n,
  });
  assert.throws(() => requireNestingSupport(amd), (e) => e instanceof UnsupportedError && e.feature === "amd-nesting");
  const host = new ModelDeviceHost(new ModelHost());
  using guest = new GuestIommu(host);
  const port = host.port({
    hwInfo: { type: T.IOMMU_HW_INFO_TYPE_AMD, data: new Uint8Array(16), maxPasidLog2: 0, capabilities: 0n },
  });
  assert.throws(
    () => guest.assign(port, { domain: 1 }),
    (e) => e instanceof UnsupportedError && e.feature === "amd-nesting",
  );
  assert.throws(() => port.attachRid(1), /disposed/, "the port was released: nothing half-assigned");
  assert.equal(guest.devices.length, 0);
});

Deno.test("capabilities: IOMMU_HW_CAP_PCI_ATS_NOT_SUPPORTED withholds ATS; an ATS assign is refused before anything is made", () => {
  const info = (capabilities: bigint) => ({ type: 0, data: new Uint8Array(0), maxPasidLog2: 20, capabilities });
  const refused = guestOffer(decodeCapabilities(info(BigInt(C.IOMMU_HW_CAP_PCI_ATS_NOT_SUPPORTED))));
  assert.deepEqual([refused.ats, refused.dirtyTracking], [false, false]);
  const allowed = guestOffer(decodeCapabilities(info(BigInt(C.IOMMU_HW_CAP_DIRTY_TRACKING))));
  assert.deepEqual([allowed.ats, allowed.atsWithheld, allowed.dirtyTracking], [true, undefined, true]);
  const model = new ModelHost();
  const host = new ModelDeviceHost(model);
  using guest = new GuestIommu(host);
  let parents = 0;
  const alloc = host.allocParent.bind(host);
  host.allocParent = (...args) => (parents++, alloc(...args));
  assert.throws(
    () =>
      guest.assign(host.port({ hwInfo: info(BigInt(C.IOMMU_HW_CAP_PCI_ATS_NOT_SUPPORTED)) }), { domain: 1, ats: true }),
    (e) => e instanceof UnsupportedError && e.feature === "ats",
  );
  assert.equal(parents, 0, "no nesting parent was allocated");
  using dev = guest.assign(host.port({ hwInfo: info(0n) }), { domain: 2, ats: true });
  assert.equal(dev.ats, true);
  assert.equal(dev.offer.ats, true);
});

Deno.test("capabilities: a dirty-tracking guest refuses a device without IOMMU_HW_CAP_DIRTY_TRACKING, and the model host has none", () => {
  const host = new ModelDeviceHost(new ModelHost());
  using guest = new GuestIommu(host, { dirtyTracking: true });
  assert.throws(
    () => guest.assign(host.port(), { domain: 1 }),
    (e) => e instanceof UnsupportedError && e.feature === "dirty-tracking",
  );
  const port = host.port({
    hwInfo: { type: 0, data: new Uint8Array(0), maxPasidLog2: 20, capabilities: BigInt(C.IOMMU_HW_CAP_DIRTY_TRACKING) },
  });
  using dev = guest.assign(port, { domain: 1 });
  assert.equal(dev.offer.dirtyTracking, true);
  // The in-process host keeps no dirty bits: asking is the typed error, never an empty bitmap.
  assert.throws(() => guest.dirty, (e) => e instanceof UnsupportedError && /no dirty tracking/.test(e.detail));
});
