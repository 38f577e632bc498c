// Shadow mode on the real kernel: a selftest mock device in shadow mode; the guest's VT-d tables are built in a
// guest-RAM buffer, map-side and unmap-side invalidations go through the plugin and relay queue, and the host side
// is checked by the kernel itself: IOMMU_TEST_OP_MD_CHECK_MAP (addresses) and an access's ACCESS_RW (permissions).
import assert from "node:assert/strict";
import { MockAccess, MockDevice, mockMapTranslatesTo } from "../lib/kernel/selftest.ts";
import { KernelError } from "../lib/kernel/errors.ts";
import { RelayHost, relayPlugin } from "../lib/plugin/plugin.ts";
import type { KernelShadowIoas } from "../lib/shadow/kernel_ioas.ts";
import { GuestPageTables } from "../lib/shadow/page_tables.ts";
import { kernelTest, shim } from "./harness.ts";

const RAM = 16 << 20;
const BASE = 0x1000; // IOVA page 0x1000 = 16 MiB: the start of the mock's aperture

kernelTest(
  "shadow (kernel): map-side and unmap-side invalidations keep a mock domain equal to the guest table",
  [],
  () => {
    using host = RelayHost.kernel(shim);
    const ram = shim.alignedBuffer(RAM, 2 << 20); // 2 MiB aligned, so a guest 2 MiB page can use the mock's 1 MiB pages
    const tables = new GuestPageTables(ram, { format: "vtd-sl", levels: 4, tablesAt: 0xc0_0000 });
    using dev = relayPlugin.create(host, { domain: 1, device: { kind: "mock" }, mode: "shadow", shadow: { ram } });
    dev.submit({
      op: "bind",
      domain: 1,
      pasid: "rid",
      table: { format: "vtd-sl", tableAddress: tables.config.root, addressWidth: 48 },
    });
    const port = host.shadowDomain(1)!.port as KernelShadowIoas;
    const iommufd = host.iommufd!, ioasId = port.ioas.id;
    // A second mock device on the shadow IOAS: its mock domain mirrors the IOAS, and MD_CHECK_MAP reads a domain.
    using observer = MockDevice.create(iommufd, ioasId);
    const relay = (firstPage: number, pages: number, leaf = false) => {
      dev.submit({ op: "invalidate", domain: 1, scope: { kind: "range", firstPage, pages }, noPasid: true, leaf });
      dev.submit({ op: "sync" });
      const r = dev.drain();
      assert.deepEqual(r.failures, []);
      assert.ok(r.waits.every((w) => w.ok));
    };
    const translates = (iovaPage: number, gpaPage: number, pages: number) => {
      try {
        return mockMapTranslatesTo(
          iommufd,
          observer.hwptId,
          iovaPage * 4096,
          ram.subarray(gpaPage * 4096, (gpaPage + pages) * 4096),
        );
      } catch (e) {
        // Nothing mapped there: the mock reports a missing translation as an error, not as a mismatch.
        if (e instanceof KernelError) return false;
        throw e;
      }
    };
    // Map side: three 4 KiB pages (two contiguous), a read-only one, and a 2 MiB page.
    tables.map(BASE + 0, 0x100, { read: true, write: true });
    tables.map(BASE + 1, 0x101, { read: true, write: true });
    tables.map(BASE + 7, 0x2a0, { read: true, write: false });
    tables.map(BASE + 0x200, 0x400, { read: true, write: true }, 2);
    relay(BASE, 0x400);
    assert.ok(translates(BASE, 0x100, 2), "4 KiB pages, one run");
    assert.ok(translates(BASE + 7, 0x2a0, 1));
    assert.ok(translates(BASE + 0x200, 0x400, 0x200), "the 2 MiB page, all of it");
    assert.ok(!translates(BASE + 2, 0x102, 1), "a page the guest did not map is not mapped");
    const callsAfterMap = port.calls;
    assert.equal(callsAfterMap, 3, "three runs, three IOMMU_IOAS_MAP");

    // Permissions, through an in-kernel access doing DMA as an emulated device would.
    using access = MockAccess.create(iommufd, ioasId);
    const data = new Uint8Array(64).fill(0x5a);
    assert.equal(access.rw((BASE + 1) * 4096 + 128, data, true), 0, "a write to a RW page lands");
    assert.equal(ram[0x101 * 4096 + 128], 0x5a, "in guest RAM, at the guest-physical address the table gave");
    assert.equal(access.rw((BASE + 7) * 4096, data, true), -1, "a write to a read-only page is EPERM");
    const back = new Uint8Array(64);
    ram.fill(0x33, 0x2a0 * 4096, 0x2a0 * 4096 + 64);
    assert.equal(access.rw((BASE + 7) * 4096, back, false), 0, "a read of it works");
    assert.equal(back[0], 0x33);

    // The same range again, unchanged: no syscall.
    relay(BASE, 0x400);
    assert.equal(port.calls, callsAfterMap);

    // Unmap side: the guest unmaps page 1 (inside the first run) and the 2 MiB page, then invalidates with IH=1.
    tables.unmap(BASE + 1);
    tables.unmap(BASE + 0x200, 2);
    relay(BASE + 1, 1, true);
    relay(BASE + 0x200, 0x200, true);
    assert.ok(translates(BASE, 0x100, 1), "page 0 survives the split of its run");
    assert.ok(!translates(BASE + 1, 0x101, 1));
    assert.ok(!translates(BASE + 0x200, 0x400, 1));
    assert.notEqual(access.rw((BASE + 0x200) * 4096, back, false), 0, "DMA to the unmapped 2 MiB page fails");
    // A remap with a new permission: the page becomes writable.
    tables.map(BASE + 7, 0x2a0, { read: true, write: true });
    relay(BASE + 7, 1);
    assert.equal(access.rw((BASE + 7) * 4096, data, true), 0);
  },
);

