// Routing from the binding table: which units a request of each scope reaches, one unit per shared host route,
// routes resolved again only after a binding change, and units of unbound targets pruned once drained.
import assert from "node:assert/strict";
import { BindingTable } from "../../lib/relay/bindings.ts";
import { RouteTable, type Unit } from "../../lib/relay/routes.ts";

const limits = { maxRanges: 8, maxPages: 512, smmuRil: true, coalesce: true };
const keys = (units: readonly Unit[]) => units.map((u) => u.key);

Deno.test("routes: one table at two PASIDs is one unit, reached by both PASIDs and once by every-PASID requests", () => {
  const bindings = new BindingTable();
  bindings.add(1, 1, { targetId: 5, format: "vtd-s1" });
  bindings.add(1, 2, { targetId: 5, format: "vtd-s1" });
  const table = new RouteTable(limits);
  const r = table.resolve(1, bindings)!;
  assert.equal(r.byPasid.get(1)![0], r.byPasid.get(2)![0]);
  assert.deepEqual(new Set(keys(r.every)), new Set([5]));
  assert.deepEqual(r.ridOnly, [], "nothing bound at the RID");
  assert.equal(table.groups.length, 1);
});

Deno.test("routes: SMMUv3 gets a unit per ASID for PASID requests, and one every-ASID unit per vIOMMU", () => {
  const bindings = new BindingTable();
  bindings.add(2, 1, { targetId: 9, format: "smmuv3", asid: 10 });
  bindings.add(2, 2, { targetId: 9, format: "smmuv3", asid: 11 });
  const r = new RouteTable(limits).resolve(2, bindings)!;
  assert.deepEqual([r.byPasid.get(1)![0].smmu, r.byPasid.get(2)![0].smmu], [
    { kind: "asid", asid: 10 },
    { kind: "asid", asid: 11 },
  ]);
  assert.equal(r.every.length, 1);
  assert.deepEqual(r.every[0].smmu, { kind: "every-asid" });
});

Deno.test("routes: an ATS binding adds an ATC unit after its TLB unit; RID-only requests reach only the RID's units", () => {
  const bindings = new BindingTable();
  bindings.add(3, "rid", { targetId: 4, format: "smmuv3", asid: 1, vdevId: 7, ats: true });
  bindings.add(3, 6, { targetId: 4, format: "smmuv3", asid: 2, vdevId: 7 });
  const r = new RouteTable(limits).resolve(3, bindings)!;
  const atRid = r.byPasid.get("rid")!;
  assert.deepEqual([atRid[0].atc, atRid[1].atc], [undefined, { vsid: 7, ssid: undefined }]);
  assert.equal(r.byPasid.get(6)!.length, 1, "no ATS at PASID 6, no ATC unit");
  assert.ok(r.every.some((u) => u.atc) && r.ridOnly.some((u) => u.atc));
  assert.ok(r.ridOnly.every((u) => u.pasid === "rid"));
});

Deno.test("routes: resolved once per binding change; an unbound domain has none", () => {
  const bindings = new BindingTable();
  bindings.add(1, 1, { targetId: 5, format: "vtd-s1" });
  const table = new RouteTable(limits);
  const first = table.resolve(1, bindings);
  assert.equal(table.resolve(1, bindings), first, "unchanged table: the same routes");
  bindings.add(1, 2, { targetId: 6, format: "vtd-s1" });
  const second = table.resolve(1, bindings)!;
  assert.notEqual(second, first);
  assert.deepEqual(new Set(keys(second.every)), new Set([5, 6]));
  assert.equal(table.resolve(2, bindings), undefined);
});

Deno.test("routes: prune drops units of unbound targets once they are drained, never pending work", () => {
  const bindings = new BindingTable();
  bindings.add(1, 1, { targetId: 5, format: "vtd-s1" });
  bindings.add(1, 2, { targetId: 6, format: "vtd-s1" });
  const table = new RouteTable(limits);
  const r = table.resolve(1, bindings)!;
  r.byPasid.get(2)![0].pending.addAll(1);
  bindings.remove(1, 2);
  table.prune(bindings);
  assert.deepEqual(table.groups.map((g) => g.targetId), [5, 6], "target 6 still has pending work");
  assert.ok(table.pending);
  table.groups[1].units[0].pending.clear();
  table.prune(bindings);
  assert.deepEqual(table.groups.map((g) => g.targetId), [5]);
  assert.equal(table.pending, false);
});
