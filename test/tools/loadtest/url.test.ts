import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { waitUntil } from "../../../tools/servers/ports.ts";
import { ADMIN_TOKEN, startGateway, type TestGateway } from "../../harness/gateway.ts";
import { expectSelfContainedHtml, readReports, runLoadtest } from "./run.ts";

describe("planto-gateway loadtest --url", () => {
  let gw: TestGateway;
  const dir = mkdtempSync(join(tmpdir(), "loadtest-url-"));

  beforeAll(async () => {
    gw = await startGateway({ backend: "postgres+redis" });
  });
  afterAll(async () => {
    await gw?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("with an admin token: makes an org, loads it, checks its books, deletes it", async () => {
    const base = join(dir, "admin");
    const run = await runLoadtest(
      [
        "--url",
        gw.url,
        "--requests",
        "200",
        "--concurrency",
        "8",
        "--mock-chunks",
        "5",
        "--quiet",
        "--out",
        base,
      ],
      { PLANTO_ADMIN_TOKEN: ADMIN_TOKEN },
    );
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toContain("books: PASS");
    const { report, html } = readReports(base);
    expect(report.target).toMatchObject({ kind: "url", url: gw.url, backends: "remote" });
    expect(report.summary).toMatchObject({ requests: 200, ok: 200, errors: 0 });
    expect(report.books).toMatchObject({ checked: true, pass: true, verified: 200, debits: 200 });
    expectSelfContainedHtml(html);

    // The mock knobs went through the gateway: 5 chunks each, and every call was tagged with the run.
    const calls = gw.mock.requests.filter(
      (r) => (r.body.mock as { chunks?: number } | undefined)?.chunks === 5,
    );
    expect(calls.length).toBeGreaterThan(0);
    expect(calls[0]?.body.stream).toBe(true);
    // The org it made is gone afterwards.
    const orgId = report.target.orgId as string;
    expect((await gw.admin("GET", `/admin/orgs/${orgId}`)).status).toBe(404);
  }, 120_000);

  it("with a key only: loads and reports, and says the books were not checked", async () => {
    const org = await gw.org({ credits: "5" });
    const base = join(dir, "key");
    const run = await runLoadtest([
      "--url",
      gw.url,
      "--key",
      org.key,
      "--plain",
      "--requests",
      "60",
      "--concurrency",
      "4",
      "--quiet",
      "--out",
      base,
    ]);
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toContain("books: not checked");
    const { report } = readReports(base);
    expect(report.summary).toMatchObject({ requests: 60, ok: 60 });
    expect(report.books.checked).toBe(false);
    expect(report.options.key).toBe(true);
    expect(JSON.stringify(report)).not.toContain(org.key);
  }, 120_000);

  it("fails the books, exit 1, when the key's org is debited by a call that was not the run's", async () => {
    const org = await gw.org({ credits: "5" });
    const base = join(dir, "interfered");
    const running = runLoadtest([
      "--url",
      gw.url,
      "--key",
      org.key,
      "--admin-token",
      ADMIN_TOKEN,
      "--requests",
      "300",
      "--concurrency",
      "4",
      "--mock-chunks",
      "5",
      "--mock-delay-ms",
      "3",
      "--quiet",
      "--out",
      base,
    ]);
    // Once the run is under way, someone else spends on the same org.
    await waitUntil(
      "the run's first call",
      async () =>
        gw.mock.requests.some((r) => (r.body.mock as { delayMs?: number } | undefined)?.delayMs === 3),
      30_000,
    );
    const extra = await gw.post("/v1/chat/completions", org.key, {
      model: "gpt-4.1-mini",
      messages: [{ role: "user", content: "not part of the load test" }],
    });
    expect(extra.status).toBe(200);
    const extraId = extra.headers.get("x-request-id");
    await extra.arrayBuffer();

    const run = await running;
    expect(run.code).toBe(1);
    expect(run.stdout).toContain("books: FAIL");
    expect(run.stdout).toContain(`unexpected_debit       ${extraId}`);
    const { report } = readReports(base);
    if (!report.books.checked) throw new Error(`books not checked: ${report.books.reason}`);
    expect(report.books.pass).toBe(false);
    expect(report.books.differences).toEqual([
      expect.objectContaining({ kind: "unexpected_debit", requestId: extraId }),
    ]);
    // The run's own 300 calls still matched their debits, and the balance agrees with the ledger.
    expect(report.books.verified).toBe(300);
    expect(report.books.balanceChange).toBe(report.books.ledgerNet);
  }, 120_000);
});
