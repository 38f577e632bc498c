// Shadow mode through the plugin layer on the in-process host: mode choice, RID binds, map-side and unmap-side
// invalidations through the relay queue, refusals, guest-visible host failures and disposal.
import assert from "node:assert/strict";
import { RelayHost, relayPlugin } from "../../lib/plugin/plugin.ts";
import { UnsupportedError } from "../../lib/kernel/errors.ts";
import { GuestPageTables } from "../../lib/shadow/page_tables.ts";
import type { ModelIoas } from "../../lib/shadow/model_ioas.ts";

const RAM = 1 << 23;
const range = (firstPage: number, pages: number) => ({
  op: "invalidate" as const,
  domain: 1,
  scope: { kind: "range" as const, firstPage, pages },
  noPasid: true,
});

Deno.test("shadow plugin: the guest's RID table is shadowed; only differences reach the host", () => {
  using host = RelayHost.inProcess();
  const ram = new Uint8Array(RAM);
  const tables = new GuestPageTables(ram, { format: "vtd-sl", levels: 4, tablesAt: 0x60_0000 });
  using nic = relayPlugin.create(host, { domain: 1, device: { kind: "model" }, mode: "shadow", shadow: { ram } });
  assert.equal(nic.telemetry.mode, "shadow");
  nic.submit({
    op: "bind",
    domain: 1,
    pasid: "rid",
    table: { format: "vtd-sl", tableAddress: tables.config.root, addressWidth: 48 },
  });
  const ioas = host.shadowDomain(1)!.port as ModelIoas;
  // Caching mode, as Linux sends it: IH=0 before the DMA map, IH=1 after the unmap, one wait per doorbell.
  for (let round = 0; round < 3; round++) {
    tables.map(0x100, 0x40, { read: true, write: true });
    tables.map(0x101, 0x41, { read: true, write: true });
    nic.submit(range(0x100, 2));
    nic.submit({ op: "sync" });
    assert.ok(nic.drain().waits.every((w) => w.ok));
    assert.deepEqual(ioas.lookup(0x101), { gpaPage: 0x41, read: true, write: true });
    tables.unmap(0x100);
    tables.unmap(0x101);
    nic.submit({ ...range(0x100, 2), leaf: true });
    nic.submit({ op: "sync" });
    assert.ok(nic.drain().waits.every((w) => w.ok));
    assert.equal(ioas.lookup(0x100), undefined);
  }
  assert.equal(ioas.calls, 6, "one map and one unmap per round");
  // An invalidation of a range that did not change costs nothing.
  tables.map(0x200, 0x50, { read: true, write: false });
  nic.submit(range(0x200, 1));
  nic.submit(range(0x200, 1));
  nic.drain();
  nic.submit(range(0x200, 1));
  nic.drain();
  assert.equal(ioas.calls, 7);
  assert.equal(nic.telemetry.shadow!.kept, 1);
});

Deno.test("shadow plugin: PASID binds and stage-1-only formats are refused typed; nested devices refuse vtd-sl", () => {
  using host = RelayHost.inProcess();
  const ram = new Uint8Array(RAM);
  using dev = relayPlugin.create(host, { domain: 1, device: { kind: "model" }, mode: "shadow", shadow: { ram } });
  assert.throws(
    () =>
      dev.submit({
        op: "bind",
        domain: 1,
        pasid: 5,
        table: { format: "vtd-s1", tableAddress: 0x1000, addressWidth: 48 },
      }),
    (e) => e instanceof UnsupportedError && e.feature === "pasid-shadow",
  );
  assert.throws(
    () => dev.submit({ op: "bind", domain: 1, pasid: "rid", table: { format: "selftest", iotlb: 1 } }),
    (e) => e instanceof UnsupportedError && e.feature === "shadow-selftest",
  );
  assert.equal(dev.telemetry.device.refused, 2);
  using nested = relayPlugin.create(host, { domain: 2, device: { kind: "model" } });
  assert.equal(nested.telemetry.mode, "nested", "auto on a host that nests: nested");
  assert.throws(
    () =>
      nested.submit({
        op: "bind",
        domain: 2,
        pasid: "rid",
        table: { format: "vtd-sl", tableAddress: 0x1000, addressWidth: 48 },
      }),
    (e) => e instanceof UnsupportedError && e.feature === "vtd-sl",
  );
  assert.throws(() => relayPlugin.create(host, { domain: 3, device: { kind: "model" }, mode: "shadow" }), TypeError);
});

