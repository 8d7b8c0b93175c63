import { mkdirSync, statSync, writeFileSync } from "node:fs";
import { cpus, hostname } from "node:os";
import { dirname, join, resolve } from "node:path";
import type { BooksResult } from "./books.ts";
import type { Percentiles } from "./histogram.ts";
import type { LoadtestOptions } from "./options.ts";
import type { ModelStats, Recorder, TimePoint } from "./stats.ts";

export type BooksSection =
  | { checked: false; reason: string }
  | ({
      checked: true;
      reason: string;
      /** How long the ledger took to show the run's debits, ms. */
      ledgerWaitMs: number;
      ledgerCaughtUp: boolean;
    } & BooksResult);

/** Everything one run measured: the JSON report, and what the HTML report is drawn from. */
export interface Report {
  tool: "planto-gateway loadtest";
  reportVersion: 1;
  runId: string;
  startedAt: string;
  finishedAt: string;
  target: { kind: "self-contained" | "url"; url: string; backends: string; orgId: string | null };
  /** The options of the run, without the key and admin token. */
  options: Omit<LoadtestOptions, "key" | "adminToken"> & { key: boolean; adminToken: boolean };
  environment: {
    node: string;
    platform: string;
    cpus: number;
    cpuModel: string;
    host: string;
    /** The load generator's own CPU use over the run, % of one core (near 100: it was the limit). */
    generatorCpu: number;
  };
  summary: {
    /** Calls that completed (successfully or not). */
    requests: number;
    ok: number;
    errors: number;
    /** errors / requests. */
    errorRate: number;
    durationS: number;
    /** Completed calls per second over the run. */
    rps: number;
    /** Successful calls only, ms. For plain calls "first token" is the first byte. */
    ttft: Percentiles;
    latency: Percentiles;
  };
  /** By contract code (`error.code`), `network`, `timeout`, `<code> (in stream)`, `stream_truncated`. */
  errors: Record<string, number>;
  models: Record<string, ModelStats>;
  /** Log-spaced bins over one shared range, for the latency chart. */
  histograms: {
    ttft: Array<{ from: number; to: number; count: number }>;
    latency: Array<{ from: number; to: number; count: number }>;
  };
  /** One point per second of the run. */
  series: TimePoint[];
  books: BooksSection;
  notes: string[];
}

export function buildReport(p: {
  runId: string;
  options: LoadtestOptions;
  target: Report["target"];
  recorder: Recorder;
  startedAt: Date;
  elapsedS: number;
  generatorCpu: number;
  books: BooksSection;
  notes: string[];
}): Report {
  const r = p.recorder;
  const { key, adminToken, ...options } = p.options;
  const range = {
    min: Math.min(
      r.ttft.count ? r.ttft.min : Number.POSITIVE_INFINITY,
      r.latency.min || Number.POSITIVE_INFINITY,
    ),
    max: Math.max(r.ttft.max, r.latency.max),
  };
  const haveRange = Number.isFinite(range.min) && range.max > 0;
  const cpuList = cpus();
  return {
    tool: "planto-gateway loadtest",
    reportVersion: 1,
    runId: p.runId,
    startedAt: p.startedAt.toISOString(),
    finishedAt: new Date(p.startedAt.getTime() + p.elapsedS * 1000).toISOString(),
    target: p.target,
    options: { ...options, key: key !== undefined, adminToken: adminToken !== undefined },
    environment: {
      node: process.version,
      platform: `${process.platform} ${process.arch}`,
      cpus: cpuList.length,
      cpuModel: cpuList[0]?.model.trim() ?? "unknown",
      host: hostname(),
      generatorCpu: p.generatorCpu,
    },
    summary: {
      requests: r.completed,
      ok: r.ok,
      errors: r.errors,
      errorRate: r.completed ? Math.round((r.errors / r.completed) * 1e6) / 1e6 : 0,
      durationS: Math.round(p.elapsedS * 1000) / 1000,
      rps: p.elapsedS > 0 ? Math.round((r.completed / p.elapsedS) * 10) / 10 : 0,
      ttft: r.ttftSummary(),
      latency: r.latencySummary(),
    },
    errors: r.errorCodes(),
    models: r.models(),
    histograms: {
      ttft: haveRange ? r.ttft.bins(48, range) : [],
      latency: haveRange ? r.latency.bins(48, range) : [],
    },
    series: r.series,
    books: p.books,
    notes: p.notes,
  };
}

/**
 * `--out`: a path without extension (`runs/nightly` → runs/nightly.json and .html), or a
 * directory (existing, or ending in /) that gets `<timestamp>.json` and `.html`.
 */
export function reportPaths(out: string | undefined, startedAt: Date): { json: string; html: string } {
  const stamp = startedAt
    .toISOString()
    .replace(/\.\d+Z$/, "Z")
    .replace(/:/g, "-");
  let base: string;
  const isDir = (p: string) => {
    try {
      return statSync(p).isDirectory();
    } catch {
      return false;
    }
  };
  if (out === undefined) base = join("loadtest-results", stamp);
  else if (out.endsWith("/") || isDir(out)) base = join(out, stamp);
  else base = out.replace(/\.(json|html)$/, "");
  base = resolve(base);
  return { json: `${base}.json`, html: `${base}.html` };
}

/** Writes the JSON and the already rendered page (html.ts renders it from this file's Report). */
export function writeReports(report: Report, html: string, paths: { json: string; html: string }): void {
  mkdirSync(dirname(paths.json), { recursive: true });
  writeFileSync(paths.json, `${JSON.stringify(report, null, 2)}\n`);
  writeFileSync(paths.html, html);
}
