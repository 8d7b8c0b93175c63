/**
 * Inline SVG charts for the HTML report, no libraries: a log-x histogram and time-series line
 * charts with axes, gridlines, units and a legend. Every chart is one `<svg>` string with a
 * viewBox, so it scales with the page.
 */

export const escapeHtml = (s: string): string =>
  s.replace(
    /[&<>"']/g,
    (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c] ?? c,
  );

/** ms as a person reads it: 0.42 ms, 3.1 ms, 48 ms, 1.25 s. */
export function formatMs(ms: number): string {
  if (!Number.isFinite(ms)) return "–";
  if (ms >= 10_000) return `${(ms / 1000).toFixed(1)} s`;
  if (ms >= 1000) return `${(ms / 1000).toFixed(2)} s`;
  if (ms >= 100) return `${ms.toFixed(0)} ms`;
  if (ms >= 10) return `${ms.toFixed(1)} ms`;
  return `${ms.toFixed(2)} ms`;
}

/** A short axis label: 0.5 ms, 2 ms, 1 s, 20 s. */
function axisMs(ms: number): string {
  if (ms >= 1000) return `${trim(ms / 1000)} s`;
  return `${trim(ms)} ms`;
}

function trim(n: number): string {
  return Number(n.toPrecision(3)).toString();
}

/** Thousands separators, and a k for big axis values. */
function axisCount(n: number): string {
  if (Math.abs(n) >= 10_000) return `${trim(n / 1000)}k`;
  return trim(n);
}

function niceStep(raw: number): number {
  const power = 10 ** Math.floor(Math.log10(raw));
  const f = raw / power;
  return (f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10) * power;
}

/** Round ticks from 0 covering `max`; the last tick is the axis top. */
export function niceTicks(max: number, count = 5): number[] {
  const top = max > 0 ? max : 1;
  const step = niceStep(top / count);
  const ticks: number[] = [];
  for (let v = 0; v < top + step * 0.999; v += step) ticks.push(Number(v.toPrecision(12)));
  return ticks.length > 1 ? ticks : [0, step];
}

/** 1-2-5 ticks across [lo, hi] for a log axis. */
export function logTicks(lo: number, hi: number): number[] {
  const out: number[] = [];
  for (let e = Math.floor(Math.log10(lo)) - 1; e <= Math.ceil(Math.log10(hi)); e++) {
    for (const m of [1, 2, 5]) {
      const v = m * 10 ** e;
      if (v >= lo * 0.999 && v <= hi * 1.001) out.push(Number(v.toPrecision(6)));
    }
  }
  if (out.length >= 2) return out;
  return [lo, hi];
}

interface Frame {
  width: number;
  height: number;
  left: number;
  right: number;
  top: number;
  bottom: number;
}

const FONT = `font-family="Inter, system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif"`;
const AXIS = "#64748b";
const GRID = "#e2e8f0";

function plotArea(f: Frame) {
  return { x0: f.left, x1: f.width - f.right, y0: f.height - f.bottom, y1: f.top };
}

function legend(
  items: Array<{ label: string; color: string; dashed?: boolean; kind?: "bar" | "line" }>,
  x: number,
  y: number,
): string {
  let cx = x;
  const parts: string[] = [];
  for (const item of items) {
    const mark =
      item.kind === "bar"
        ? `<rect x="${cx}" y="${y - 9}" width="12" height="10" rx="2" fill="${item.color}"/>`
        : `<line x1="${cx}" y1="${y - 4}" x2="${cx + 16}" y2="${y - 4}" stroke="${item.color}" stroke-width="2.5"${item.dashed ? ' stroke-dasharray="5 3"' : ""}/>`;
    parts.push(mark);
    const tx = cx + (item.kind === "bar" ? 17 : 21);
    parts.push(`<text x="${tx}" y="${y}" font-size="12" fill="#334155">${escapeHtml(item.label)}</text>`);
    cx = tx + item.label.length * 6.6 + 18;
  }
  return parts.join("");
}

function svgOpen(f: Frame, title: string): string {
  return `<svg viewBox="0 0 ${f.width} ${f.height}" width="100%" role="img" aria-label="${escapeHtml(title)}" xmlns="http://www.w3.org/2000/svg" ${FONT}>`;
}

export interface HistogramSeries {
  label: string;
  color: string;
  bins: Array<{ from: number; to: number; count: number }>;
  /** Drawn as filled bars, or as an outlined step area over them. */
  style: "bars" | "step";
}

/**
 * A latency histogram: log-spaced bins on a log ms axis, calls per bin on y, and dashed marker
 * lines (p50, p99, …) labelled at the top.
 */
export function histogramChart(opts: {
  title: string;
  series: HistogramSeries[];
  markers: Array<{ label: string; value: number; color: string }>;
  xLabel: string;
  width?: number;
  height?: number;
}): string {
  const width = opts.width ?? 560;
  const left = 58;
  const right = 16;
  const all = opts.series.flatMap((s) => s.bins);
  const lo = Math.min(...all.map((b) => b.from));
  const hi = Math.max(...all.map((b) => b.to));
  const x = (v: number) =>
    left + ((Math.log(v) - Math.log(lo)) / (Math.log(hi) - Math.log(lo) || 1)) * (width - right - left);
  // The marker labels get a band of their own between the legend and the plot, one row per label
  // that would touch another, so neither the bars nor each other can cover them.
  const labels = placeMarkerLabels(
    opts.markers
      .filter((m) => m.value > 0 && all.length > 0)
      .map((m) => ({
        ...m,
        x: x(Math.min(hi, Math.max(lo, m.value))),
        text: `${m.label} ${formatMs(m.value)}`,
      })),
    left,
    width - right,
  );
  const rows = Math.max(1, ...labels.map((l) => l.row + 1));
  const f: Frame = {
    width,
    height: (opts.height ?? 300) + (rows - 1) * LABEL_ROW,
    left,
    right,
    top: 28 + rows * LABEL_ROW + 6,
    bottom: 48,
  };
  const { x0, x1, y0, y1 } = plotArea(f);
  if (all.length === 0) return emptyChart(f, opts.title, "no successful calls");
  const yTicks = niceTicks(Math.max(...all.map((b) => b.count)));
  const yTop = yTicks[yTicks.length - 1] ?? 1;
  const y = (v: number) => y0 - (v / yTop) * (y0 - y1);
  const out: string[] = [svgOpen(f, opts.title)];
  for (const t of yTicks) {
    out.push(`<line x1="${x0}" y1="${y(t)}" x2="${x1}" y2="${y(t)}" stroke="${GRID}"/>`);
    out.push(
      `<text x="${x0 - 8}" y="${y(t) + 4}" font-size="11" fill="${AXIS}" text-anchor="end">${axisCount(t)}</text>`,
    );
  }
  for (const t of logTicks(lo, hi)) {
    out.push(`<line x1="${x(t)}" y1="${y0}" x2="${x(t)}" y2="${y0 + 5}" stroke="${AXIS}"/>`);
    out.push(
      `<text x="${x(t)}" y="${y0 + 18}" font-size="11" fill="${AXIS}" text-anchor="middle">${axisMs(t)}</text>`,
    );
  }
  for (const s of opts.series) {
    if (s.style === "bars") {
      for (const b of s.bins) {
        if (b.count === 0) continue;
        const bx = x(b.from);
        const w = Math.max(1, x(b.to) - bx - 1);
        out.push(
          `<rect x="${bx.toFixed(1)}" y="${y(b.count).toFixed(1)}" width="${w.toFixed(1)}" height="${(y0 - y(b.count)).toFixed(1)}" fill="${s.color}" opacity="0.85" rx="1"><title>${escapeHtml(`${s.label}: ${b.count} calls, ${formatMs(b.from)}–${formatMs(b.to)}`)}</title></rect>`,
        );
      }
    } else {
      let d = `M${x(s.bins[0]?.from ?? lo).toFixed(1)},${y0}`;
      for (const b of s.bins)
        d += ` L${x(b.from).toFixed(1)},${y(b.count).toFixed(1)} L${x(b.to).toFixed(1)},${y(b.count).toFixed(1)}`;
      d += ` L${x(s.bins[s.bins.length - 1]?.to ?? hi).toFixed(1)},${y0} Z`;
      out.push(
        `<path d="${d}" fill="${s.color}" fill-opacity="0.18" stroke="${s.color}" stroke-width="1.6" stroke-linejoin="round"/>`,
      );
    }
  }
  // Markers last, over the bars, each on a white halo so that it shows across a bar of any colour.
  for (const l of labels) {
    const baseline = 28 + (l.row + 1) * LABEL_ROW;
    const mx = l.x.toFixed(1);
    out.push(
      `<line class="marker" x1="${mx}" y1="${y0}" x2="${mx}" y2="${baseline + 3}" stroke="#fff" stroke-width="4" stroke-opacity="0.9"/>`,
      `<line class="marker" x1="${mx}" y1="${y0}" x2="${mx}" y2="${baseline + 3}" stroke="${l.color}" stroke-width="1.6" stroke-dasharray="4 3"/>`,
      `<text class="marker-label" x="${l.textX.toFixed(1)}" y="${baseline}" font-size="${LABEL_FONT}" fill="${l.color}" text-anchor="${l.anchor}" font-weight="600">${escapeHtml(l.text)}</text>`,
    );
  }
  out.push(axes(f, opts.xLabel, "calls"));
  out.push(
    legend(
      opts.series.map((s) => ({ label: s.label, color: s.color, kind: s.style === "bars" ? "bar" : "line" })),
      x0,
      16,
    ),
  );
  out.push("</svg>");
  return out.join("");
}

const LABEL_FONT = 11;
const LABEL_ROW = 14;
/** A generous width of a bold 11 px label: wide enough that two labels placed apart never touch. */
export const labelWidth = (text: string): number => text.length * LABEL_FONT * 0.64 + 4;

/**
 * Puts each marker's label on the first row where it fits: centred on its marker, else beside it
 * (right, then left), inside the plot's width, 6 px clear of the labels on its row and clear of
 * every other marker's line that reaches its row (a label across a line hides it).
 */
function placeMarkerLabels<T extends { x: number; text: string }>(
  markers: T[],
  x0: number,
  x1: number,
): Array<T & { row: number; textX: number; anchor: "start" | "middle" | "end" }> {
  const GAP = 6;
  const LINE_GAP = 2;
  const placed: Array<
    T & { row: number; textX: number; anchor: "start" | "middle" | "end"; from: number; to: number }
  > = [];
  const sorted = [...markers].sort((a, b) => a.x - b.x);
  for (const m of sorted) {
    const w = labelWidth(m.text);
    const sides: Array<{ anchor: "start" | "middle" | "end"; from: number; textX: number }> = [
      { anchor: "middle", from: m.x - w / 2, textX: m.x },
      { anchor: "start", from: m.x + 3, textX: m.x + 3 },
      { anchor: "end", from: m.x - 3 - w, textX: m.x - 3 },
    ];
    const candidates = sides.filter((c) => c.from >= x0 - 1 && c.from + w <= x1 + 1);
    if (candidates.length === 0) candidates.push({ anchor: "start", from: x0, textX: x0 });
    // A marker's line runs from the plot up to its label's row: it crosses that row and every
    // row below it (higher numbers), where no other label may cover it.
    const covers = (from: number, to: number, x: number) => x > from - LINE_GAP && x < to + LINE_GAP;
    const clear = (c: { from: number }, row: number) =>
      placed.every(
        (p) =>
          (p.row !== row || c.from >= p.to + GAP || p.from >= c.from + w + GAP) &&
          (p.row > row || !covers(c.from, c.from + w, p.x)) &&
          (p.row < row || !covers(p.from, p.to, m.x)),
      );
    let choice: { row: number; anchor: "start" | "middle" | "end"; from: number; textX: number } | undefined;
    for (let row = 0; !choice && row < 8; row++) {
      const c = candidates.find((c) => clear(c, row));
      if (c) choice = { row, ...c };
    }
    // Eight rows of markers on one chart is more than any report draws; stack the rest anyway.
    choice ??= { row: placed.length, ...(candidates[0] as (typeof candidates)[number]) };
    placed.push({ ...m, ...choice, to: choice.from + w });
  }
  return placed;
}

function axes(f: Frame, xLabel: string, yLabel: string, y2Label?: string): string {
  const { x0, x1, y0, y1 } = plotArea(f);
  const mid = (y0 + y1) / 2;
  return [
    `<line x1="${x0}" y1="${y0}" x2="${x1}" y2="${y0}" stroke="${AXIS}"/>`,
    `<text x="${(x0 + x1) / 2}" y="${f.height - 8}" font-size="12" fill="#475569" text-anchor="middle">${escapeHtml(xLabel)}</text>`,
    `<text x="14" y="${mid}" font-size="12" fill="#475569" text-anchor="middle" transform="rotate(-90 14 ${mid})">${escapeHtml(yLabel)}</text>`,
    y2Label
      ? `<text x="${f.width - 12}" y="${mid}" font-size="12" fill="#475569" text-anchor="middle" transform="rotate(90 ${f.width - 12} ${mid})">${escapeHtml(y2Label)}</text>`
      : "",
  ].join("");
}

function emptyChart(f: Frame, title: string, message: string): string {
  return `${svgOpen(f, title)}<rect x="0" y="0" width="${f.width}" height="${f.height}" fill="#f8fafc" rx="8"/><text x="${f.width / 2}" y="${f.height / 2}" font-size="14" fill="${AXIS}" text-anchor="middle">${escapeHtml(message)}</text></svg>`;
}

export interface LineSeries {
  label: string;
  color: string;
  /** [x, y]; a y of null leaves a gap. */
  points: Array<[number, number | null]>;
  dashed?: boolean;
  /** Fill under the line. */
  area?: boolean;
  /** Plot against the right axis. */
  right?: boolean;
  /** Each point holds its value from the previous point's x (a rate over an interval). */
  step?: boolean;
}

/**
 * Values over time: lines (optionally filled) against a left axis, optional bars (errors) against
 * the same axis, and optional series against a right axis with its own unit.
 */
export function timeChart(opts: {
  title: string;
  lines: LineSeries[];
  /** One bar per interval [from, to) of x, e.g. errors per second. */
  bars?: { label: string; color: string; intervals: Array<{ from: number; to: number; value: number }> };
  xLabel: string;
  yLabel: string;
  y2Label?: string;
  yFormat?: (v: number) => string;
  /** Where the x axis ends (the run's length); default the last point. The axis never runs past it. */
  xMax?: number;
  width?: number;
  height?: number;
}): string {
  const hasRight = opts.lines.some((l) => l.right);
  const f: Frame = {
    width: opts.width ?? 960,
    height: opts.height ?? 300,
    left: 62,
    right: hasRight ? 56 : 18,
    top: 34,
    bottom: 48,
  };
  const { x0, x1, y0, y1 } = plotArea(f);
  const xs = opts.lines.flatMap((l) => l.points.map((p) => p[0]));
  if (xs.length === 0) return emptyChart(f, opts.title, "no data");
  const xTop = opts.xMax ?? Math.max(...xs);
  const xTicks = niceTicks(xTop, 8).filter((t) => t <= xTop * (1 + 1e-9));
  const x = (v: number) => x0 + (v / (xTop || 1)) * (x1 - x0);
  const leftValues = [
    ...opts.lines.filter((l) => !l.right).flatMap((l) => l.points.map((p) => p[1] ?? 0)),
    ...(opts.bars?.intervals.map((b) => b.value) ?? []),
  ];
  const yTicks = niceTicks(Math.max(0, ...leftValues));
  const yTop = yTicks[yTicks.length - 1] ?? 1;
  const y = (v: number) => y0 - (v / yTop) * (y0 - y1);
  const rightValues = opts.lines.filter((l) => l.right).flatMap((l) => l.points.map((p) => p[1] ?? 0));
  const y2Ticks = niceTicks(Math.max(0, ...rightValues), 5);
  const y2Top = y2Ticks[y2Ticks.length - 1] ?? 1;
  const y2 = (v: number) => y0 - (v / y2Top) * (y0 - y1);
  const fmt = opts.yFormat ?? axisCount;

  const out: string[] = [svgOpen(f, opts.title)];
  for (const t of yTicks) {
    out.push(`<line x1="${x0}" y1="${y(t)}" x2="${x1}" y2="${y(t)}" stroke="${GRID}"/>`);
    out.push(
      `<text x="${x0 - 8}" y="${y(t) + 4}" font-size="11" fill="${AXIS}" text-anchor="end">${fmt(t)}</text>`,
    );
  }
  if (hasRight) {
    for (const t of y2Ticks) {
      out.push(`<text x="${x1 + 8}" y="${y2(t) + 4}" font-size="11" fill="${AXIS}">${axisCount(t)}</text>`);
    }
  }
  for (const t of xTicks) {
    out.push(`<line x1="${x(t)}" y1="${y0}" x2="${x(t)}" y2="${y0 + 5}" stroke="${AXIS}"/>`);
    out.push(
      `<text x="${x(t)}" y="${y0 + 18}" font-size="11" fill="${AXIS}" text-anchor="middle">${trim(t)}</text>`,
    );
  }
  if (opts.bars) {
    for (const b of opts.bars.intervals) {
      if (b.value <= 0) continue;
      // Inset so that neighbouring intervals read as separate bars.
      const inset = Math.min(3, (x(b.to) - x(b.from)) * 0.15);
      const bx = x(b.from) + inset;
      const w = Math.max(2, x(b.to) - x(b.from) - 2 * inset);
      out.push(
        `<rect x="${bx.toFixed(1)}" y="${y(b.value).toFixed(1)}" width="${w.toFixed(1)}" height="${(y0 - y(b.value)).toFixed(1)}" fill="${opts.bars.color}" opacity="0.8" rx="1"><title>${escapeHtml(`${opts.bars.label}: ${trim(b.value)} from ${trim(b.from)} to ${trim(b.to)} s`)}</title></rect>`,
      );
    }
  }
  for (const line of opts.lines) {
    const scale = line.right ? y2 : y;
    const segments: Array<Array<[number, number]>> = [];
    let current: Array<[number, number]> = [];
    let prevX = 0;
    for (const [px, py] of line.points) {
      if (py === null) {
        if (current.length) segments.push(current);
        current = [];
      } else if (line.step) {
        current.push([x(prevX), scale(py)], [x(px), scale(py)]);
      } else current.push([x(px), scale(py)]);
      prevX = px;
    }
    if (current.length) segments.push(current);
    for (const seg of segments) {
      const d = seg.map(([px, py], i) => `${i === 0 ? "M" : "L"}${px.toFixed(1)},${py.toFixed(1)}`).join(" ");
      if (line.area && seg.length > 1) {
        const first = seg[0] as [number, number];
        const last = seg[seg.length - 1] as [number, number];
        out.push(
          `<path d="${d} L${last[0].toFixed(1)},${y0} L${first[0].toFixed(1)},${y0} Z" fill="${line.color}" fill-opacity="0.12"/>`,
        );
      }
      if (seg.length === 1) {
        const [px, py] = seg[0] as [number, number];
        out.push(`<circle cx="${px.toFixed(1)}" cy="${py.toFixed(1)}" r="2.5" fill="${line.color}"/>`);
      } else {
        out.push(
          `<path d="${d}" fill="none" stroke="${line.color}" stroke-width="2" stroke-linejoin="round" stroke-linecap="round"${line.dashed ? ' stroke-dasharray="6 4"' : ""}/>`,
        );
      }
    }
  }
  out.push(axes(f, opts.xLabel, opts.yLabel, hasRight ? opts.y2Label : undefined));
  out.push(
    legend(
      [
        ...opts.lines.map((l) => ({ label: l.label, color: l.color, dashed: l.dashed })),
        ...(opts.bars ? [{ label: opts.bars.label, color: opts.bars.color, kind: "bar" as const }] : []),
      ],
      x0,
      16,
    ),
  );
  out.push("</svg>");
  return out.join("");
}
