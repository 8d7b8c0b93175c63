import { formatMs } from "./charts.ts";
import type { Percentiles } from "./histogram.ts";
import type { Report } from "./report.ts";
import type { RunTotals } from "./runner.ts";

const num = (n: number, digits = 0) =>
  n.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits });

const col = (s: string, width: number) => s.padStart(width);

function row(name: string, p: Percentiles): string {
  const cells = p.count
    ? [p.p50, p.p95, p.p99, p.max].map((v) => col(formatMs(v), 10))
    : ["–", "–", "–", "–"].map((v) => col(v, 10));
  return `  ${name.padEnd(16)}${cells.join("")}`;
}

/** The summary printed at the end of a run (stdout). */
export function summaryText(r: Report, paths: { json: string; html: string } | undefined): string {
  const o = r.options;
  const s = r.summary;
  const lines: string[] = [];
  const target = r.target.kind === "self-contained" ? `self-contained (${r.target.backends})` : r.target.url;
  const shape = [
    o.stream ? "streaming" : "plain",
    `concurrency ${o.concurrency}`,
    o.requests !== undefined ? `${num(o.requests)} calls` : `${((o.durationMs ?? 0) / 1000).toFixed(0)} s`,
    o.rampMs ? `ramp ${(o.rampMs / 1000).toFixed(0)} s` : "",
  ].filter(Boolean);
  lines.push(`planto-gateway loadtest · ${target} · ${shape.join(" · ")}`);
  lines.push(
    `  models ${o.models.map((m) => `${m.model}×${m.weight}`).join(", ")} · prompt ${num(o.promptBytes)} B · max_tokens ${o.maxTokens}${o.mock ? ` · mock ${o.mock.chunks} chunks, ${o.mock.delayMs} ms apart` : ""}`,
  );
  lines.push("");
  lines.push(
    `  ${num(s.requests)} calls in ${s.durationS.toFixed(2)} s: ${num(s.rps, 1)} req/s · ${num(s.ok)} ok · ${num(s.errors)} errors${s.errors ? ` (${(s.errorRate * 100).toFixed(2)}%)` : ""}`,
  );
  lines.push(`  load generator CPU ${r.environment.generatorCpu}% of one core`);
  lines.push("");
  lines.push(`  ${"".padEnd(16)}${["p50", "p95", "p99", "max"].map((h) => col(h, 10)).join("")}`);
  lines.push(row(o.stream ? "first token" : "first byte", s.ttft));
  lines.push(row("total", s.latency));
  const models = Object.entries(r.models);
  if (models.length > 1) {
    lines.push("");
    lines.push(
      `  ${"by model".padEnd(32)}${col("calls", 8)}${col("errors", 8)}${col("first p50", 11)}${col("total p99", 11)}`,
    );
    for (const [name, m] of models) {
      lines.push(
        `  ${name.padEnd(32)}${col(num(m.requests), 8)}${col(num(m.errors), 8)}${col(m.ttft.count ? formatMs(m.ttft.p50) : "–", 11)}${col(m.latency.count ? formatMs(m.latency.p99) : "–", 11)}`,
      );
    }
  }
  lines.push("");
  const errors = Object.entries(r.errors);
  if (errors.length === 0) lines.push("  errors by code: none");
  else {
    lines.push("  errors by code:");
    for (const [code, n] of errors) lines.push(`    ${code.padEnd(34)}${col(num(n), 8)}`);
  }
  lines.push("");
  const b = r.books;
  if (!b.checked) {
    lines.push(`  books: not checked (${b.reason})`);
  } else {
    const wait = b.ledgerCaughtUp
      ? `ledger caught up in ${(b.ledgerWaitMs / 1000).toFixed(1)} s`
      : `ledger had not caught up after ${(b.ledgerWaitMs / 1000).toFixed(0)} s`;
    lines.push(
      `  books: ${b.pass ? "PASS" : "FAIL"} · ${num(b.verified)} calls priced $${b.expectedTotal}, ${num(b.debits)} debits $${b.debitedTotal}${b.unverified ? `, ${num(b.unverified)} unpriced` : ""}${b.refused ? `, ${num(b.refused)} refused` : ""}${b.unanswered ? `, ${num(b.unanswered)} unanswered` : ""}`,
    );
    lines.push(
      `         balance $${b.balanceBefore} → $${b.balanceAfter} (−$${b.balanceChange}) · ledger debits − credits $${b.ledgerNet} · ${wait}`,
    );
    if (!b.pass) {
      lines.push(`  ${num(b.differenceCount)} difference${b.differenceCount === 1 ? "" : "s"}:`);
      for (const d of b.differences.slice(0, 20)) {
        const money = [
          d.expected !== undefined && `expected $${d.expected}`,
          d.actual !== undefined && `got $${d.actual}`,
        ]
          .filter(Boolean)
          .join(", ");
        lines.push(
          `    ${d.kind.padEnd(22)} ${(d.requestId ?? "").padEnd(38)} ${money}${money ? " · " : ""}${d.detail}`,
        );
      }
      if (b.differenceCount > 20) lines.push(`    … ${num(b.differenceCount - 20)} more in the JSON report`);
    }
  }
  for (const note of r.notes) lines.push(`  note: ${note}`);
  if (paths) {
    lines.push("");
    lines.push(`  report: ${paths.html}`);
    lines.push(`          ${paths.json}`);
  }
  return `${lines.join("\n")}\n`;
}

/** The live line: elapsed, req/s over the last second, in flight, done, errors. */
export function progressText(
  point: { rps: number },
  totals: RunTotals,
  goal: { requests?: number; durationMs?: number },
): string {
  const elapsed = `${totals.elapsedS.toFixed(0)}s${goal.durationMs !== undefined ? `/${(goal.durationMs / 1000).toFixed(0)}s` : ""}`;
  const done = `done ${num(totals.completed)}${goal.requests !== undefined ? `/${num(goal.requests)}` : ""}`;
  const errors = totals.errors
    ? `errors ${num(totals.errors)} (${((totals.errors / Math.max(1, totals.completed)) * 100).toFixed(1)}%)`
    : "errors 0";
  return `loadtest ${elapsed.padStart(9)}  ${num(point.rps, 0).padStart(7)} req/s  in flight ${String(totals.inFlight).padStart(4)}  ${done}  ${errors}`;
}

/**
 * The progress line on stderr: redrawn in place each second on a terminal; on a pipe or a CI log,
 * one plain line every `everyS` seconds instead of a stream of carriage returns.
 */
export function progressWriter(stream: NodeJS.WriteStream, everyS = 5) {
  const tty = stream.isTTY === true;
  let ticks = 0;
  let drawn = false;
  let printed: string | undefined;
  return {
    update(line: string) {
      ticks += 1;
      if (tty) {
        stream.write(`\r\x1b[2K${line.slice(0, Math.max(20, (stream.columns || 120) - 1))}`);
        drawn = true;
      } else if (ticks % everyS === 0) {
        stream.write(`${line}\n`);
        printed = line;
      }
    },
    /** Leaves the last state on its own line. */
    end(line: string | undefined) {
      if (tty && drawn) stream.write(`\r\x1b[2K${line ? `${line}\n` : ""}`);
      else if (!tty && line && line !== printed) stream.write(`${line}\n`);
    },
  };
}
