/**
 * A grouped horizontal bar chart as a self-contained SVG (no dependencies): one group per workload, one bar per
 * series (policy), a shared linear axis. Used by `bench/policies_bench.ts` to render `BENCHMARKS.svg` from its
 * results file.
 *
 * @example
 * ```ts
 * import { renderBarChart } from "./chart.ts";
 * const svg = renderBarChart({ title: "t", unit: "ioctls", series: ["a", "b"], groups: [{ label: "g", values: [1, 2] }] });
 * console.log(svg.startsWith("<svg")); // true
 * ```
 *
 * @module
 */

/** What to draw. */
export interface BarChart {
  readonly title: string;
  readonly unit: string;
  readonly series: readonly string[];
  readonly groups: readonly { readonly label: string; readonly values: readonly number[] }[];
}

const COLORS = ["#8c8c8c", "#4f81bd", "#c0504d", "#9bbb59", "#8064a2"];

const esc = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");

/** Render `chart` as SVG text. */
export function renderBarChart(chart: BarChart): string {
  const labelW = 300, plotW = 420, bar = 14, gap = 3, groupGap = 14, top = 56, right = 80;
  const max = Math.max(1, ...chart.groups.flatMap((g) => g.values));
  const groupH = chart.series.length * (bar + gap) + groupGap;
  const height = top + chart.groups.length * groupH + 40;
  const width = labelW + plotW + right;
  const x = (v: number) => labelW + (v / max) * plotW;
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif" font-size="12">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="10" y="20" font-size="15" font-weight="bold">${esc(chart.title)}</text>`,
  ];
  chart.series.forEach((s, i) => {
    out.push(`<rect x="${10 + i * 170}" y="32" width="12" height="12" fill="${COLORS[i % COLORS.length]}"/>`);
    out.push(`<text x="${26 + i * 170}" y="42">${esc(s)}</text>`);
  });
  chart.groups.forEach((g, gi) => {
    const y0 = top + gi * groupH;
    out.push(
      `<text x="${labelW - 8}" y="${y0 + (groupH - groupGap) / 2 + 4}" text-anchor="end">${esc(g.label)}</text>`,
    );
    g.values.forEach((v, si) => {
      const y = y0 + si * (bar + gap);
      out.push(
        `<rect x="${labelW}" y="${y}" width="${Math.max(1, x(v) - labelW).toFixed(1)}" height="${bar}" fill="${
          COLORS[si % COLORS.length]
        }"/>`,
      );
      out.push(`<text x="${(x(v) + 4).toFixed(1)}" y="${y + bar - 3}">${Number(v.toFixed(1))}</text>`);
    });
  });
  const axisY = top + chart.groups.length * groupH;
  out.push(`<line x1="${labelW}" y1="${axisY}" x2="${labelW + plotW}" y2="${axisY}" stroke="black"/>`);
  for (let t = 0; t <= 4; t++) {
    const v = (max * t) / 4;
    out.push(`<text x="${x(v).toFixed(1)}" y="${axisY + 16}" text-anchor="middle">${Number(v.toFixed(0))}</text>`);
  }
  out.push(`<text x="${labelW + plotW / 2}" y="${axisY + 32}" text-anchor="middle">${esc(chart.unit)}</text>`);
  out.push("</svg>");
  return out.join("\n") + "\n";
}
