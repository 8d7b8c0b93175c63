import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { histogramChart } from "../../../tools/loadtest/charts.ts";
import { renderHtml } from "../../../tools/loadtest/html.ts";
import type { Report } from "../../../tools/loadtest/report.ts";

/**
 * The report's charts, checked on their SVG geometry: marker labels never overlap each other, the
 * legend or another marker's line; markers are drawn over the bars in a colour of their own; time
 * axes end where the run ended. The fixture is the JSON report of a real 5 s self-contained run.
 */
const fixture = (): Report =>
  JSON.parse(readFileSync(new URL("./fixtures/report-5s.json", import.meta.url), "utf8")) as Report;

const attr = (tag: string, name: string): string => {
  const m = tag.match(new RegExp(`\\s${name}="([^"]*)"`));
  if (!m) throw new Error(`no ${name} in ${tag}`);
  return m[1] as string;
};

interface Box {
  text: string;
  left: number;
  right: number;
  top: number;
  bottom: number;
}

/**
 * A text's box from its position, anchor and size, at 0.6 em a character: wider than the bold
 * digits and letters of the usual sans fonts (about 0.55 em), so overlaps are not missed.
 */
function textBoxes(svg: string, cls: string): Box[] {
  return [...svg.matchAll(new RegExp(`<text class="${cls}"[^>]*>([^<]*)</text>`, "g"))].map((m) => {
    const tag = m[0];
    const text = m[1] as string;
    const size = Number(attr(tag, "font-size"));
    const width = text.length * size * 0.6;
    const x = Number(attr(tag, "x"));
    const y = Number(attr(tag, "y"));
    const anchor = attr(tag, "text-anchor");
    const left = anchor === "end" ? x - width : anchor === "middle" ? x - width / 2 : x;
    return { text, left, right: left + width, top: y - size, bottom: y + size * 0.25 };
  });
}

const intersect = (a: Box, b: Box) =>
  a.left < b.right && b.left < a.right && a.top < b.bottom && b.top < a.bottom;

function chart(html: string, title: string): string {
  const svg = html.split("<svg").find((s) => s.includes(`aria-label="${title}"`));
  if (!svg) throw new Error(`no chart ${title}`);
  return `<svg${svg.slice(0, svg.indexOf("</svg>"))}</svg>`;
}

function checkMarkers(svg: string, markers: number) {
  const labels = textBoxes(svg, "marker-label");
  expect(labels).toHaveLength(markers);
  for (const [i, a] of labels.entries()) {
    for (const b of labels.slice(i + 1)) expect(intersect(a, b), `${a.text} / ${b.text}`).toBe(false);
  }
  // The legend sits above the label band.
  const legendBottom = 16 + 3;
  for (const l of labels) expect(l.top, l.text).toBeGreaterThanOrEqual(legendBottom);
  // No label covers another marker's line.
  const lines = [...svg.matchAll(/<line class="marker"[^>]*>/g)].map((m) => ({
    x: Number(attr(m[0], "x1")),
    top: Number(attr(m[0], "y2")),
  }));
  for (const l of labels) {
    const own = lines.filter((line) => Math.abs(line.x - l.left) < 5 || Math.abs(line.x - l.right) < 5);
    for (const line of lines) {
      if (own.includes(line) || line.x <= l.left || line.x >= l.right) continue;
      expect(line.top, `${l.text} over the line at x=${line.x}`).toBeGreaterThan(l.bottom);
    }
  }
  // Drawn after every bar (so on top of them), on a halo, and not in the bars' colour.
  const lastBar = Math.max(...[...svg.matchAll(/<rect [^>]*opacity="0.85"/g)].map((m) => m.index));
  expect(svg.indexOf('<line class="marker"')).toBeGreaterThan(lastBar);
  const barFills = new Set([...svg.matchAll(/<rect [^>]*fill="([^"]+)" opacity/g)].map((m) => m[1]));
  for (const m of svg.matchAll(/<line class="marker"[^>]*stroke="([^"]+)" stroke-width="1.6"/g)) {
    expect(barFills.has(m[1])).toBe(false);
  }
}

describe("load-test report charts", () => {
  it("keeps the histogram's p50 and p99 labels apart, however close the two values", () => {
    const report = fixture();
    checkMarkers(chart(renderHtml(report), "Latency distribution"), 2);
    for (const ratio of [1.08, 1.01, 1]) {
      report.summary.latency.p99 = report.summary.latency.p50 * ratio;
      checkMarkers(chart(renderHtml(report), "Latency distribution"), 2);
    }
  });

  it("keeps labels apart at the plot's edges and with more markers", () => {
    const bins = Array.from({ length: 40 }, (_, i) => ({
      from: 10 * 1.1 ** i,
      to: 10 * 1.1 ** (i + 1),
      count: 40 - i,
    }));
    for (const values of [
      [10, 10.5, 11],
      [400, 405, 410, 420],
      [10, 400],
      [200, 201],
    ]) {
      const svg = histogramChart({
        title: "h",
        series: [{ label: "latency", color: "#4f46e5", bins, style: "bars" }],
        markers: values.map((value, i) => ({ label: `p${i}`, value, color: "#0f172a" })),
        xLabel: "ms",
      });
      checkMarkers(svg, values.length);
      const width = Number(attr(svg.slice(0, svg.indexOf(">")), "viewBox").split(" ")[2]);
      for (const l of textBoxes(svg, "marker-label")) {
        expect(l.left, l.text).toBeGreaterThanOrEqual(0);
        expect(l.right, l.text).toBeLessThanOrEqual(width);
      }
    }
  });

  it("ends the time axes at the end of the run", () => {
    const report = fixture();
    const html = renderHtml(report);
    const run = report.summary.durationS;
    for (const title of ["Throughput over time", "Time to first token over time"]) {
      const svg = chart(html, title);
      const axis = [
        ...svg.matchAll(/<line x1="([\d.]+)" y1="([\d.]+)" x2="([\d.]+)" y2="\2" stroke="#64748b"\/>/g),
      ];
      expect(axis).toHaveLength(1);
      const [x0, x1] = [Number(axis[0]?.[1]), Number(axis[0]?.[3])];
      // Tick labels sit under the axis: every one is within the run.
      const ticks = [
        ...svg.matchAll(
          /<line x1="([\d.]+)" y1="[\d.]+" x2="\1" y2="[\d.]+" stroke="#64748b"\/><text [^>]*>([\d.]+)<\/text>/g,
        ),
      ];
      expect(ticks.length).toBeGreaterThan(3);
      for (const t of ticks) {
        const value = Number(t[2]);
        expect(value).toBeLessThanOrEqual(run);
        // …and at its place on an axis from 0 to the run's length.
        expect(Number(t[1])).toBeCloseTo(x0 + (value / run) * (x1 - x0), 0);
      }
    }
    // The throughput line reaches the end of the axis: its last second ends with the run.
    const throughput = chart(html, "Throughput over time");
    const axisEnd = Number(
      throughput.match(/<line x1="[\d.]+" y1="([\d.]+)" x2="([\d.]+)" y2="\1" stroke="#64748b"\/>/)?.[2],
    );
    const xs = [...throughput.matchAll(/[ML]([\d.]+),[\d.]+/g)].map((m) => Number(m[1]));
    expect(Math.max(...xs)).toBeCloseTo(axisEnd, 0);
  });
});