Deno.test("shadow plugin: a host map failure is the guest-visible failure of the invalidation that caused it", () => {
  using host = RelayHost.inProcess();
  const ram = new Uint8Array(RAM);
  const tables = new GuestPageTables(ram, { format: "vtd-fl", levels: 4, tablesAt: 0x60_0000 });
  using dev = relayPlugin.create(host, { domain: 1, device: { kind: "model" }, mode: "shadow", shadow: { ram } });
  dev.submit({
    op: "bind",
    domain: 1,
    pasid: "rid",
    table: { format: "vtd-s1", tableAddress: tables.config.root, addressWidth: 48 },
  });
  const ioas = host.shadowDomain(1)!.port as ModelIoas;
  tables.map(0x300, 0x60, { read: true, write: true });
  tables.map(0x900, 0x61, { read: true, write: true });
  const ok = dev.submit(range(0x300, 1))!;
  const before = dev.submit({ op: "sync" });
  ioas.failNext = { op: "map", errno: 28, firstPage: 0x900 }; // ENOSPC: out of IOVA space
  const bad = dev.submit(range(0x900, 1))!;
  const after = dev.submit({ op: "sync" });
  const report = dev.drain();
  assert.deepEqual(report.failures.map((f) => f.seq), [bad]);
  assert.equal(report.failures[0].errno, 28);
  assert.ok(report.waits.find((w) => w.seq === before)!.ok, "the wait before the failure completes");
  assert.ok(!report.waits.find((w) => w.seq === after)!.ok, "the wait after it does not");
  assert.ok(ok < bad);
  assert.deepEqual(ioas.lookup(0x300), { gpaPage: 0x60, read: true, write: true });
  assert.equal(ioas.lookup(0x900), undefined, "nothing half-mapped");
  // The guest's retry succeeds.
  dev.submit(range(0x900, 1));
  dev.submit({ op: "sync" });
  assert.ok(dev.drain().waits[0].ok);
  assert.deepEqual(ioas.lookup(0x900), { gpaPage: 0x61, read: true, write: true });
});

Deno.test("shadow plugin: devices of one domain share its shadow; the last one out unmaps everything", () => {
  using host = RelayHost.inProcess();
  const ram = new Uint8Array(RAM);
  const tables = new GuestPageTables(ram, { format: "vtd-sl", levels: 4, tablesAt: 0x60_0000 });
  const table = { format: "vtd-sl" as const, tableAddress: tables.config.root, addressWidth: 48 as const };
  tables.map(0x10, 0x20, { read: true, write: true });
  const a = relayPlugin.create(host, { domain: 1, device: { kind: "model" }, mode: "shadow", shadow: { ram } });
  const b = relayPlugin.create(host, { domain: 1, device: { kind: "model" }, mode: "shadow", shadow: { ram } });
  a.submit({ op: "bind", domain: 1, pasid: "rid", table });
  b.submit({ op: "bind", domain: 1, pasid: "rid", table });
  const d = host.shadowDomain(1)!;
  const ioas = d.port as ModelIoas;
  assert.equal(ioas.areas.size, 1);
  a[Symbol.dispose]();
  assert.equal(ioas.areas.size, 1, "b still uses it");
  b[Symbol.dispose]();
  assert.equal(ioas.areas.size, 0);
  assert.equal(host.shadowDomain(1), undefined);
  using c = relayPlugin.create(host, { domain: 2, device: { kind: "model" }, mode: "shadow", shadow: { ram } });
  assert.equal(c.telemetry.mode, "shadow");
  assert.throws(
    () =>
      relayPlugin.create(host, {
        domain: 3,
        device: { kind: "model" },
        mode: "shadow",
        shadow: { ram: new Uint8Array(4096) },
      }),
    TypeError,
  );
});

Deno.test("shadow plugin: pages the guest maps outside its RAM stay unmapped and come out as shadow-fault events", () => {
  using host = RelayHost.inProcess();
  const ram = new Uint8Array(RAM);
  const tables = new GuestPageTables(ram, { format: "vtd-sl", levels: 4, tablesAt: 0x60_0000 });
  using dev = relayPlugin.create(host, { domain: 1, device: { kind: "model" }, mode: "shadow", shadow: { ram } });
  const faults: unknown[] = [];
  dev.on((e) => e.type === "shadow-fault" && faults.push(e.fault));
  dev.submit({
    op: "bind",
    domain: 1,
    pasid: "rid",
    table: { format: "vtd-sl", tableAddress: tables.config.root, addressWidth: 48 },
  });
  tables.map(0x40, RAM / 4096 + 5, { read: true, write: true }); // beyond guest RAM
  tables.map(0x41, 0x10, { read: true, write: true });
  dev.submit(range(0x40, 2));
  dev.submit({ op: "sync" });
  assert.ok(dev.drain().waits[0].ok, "the invalidation itself completes");
  assert.deepEqual(faults, [{ firstPage: 0x40, pages: 1, level: 1, reason: "leaf-outside-ram" }]);
  const ioas = host.shadowDomain(1)!.port as ModelIoas;
  assert.equal(ioas.lookup(0x40), undefined);
  assert.deepEqual(ioas.lookup(0x41), { gpaPage: 0x10, read: true, write: true });
  assert.equal(dev.telemetry.shadow!.faults, 1);
});
