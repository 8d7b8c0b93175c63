import { escapeHtml as esc, formatMs, histogramChart, timeChart } from "./charts.ts";
import type { Percentiles } from "./histogram.ts";
import type { Report } from "./report.ts";

/** The HTML report: one file, no scripts, no external resources; charts are inline SVG. */

const COLORS = {
  total: "#4f46e5",
  ttft: "#0d9488",
  p50: "#0f172a",
  p99: "#ea580c",
  error: "#dc2626",
  inFlight: "#94a3b8",
};

const num = (n: number, digits = 0) =>
  n.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits });

const pct = (x: number) => `${(x * 100).toFixed(x > 0 && x < 0.001 ? 3 : 1)}%`;

function card(label: string, value: string, unit: string, foot: string, tone = ""): string {
  return `<div class="card ${tone}"><div class="label">${esc(label)}</div><div class="value">${esc(value)}<span class="unit">${esc(unit)}</span></div><div class="foot">${foot}</div></div>`;
}

/** "3.1 ms" → ["3.1", "ms"]. */
function split(ms: number): [string, string] {
  const [v = "", u = ""] = formatMs(ms).split(" ");
  return [v, u];
}

function percentileRow(name: string, p: Percentiles): string {
  const cells = [p.min, p.p50, p.p90, p.p95, p.p99, p.max, p.mean].map(
    (v) => `<td class="n">${p.count ? formatMs(v) : "–"}</td>`,
  );
  return `<tr><th>${esc(name)}</th>${cells.join("")}<td class="n">${num(p.count)}</td></tr>`;
}

function booksSection(r: Report): string {
  const b = r.books;
  if (!b.checked) {
    return `<section class="panel books skipped"><h2>Books check</h2><p><span class="badge gray">NOT CHECKED</span> ${esc(b.reason)}</p></section>`;
  }
  const status = b.pass
    ? `<span class="badge green">PASS</span> Every answered call was debited exactly once, at the price the caller was told, and the ledger's net equals the balance change.`
    : `<span class="badge red">FAIL</span> ${num(b.differenceCount)} difference${b.differenceCount === 1 ? "" : "s"} between what the callers were told, the ledger and the balance.`;
  const facts: Array<[string, string]> = [
    ["calls checked to the nanodollar", num(b.verified)],
    ["calls without a price (broken-off streams; at most one debit each)", num(b.unverified)],
    ["calls answered with an error (none may be debited)", num(b.refused)],
    ["calls that got no answer (network, timeout)", num(b.unanswered)],
    ["debits in the ledger", num(b.debits)],
    ["told the callers", `$${b.expectedTotal}`],
    ["debited in the ledger", `$${b.debitedTotal}`],
    ["credits during the run", `${num(b.credits)} ($${b.creditedTotal})`],
    ["balance before → after", `$${b.balanceBefore} → $${b.balanceAfter}`],
    ["balance change (before − after)", `$${b.balanceChange}`],
    ["ledger debits − credits", `$${b.ledgerNet}`],
    [
      "ledger caught up after",
      b.ledgerCaughtUp
        ? `${(b.ledgerWaitMs / 1000).toFixed(1)} s`
        : `not within ${(b.ledgerWaitMs / 1000).toFixed(0)} s`,
    ],
  ];
  const rows = b.differences
    .slice(0, 50)
    .map(
      (d) =>
        `<tr><td><code>${esc(d.kind)}</code></td><td><code>${esc(d.requestId ?? "")}</code></td><td class="n">${d.expected === undefined ? "" : `$${esc(d.expected)}`}</td><td class="n">${d.actual === undefined ? "" : `$${esc(d.actual)}`}</td><td>${esc(d.detail)}</td></tr>`,
    )
    .join("");
  const more =
    b.differenceCount > 50
      ? `<p class="hint">… and ${num(b.differenceCount - 50)} more in the JSON report.</p>`
      : "";
  const table = rows
    ? `<table><thead><tr><th>difference</th><th>request id</th><th class="n">expected</th><th class="n">actual</th><th>what</th></tr></thead><tbody>${rows}</tbody></table>${more}`
    : "";
  return `<section class="panel books ${b.pass ? "pass" : "fail"}"><h2>Books check</h2><p class="verdict">${status}</p><p class="hint">${esc(b.reason)}</p><dl class="facts">${facts.map(([k, v]) => `<dt>${esc(k)}</dt><dd>${esc(v)}</dd>`).join("")}</dl>${table}</section>`;
}