kernelTest("shadow (kernel): a guest mapping outside the mock's aperture is the failing request's error", [], () => {
  using host = RelayHost.kernel(shim);
  const ram = shim.alignedBuffer(RAM);
  const tables = new GuestPageTables(ram, { format: "vtd-fl", levels: 4, tablesAt: 0xc0_0000 });
  using dev = relayPlugin.create(host, { domain: 1, device: { kind: "mock" }, mode: "shadow", shadow: { ram } });
  dev.submit({
    op: "bind",
    domain: 1,
    pasid: "rid",
    table: { format: "vtd-s1", tableAddress: tables.config.root, addressWidth: 48 },
  });
  tables.map(0x10, 0x100, { read: true, write: true }); // IOVA 64 KiB: below the mock aperture (16 MiB)
  tables.map(BASE, 0x101, { read: true, write: true });
  const bad = dev.submit({
    op: "invalidate",
    domain: 1,
    scope: { kind: "range", firstPage: 0x10, pages: 1 },
    noPasid: true,
  })!;
  const good = dev.submit({
    op: "invalidate",
    domain: 1,
    scope: { kind: "range", firstPage: BASE, pages: 1 },
    noPasid: true,
  })!;
  dev.submit({ op: "sync" });
  const r = dev.drain();
  assert.deepEqual(r.failures.map((f) => f.seq), [bad], JSON.stringify(r.failures));
  assert.ok(!r.failures.some((f) => f.seq === good));
  const d = host.shadowDomain(1)!;
  assert.deepEqual(d.areas.all.map((a) => a.firstPage), [BASE], "only what the kernel accepted is recorded");
});

kernelTest("shadow (kernel): auto mode shadows a device whose IOMMU offers no nesting parent, else nests", [], () => {
  using host = RelayHost.kernel(shim);
  const ram = shim.alignedBuffer(RAM);
  // The selftest mock offers a nesting parent: auto picks nested.
  using nested = relayPlugin.create(host, { domain: 1, device: { kind: "mock" }, shadow: { ram } });
  assert.equal(nested.telemetry.mode, "nested");
});
