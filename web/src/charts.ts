// SVG charts of a simulation report, built with DOM calls only: classes and
// presentation attributes, never a style attribute (the CSP forbids them).
import type { ImbalanceRow, SimulationReport } from "./gen/equipoise/randomisation/v1/randomisation_pb";

const SVG = "http://www.w3.org/2000/svg";

function svg<K extends keyof SVGElementTagNameMap>(
  tag: K,
  attributes: Record<string, string | number> = {},
  text?: string,
): SVGElementTagNameMap[K] {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

function frame(id: string, width: number, height: number, title: string, description: string): SVGSVGElement {
  const root = svg("svg", {
    viewBox: `0 0 ${width} ${height}`,
    width,
    height,
    role: "img",
    "aria-labelledby": `${id}-title ${id}-desc`,
    class: "chart-svg",
    id,
  });
  root.append(svg("title", { id: `${id}-title` }, title), svg("desc", { id: `${id}-desc` }, description));
  return root;
}

function percent(value: number): string {
  return `${(value * 100).toFixed(1)}%`;
}

/** A round upper bound for an axis, and its tick step. */
export function niceScale(max: number): { top: number; step: number } {
  if (!(max > 0)) return { top: 1, step: 0.25 };
  const raw = max / 4;
  const power = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * power).find((s) => s >= raw) ?? raw;
  return { top: Math.ceil(max / step) * step, step };
}

/** Vertical bars: the convergence guesser's correct-guess rate knowing the
 *  stratum's, the site's or the whole trial's history, against chance. */
export function guessChart(report: SimulationReport): SVGSVGElement {
  const bars: Array<[string, number]> = [
    ["Stratum history", report.correctGuessRateStratum],
    ["Site history", report.correctGuessRateSite],
    ["Trial history", report.correctGuessRateTrial],
  ];
  const width = 480;
  const height = 280;
  const left = 56;
  const right = 64;
  const top = 24;
  const bottom = 44;
  const plotW = width - left - right;
  const plotH = height - top - bottom;
  const y = (v: number) => top + plotH * (1 - Math.max(0, Math.min(1, v)));
  const description = bars.map(([label, v]) => `${label}: ${percent(v)}`).join("; ") + ". Chance is 50%.";
  const root = frame("chart-guess-svg", width, height, "Correct-guess rate by history scope", description);

  for (const tick of [0, 0.25, 0.5, 0.75, 1]) {
    root.append(
      svg("line", { x1: left, x2: width - right, y1: y(tick), y2: y(tick), class: "grid" }),
      svg("text", { x: left - 8, y: y(tick) + 4, "text-anchor": "end", class: "tick" }, `${tick * 100}%`),
    );
  }
  const slot = plotW / bars.length;
  const barW = Math.min(72, slot * 0.6);
  bars.forEach(([label, value], i) => {
    const x = left + slot * i + (slot - barW) / 2;
    const group = svg("g", { class: "bar-group" });
    group.append(
      svg("rect", { x, y: y(value), width: barW, height: Math.max(0, y(0) - y(value)), class: `bar bar-${i}` }),
      svg("text", { x: x + barW / 2, y: y(value) - 6, "text-anchor": "middle", class: "value" }, percent(value)),
      svg("text", { x: x + barW / 2, y: height - bottom + 18, "text-anchor": "middle", class: "label" }, label),
    );
    root.append(group);
  });
  root.append(
    svg("line", { x1: left, x2: width - right, y1: y(0.5), y2: y(0.5), class: "reference" }),
    svg("text", { x: width - right + 6, y: y(0.5) + 4, "text-anchor": "start", class: "reference-label" }, "chance"),
    svg("line", { x1: left, x2: left, y1: top, y2: y(0), class: "axis" }),
    svg("line", { x1: left, x2: width - right, y1: y(0), y2: y(0), class: "axis" }),
  );
  return root;
}

/** Horizontal range bars, one pair per row: final imbalance (mean, then on
 *  to the 95th percentile) and maximum imbalance (mean, then on to worst). */
export function imbalanceChart(rows: ImbalanceRow[]): SVGSVGElement {
  const width = 720;
  const labelW = 290;
  const right = 20;
  const top = 48;
  const rowH = 30;
  const bottom = 40;
  const height = top + rowH * rows.length + bottom;
  const plotW = width - labelW - right;
  const max = rows.reduce((m, r) => Math.max(m, r.worstMax, r.p95Final, r.meanMax, r.meanFinal), 0);
  const { top: axisTop, step } = niceScale(max);
  const x = (v: number) => labelW + (plotW * Math.max(0, v)) / axisTop;
  const description =
    `${rows.length} rows. ` +
    rows
      .map(
        (r) =>
          `${rowLabel(r)}: final mean ${r.meanFinal.toFixed(2)}, 95th percentile ${r.p95Final.toFixed(2)}; ` +
          `maximum mean ${r.meanMax.toFixed(2)}, worst ${r.worstMax.toFixed(2)}`,
      )
      .join(". ");
  const root = frame("chart-imbalance-svg", width, height, "Imbalance distribution over simulated trials", description);

  // Legend.
  const legend: Array<[string, string]> = [
    ["final-mean", "final, mean"],
    ["final-p95", "final, 95th pct"],
    ["max-mean", "maximum, mean"],
    ["max-worst", "maximum, worst"],
  ];
  legend.forEach(([cls, text], i) => {
    const lx = labelW + (i % 2) * 200;
    const ly = 8 + Math.floor(i / 2) * 18;
    root.append(
      svg("rect", { x: lx, y: ly, width: 14, height: 12, class: `swatch ${cls}` }),
      svg("text", { x: lx + 20, y: ly + 10, class: "legend" }, text),
    );
  });

  for (let tick = 0; tick <= axisTop + step / 2; tick += step) {
    root.append(
      svg("line", { x1: x(tick), x2: x(tick), y1: top - 4, y2: top + rowH * rows.length, class: "grid" }),
      svg("text", { x: x(tick), y: top + rowH * rows.length + 16, "text-anchor": "middle", class: "tick" }, trim(tick)),
    );
  }
  root.append(
    svg(
      "text",
      { x: labelW + plotW / 2, y: height - 6, "text-anchor": "middle", class: "axis-title" },
      "imbalance (subjects, by allocation ratio)",
    ),
  );
  rows.forEach((row, i) => {
    const y0 = top + i * rowH;
    const group = svg("g", { class: `imbalance-row scope-${row.scope}` });
    group.append(
      svg("text", { x: labelW - 8, y: y0 + rowH / 2 + 4, "text-anchor": "end", class: "label" }, rowLabel(row)),
      svg("rect", { x: x(0), y: y0 + 4, width: x(row.p95Final) - x(0), height: 10, class: "final-p95" }),
      svg("rect", { x: x(0), y: y0 + 4, width: x(row.meanFinal) - x(0), height: 10, class: "final-mean" }),
      svg("rect", { x: x(0), y: y0 + 16, width: x(row.worstMax) - x(0), height: 10, class: "max-worst" }),
      svg("rect", { x: x(0), y: y0 + 16, width: x(row.meanMax) - x(0), height: 10, class: "max-mean" }),
    );
    root.append(group);
  });
  root.append(svg("line", { x1: labelW, x2: labelW, y1: top - 4, y2: top + rowH * rows.length, class: "axis" }));
  return root;
}

function rowLabel(row: ImbalanceRow): string {
  return row.scope === "overall" || row.name === "" ? row.scope : row.name;
}

function trim(value: number): string {
  return Number(value.toFixed(2)).toString();
}
