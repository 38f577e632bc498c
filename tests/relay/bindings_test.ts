// The binding table against a plain list of (domain, PASID, binding) triples: random add/remove/clear sequences
// (fast-check, so a failure shrinks to a minimal sequence), then the rules one at a time.
import assert from "node:assert/strict";
import fc from "fast-check";
import { type Binding, BindingTable, sameBinding } from "../../lib/relay/bindings.ts";
import type { PasidOrRid } from "../../lib/request/request.ts";

const binding: fc.Arbitrary<Binding> = fc.oneof(
  fc.record({ targetId: fc.integer({ min: 1, max: 3 }), format: fc.constant("vtd-s1" as const) }),
  fc.record(
    {
      targetId: fc.integer({ min: 1, max: 3 }),
      format: fc.constant("smmuv3" as const),
      asid: fc.integer({ min: 0, max: 2 }),
      vdevId: fc.integer({ min: 0, max: 1 }),
      ats: fc.boolean(),
    },
    { requiredKeys: ["targetId", "format"] },
  ),
);
const pasid: fc.Arbitrary<PasidOrRid> = fc.constantFrom<PasidOrRid>("rid", 0, 1, 7);
const change = fc.oneof(
  { weight: 5, arbitrary: fc.record({ op: fc.constant("add" as const), domain: fc.nat(2), pasid, binding }) },
  {
    weight: 3,
    arbitrary: fc.record({
      op: fc.constant("remove" as const),
      domain: fc.nat(2),
      pasid,
      binding: fc.option(binding, { nil: undefined }),
    }),
  },
  { weight: 1, arbitrary: fc.constant({ op: "clear" as const }) },
);

Deno.test("binding table property: any add/remove/clear sequence leaves exactly what a plain list of triples holds", () => {
  const seed = Number(Deno.env.get("IOMMU_RELAY_SEED") ?? 0xb1d);
  fc.assert(
    fc.property(fc.array(change, { maxLength: 30 }), (changes) => {
      const table = new BindingTable();
      let model: [number, PasidOrRid, Binding][] = [];
      for (const c of changes) {
        const version = table.version;
        let changed: boolean;
        if (c.op === "add") {
          const present = model.some(([d, p, b]) => d === c.domain && p === c.pasid && sameBinding(b, c.binding));
          assert.equal(table.add(c.domain, c.pasid, c.binding), !present, "add says whether it added");
          if (!present) model.push([c.domain, c.pasid, c.binding]);
          changed = !present;
        } else if (c.op === "remove") {
          const gone = (t: [number, PasidOrRid, Binding]) =>
            t[0] === c.domain && t[1] === c.pasid && (c.binding === undefined || sameBinding(t[2], c.binding));
          const removed = model.filter(gone).length;
          assert.equal(table.remove(c.domain, c.pasid, c.binding), removed, "remove counts what went");
          model = model.filter((t) => !gone(t));
          changed = removed > 0;
        } else {
          table.clear();
          model = [];
          changed = true;
        }
        assert.equal(table.version > version, changed, "the version moves exactly when the table changes");
      }
      const key = ([d, p, b]: readonly [number, PasidOrRid, Binding]) => JSON.stringify([d, p, b]);
      assert.deepEqual([...table.entries()].map(key).sort(), model.map(key).sort());
      assert.deepEqual(table.domains(), [...new Set(model.map(([d]) => d))].sort((a, b) => a - b));
      assert.deepEqual([...table.liveTargets()].sort(), [...new Set(model.map(([, , b]) => b.targetId))].sort());
      for (const d of [0, 1, 2]) {
        const pasids = new Set(model.filter(([md]) => md === d).map(([, p]) => p));
        assert.equal(table.domain(d) === undefined, pasids.size === 0, "an emptied domain is gone");
        for (const p of pasids) {
          assert.deepEqual(table.get(d, p), model.filter(([md, mp]) => md === d && mp === p).map(([, , b]) => b));
        }
      }
    }),
    { seed, numRuns: 2_000 },
  );
});

Deno.test("binding table: ATS, ASID and virtual device each make a different route; a missing ats is false", () => {
  const base: Binding = { targetId: 4, format: "smmuv3", asid: 1, vdevId: 2 };
  assert.ok(sameBinding(base, { ...base, ats: false }));
  for (
    const other of [{ ...base, ats: true }, { ...base, asid: 3 }, { ...base, vdevId: 5 }, { ...base, targetId: 9 }]
  ) {
    assert.equal(sameBinding(base, other), false, JSON.stringify(other));
  }
  const table = new BindingTable();
  assert.ok(table.add(1, 5, base));
  assert.ok(table.add(1, 5, { ...base, ats: true }), "the same route gaining ATS is a second binding");
  assert.equal(table.get(1, 5).length, 2);
});

Deno.test("binding table: removing what is not there changes nothing, not even the version", () => {
  const table = new BindingTable();
  table.add(1, "rid", { targetId: 1, format: "vtd-s1" });
  const version = table.version;
  assert.equal(table.remove(2, "rid"), 0);
  assert.equal(table.remove(1, 3), 0);
  assert.equal(table.remove(1, "rid", { targetId: 2, format: "vtd-s1" }), 0);
  assert.equal(table.version, version);
  assert.equal(table.get(1, "rid").length, 1);
});
