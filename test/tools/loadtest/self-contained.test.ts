import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { expectSelfContainedHtml, readReports, runLoadtest } from "./run.ts";

describe("planto-gateway loadtest, self-contained", () => {
  const dir = mkdtempSync(join(tmpdir(), "loadtest-test-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("starts Redis, Postgres, the mock and a gateway, runs 200 streaming calls, and the books pass", async () => {
    const base = join(dir, "run");
    const run = await runLoadtest([
      "--requests",
      "200",
      "--concurrency",
      "8",
      "--stream",
      "--models",
      "gpt-4.1-mini=3,anthropic/claude-sonnet-4=1",
      "--markup-bps",
      "1500",
      "--out",
      base,
    ]);
    expect(run.stderr).toContain("on Redis + Postgres");
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toMatch(/200 calls in [\d.]+ s: [\d,.]+ req\/s · 200 ok · 0 errors/);
    expect(run.stdout).toMatch(/books: PASS · 200 calls priced \$[\d.]+, 200 debits \$[\d.]+/);

    const { report, html } = readReports(base);
    expect(report.summary).toMatchObject({ requests: 200, ok: 200, errors: 0 });
    expect(report.summary.ttft.count).toBe(200);
    expect(report.summary.latency.p99).toBeGreaterThanOrEqual(report.summary.latency.p50);
    expect(report.summary.latency.max).toBeGreaterThanOrEqual(report.summary.latency.p99);
    expect(report.models["gpt-4.1-mini"]?.requests).toBe(150);
    expect(report.models["anthropic/claude-sonnet-4"]?.requests).toBe(50);
    expect(report.series.reduce((n, p) => n + p.completed, 0)).toBe(200);
    expect(report.histograms.latency.reduce((n, b) => n + b.count, 0)).toBe(200);
    expect(report.books).toMatchObject({ checked: true, pass: true, verified: 200, debits: 200 });
    if (!report.books.checked) throw new Error("unreachable");
    // Both sides of the books moved by the same, non-zero amount.
    expect(report.books.debitedTotal).toBe(report.books.expectedTotal);
    expect(report.books.balanceChange).toBe(report.books.ledgerNet);
    expect(Number(report.books.debitedTotal)).toBeGreaterThan(0);
    expect(JSON.stringify(report)).not.toContain('"key":"'); // the org key never lands in the report

    expectSelfContainedHtml(html);
    expect(html).toContain("PASS");
    expect(html).toContain("Throughput over time");
    expect(html).toContain("Time to first token over time");
    expect(html).toContain("Latency distribution");
  }, 180_000);
});
