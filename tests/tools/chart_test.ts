import assert from "node:assert/strict";
import { renderBarChart } from "../../tools/chart.ts";

Deno.test("chart: one bar per (group, series), scaled to the largest value, text escaped", () => {
  const svg = renderBarChart({
    title: "a < b",
    unit: "u",
    series: ["s1", "s2"],
    groups: [{ label: "g1", values: [10, 20] }, { label: "g2", values: [0, 5] }],
  });
  const bars = [...svg.matchAll(/<rect x="300" y="[\d.]+" width="([\d.]+)"/g)].map((m) => Number(m[1]));
  assert.deepEqual(bars, [210, 420, 1, 105], "widths proportional to the values (a zero still visible)");
  assert.ok(svg.includes("a &lt; b"));
  assert.ok(svg.trimEnd().endsWith("</svg>"));
});