export function renderHtml(r: Report): string {
  const s = r.summary;
  const o = r.options;
  const firstLabel = o.stream ? "Time to first token" : "Time to first byte";
  const started = new Date(r.startedAt);
  const when = `${started.toISOString().slice(0, 10)} ${started.toISOString().slice(11, 19)} UTC`;
  const shape = [
    o.stream ? "streaming" : "plain JSON",
    `concurrency ${o.concurrency}`,
    o.requests !== undefined ? `${num(o.requests)} calls` : `${((o.durationMs ?? 0) / 1000).toFixed(0)} s`,
    o.rampMs ? `ramp ${(o.rampMs / 1000).toFixed(0)} s` : "",
  ]
    .filter(Boolean)
    .join(" · ");
  const books = r.books;
  const booksCard = !books.checked
    ? card("Books check", "—", "", "not checked", "muted")
    : books.pass
      ? card("Books check", "PASS", "", `${num(books.verified)} calls match their debits`, "good")
      : card("Books check", "FAIL", "", `${num(books.differenceCount)} differences`, "bad");
  const [ttftV, ttftU] = split(s.ttft.p50);
  const [latV, latU] = split(s.latency.p50);

  const throughput = timeChart({
    title: "Throughput over time",
    lines: [
      {
        label: "completed calls / s",
        color: COLORS.total,
        points: r.series.map((p) => [p.t, p.rps]),
        area: true,
        step: true,
      },
      {
        label: "peak calls in flight (right axis)",
        color: COLORS.inFlight,
        points: r.series.map((p) => [p.t, p.inFlight]),
        dashed: true,
        right: true,
        step: true,
      },
    ],
    bars: {
      label: "errors / s",
      color: COLORS.error,
      intervals: r.series.map((p, i) => {
        const from = r.series[i - 1]?.t ?? 0;
        return { from, to: p.t, value: p.errors / Math.max(1e-3, p.t - from) };
      }),
    },
    xLabel: "time since start (s)",
    xMax: r.summary.durationS,
    yLabel: "calls per second",
    y2Label: "in flight",
  });
  // A percentile of the calls that completed in an interval is drawn at the interval's middle.
  const mid = (i: number) => ((r.series[i - 1]?.t ?? 0) + (r.series[i]?.t ?? 0)) / 2;
  const ttftOverTime = timeChart({
    title: `${firstLabel} over time`,
    lines: [
      { label: "p50", color: COLORS.ttft, points: r.series.map((p, i) => [mid(i), p.ok ? p.ttftP50 : null]) },
      {
        label: "p99",
        color: COLORS.p99,
        points: r.series.map((p, i) => [mid(i), p.ok ? p.ttftP99 : null]),
        dashed: true,
      },
    ],
    xLabel: "time since start (s)",
    xMax: r.summary.durationS,
    yLabel: "milliseconds",
    yFormat: (v) => `${Number(v.toPrecision(3))}`,
    width: 560,
    height: 300,
  });
  const histogram = histogramChart({
    title: "Latency distribution",
    series: [
      { label: "total latency", color: COLORS.total, bins: r.histograms.latency, style: "bars" },
      { label: firstLabel.toLowerCase(), color: COLORS.ttft, bins: r.histograms.ttft, style: "step" },
    ],
    markers: [
      // Not the bars' colour: a p50 marker drawn in it vanishes into the bars it crosses.
      { label: "p50", value: s.latency.p50, color: COLORS.p50 },
      { label: "p99", value: s.latency.p99, color: COLORS.p99 },
    ],
    xLabel: "latency (ms, log scale)",
  });

  const models = Object.entries(r.models)
    .sort((a, b) => b[1].requests - a[1].requests)
    .map(
      ([name, m]) =>
        `<tr><th><code>${esc(name)}</code></th><td class="n">${num(m.requests)}</td><td class="n">${num(m.errors)}</td><td class="n">${m.ttft.count ? formatMs(m.ttft.p50) : "–"}</td><td class="n">${m.ttft.count ? formatMs(m.ttft.p99) : "–"}</td><td class="n">${m.latency.count ? formatMs(m.latency.p50) : "–"}</td><td class="n">${m.latency.count ? formatMs(m.latency.p99) : "–"}</td></tr>`,
    )
    .join("");
  const errorRows = Object.entries(r.errors)
    .map(
      ([code, n]) =>
        `<tr><th><code>${esc(code)}</code></th><td class="n">${num(n)}</td><td class="n">${pct(n / Math.max(1, s.requests))}</td></tr>`,
    )
    .join("");
  const errorsTable = errorRows
    ? `<table><thead><tr><th>code</th><th class="n">calls</th><th class="n">share</th></tr></thead><tbody>${errorRows}</tbody></table>`
    : `<p class="empty">No errors.</p>`;

  const run: Array<[string, string]> = [
    [
      "target",
      `${r.target.kind === "self-contained" ? "self-contained gateway" : "gateway"} ${r.target.url}`,
    ],
    ["backends", r.target.backends],
    ["org", r.target.orgId ?? "the key's org"],
    ["mode", shape],
    ["models (weight)", o.models.map((m) => `${m.model} (${m.weight})`).join(", ")],
    ["prompt", `${num(o.promptBytes)} bytes, max_tokens ${o.maxTokens}`],
    [
      "mock upstream",
      o.mock ? `${o.mock.chunks} chunks, ${o.mock.delayMs} ms apart` : "not driven (real providers)",
    ],
    ["per-call timeout", formatMs(o.timeoutMs)],
    ["run id (x-planto-plan-id of every call)", r.runId],
    ["started", when],
    [
      "load generator",
      `Node ${r.environment.node} on ${r.environment.platform}, ${r.environment.cpus} × ${r.environment.cpuModel}`,
    ],
  ];
  const notes = r.notes.length
    ? `<ul class="notes">${r.notes.map((n) => `<li>${esc(n)}</li>`).join("")}</ul>`
    : "";

  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Load test ${esc(when)} · ${esc(num(s.rps, 1))} req/s</title>
<style>
:root{--ink:#0f172a;--soft:#475569;--mute:#94a3b8;--line:#e2e8f0;--bg:#f1f5f9;--card:#fff;--good:#15803d;--bad:#b91c1c}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--ink);font:14px/1.5 Inter,system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}
main{max-width:1080px;margin:0 auto;padding:32px 24px 48px}
header{margin-bottom:20px}
.eyebrow{font-size:12px;letter-spacing:.08em;text-transform:uppercase;color:var(--soft);font-weight:600}
h1{font-size:26px;margin:4px 0 4px;letter-spacing:-.01em}
.sub{color:var(--soft);margin:0}
h2{font-size:15px;margin:0 0 4px}
.hint{color:var(--soft);font-size:12.5px;margin:0 0 10px}
.cards{display:grid;grid-template-columns:repeat(5,1fr);gap:12px;margin-bottom:16px}
.card{background:var(--card);border:1px solid var(--line);border-radius:12px;padding:14px 16px}
.card .label{font-size:12px;color:var(--soft);font-weight:600}
.card .value{font-size:28px;font-weight:700;letter-spacing:-.02em;margin-top:2px;font-variant-numeric:tabular-nums}
.card .unit{font-size:14px;font-weight:500;color:var(--soft);margin-left:4px}
.card .foot{font-size:12px;color:var(--soft)}
.card.good{border-color:#86efac;background:#f0fdf4}.card.good .value{color:var(--good)}
.card.bad{border-color:#fca5a5;background:#fef2f2}.card.bad .value{color:var(--bad)}
.card.muted .value{color:var(--mute)}
.card.warn .value{color:var(--bad)}
.panel{background:var(--card);border:1px solid var(--line);border-radius:12px;padding:16px 18px;margin-bottom:16px}
.grid2{display:grid;grid-template-columns:1fr 1fr;gap:16px}
.grid2.wide-left{grid-template-columns:3fr 2fr}
td.n,th.n{white-space:nowrap}
.grid2 .panel{margin-bottom:16px}
table{width:100%;border-collapse:collapse;font-variant-numeric:tabular-nums}
th,td{text-align:left;padding:6px 10px;border-bottom:1px solid var(--line);font-size:13px}
thead th{color:var(--soft);font-weight:600;font-size:12px}
tbody th{font-weight:600}
.n{text-align:right}
code{font:12.5px ui-monospace,SFMono-Regular,Menlo,monospace}
.empty{color:var(--soft);margin:8px 0}
.badge{display:inline-block;font-weight:700;font-size:12px;letter-spacing:.06em;padding:3px 9px;border-radius:999px;margin-right:8px;vertical-align:1px}
.badge.green{background:#dcfce7;color:var(--good)}.badge.red{background:#fee2e2;color:var(--bad)}.badge.gray{background:#e2e8f0;color:var(--soft)}
.books.pass{border-left:4px solid #22c55e}.books.fail{border-left:4px solid #ef4444}.books.skipped{border-left:4px solid var(--mute)}
.verdict{font-size:14.5px;margin:6px 0}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:4px 18px;margin:10px 0 12px;font-variant-numeric:tabular-nums}
dl.facts dt{color:var(--soft)}dl.facts dd{margin:0;font-weight:600}
.notes{margin:8px 0 0;padding-left:18px;color:var(--soft)}
footer{color:var(--mute);font-size:12px;margin-top:8px}
@media (max-width:860px){.cards{grid-template-columns:repeat(2,1fr)}.grid2{grid-template-columns:1fr}}
</style></head>
<body><main>
<header>
<div class="eyebrow">planto-gateway loadtest</div>
<h1>${esc(num(s.rps, 1))} req/s against ${esc(r.target.kind === "self-contained" ? "a self-contained gateway" : r.target.url)}</h1>
<p class="sub">${esc(shape)} · ${esc(num(s.requests))} calls in ${esc(s.durationS.toFixed(1))} s · ${esc(when)}</p>
</header>
<section class="cards">
${card("Throughput", num(s.rps, 1), "req/s", `${num(s.requests)} calls in ${s.durationS.toFixed(1)} s`)}
${card(`${firstLabel}, p50`, ttftV, ttftU, `p99 ${esc(formatMs(s.ttft.p99))} · max ${esc(formatMs(s.ttft.max))}`)}
${card("Total latency, p50", latV, latU, `p99 ${esc(formatMs(s.latency.p99))} · max ${esc(formatMs(s.latency.max))}`)}
${card("Errors", num(s.errors), "", `${pct(s.errorRate)} of calls`, s.errors ? "warn" : "")}
${booksCard}
</section>
<section class="panel"><h2>Throughput over time</h2><p class="hint">Completed calls per second, errors per second (red) and the most calls in flight in each second (dashed, right axis).</p>${throughput}</section>
<div class="grid2">
<section class="panel"><h2>${esc(firstLabel)} over time</h2><p class="hint">p50 and p99 of the calls that completed in each second.</p>${ttftOverTime}</section>
<section class="panel"><h2>Latency distribution</h2><p class="hint">Successful calls per latency bin; ${esc(firstLabel.toLowerCase())} outlined.</p>${histogram}</section>
</div>
<section class="panel"><h2>Latency</h2><p class="hint">Successful calls only.${o.stream ? "" : " Plain answers arrive whole, so their first byte is their first token."}</p>
<table><thead><tr><th></th><th class="n">min</th><th class="n">p50</th><th class="n">p90</th><th class="n">p95</th><th class="n">p99</th><th class="n">max</th><th class="n">mean</th><th class="n">calls</th></tr></thead>
<tbody>${percentileRow(firstLabel.toLowerCase(), s.ttft)}${percentileRow("total latency", s.latency)}</tbody></table></section>
<div class="grid2 wide-left">
<section class="panel"><h2>By model</h2><table><thead><tr><th>model</th><th class="n">calls</th><th class="n">errors</th><th class="n">first p50</th><th class="n">first p99</th><th class="n">p50</th><th class="n">p99</th></tr></thead><tbody>${models}</tbody></table></section>
<section class="panel"><h2>Errors by code</h2><p class="hint">The error body's <code>error.code</code>; <code>network</code> and <code>timeout</code> for transport failures; <code>(in stream)</code> for a <code>data: {"error":…}</code> frame.</p>${errorsTable}</section>
</div>
${booksSection(r)}
<section class="panel"><h2>Run</h2><dl class="facts">${run.map(([k, v]) => `<dt>${esc(k)}</dt><dd>${esc(v)}</dd>`).join("")}</dl>${notes}</section>
<footer>planto-gateway loadtest · report version ${r.reportVersion} · every number here is also in the JSON report of the same name.</footer>
</main></body></html>
`;
}
