import { execFile, spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startGateway, type TestGateway } from "../harness/gateway.ts";

/**
 * The Planto CLI and server as Go programs: test/planto/goclient carries their wire types (json
 * tags, decimal.Decimal, pointers, bool numPagesMax, time.Time) and makes their calls against a
 * gateway on real Postgres and Redis. CI installs Go and the decimal package (.ci/run); where they
 * are missing the test is skipped, and says so.
 */
const run = promisify(execFile);
const DECIMAL = "/usr/share/gocode/src/github.com/shopspring/decimal";
const hasGo = spawnSync("go", ["version"], { stdio: "ignore" }).status === 0;
const missing = !hasGo ? "go is not installed" : !existsSync(DECIMAL) ? `${DECIMAL} is missing` : undefined;
if (missing) {
  console.warn(
    `go-client.test.ts skipped: ${missing} (apt-get install golang-go golang-github-shopspring-decimal-dev)`,
  );
}

interface GoSummary {
  billingCalls: number;
  rowsRendered: number;
  balance: string;
  scopes: Record<string, number>;
  creditTypes: string[];
  clampedPageSize: number;
  numPagesMax: boolean;
  apiErrors: Record<string, string>;
  streams: Array<{
    base: string;
    model: string;
    generationId: string;
    promptTokens: number;
    cached: number;
    completion: number;
    toolCall: string;
  }>;
  errorFrame: { code: number; message: string; metadata: { type: string } };
  rendered: string[];
}

type Row = Record<string, unknown>;

describe.skipIf(missing !== undefined)("the Planto CLI and server, as Go clients", () => {
  let gw: TestGateway;
  let dir: string;
  let binary: string;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "planto-goclient-"));
    binary = join(dir, "goclient");
    // The build cache lives in node_modules (ignored), so a second run does not compile again.
    const cache = resolve("node_modules/.cache/planto-go");
    await mkdir(cache, { recursive: true });
    const build = run("go", ["build", "-o", binary, "./test/planto/goclient"], {
      env: {
        ...process.env,
        GO111MODULE: "off",
        GOPATH: `/usr/share/gocode:${join(dir, "gopath")}`,
        GOCACHE: cache,
        GOFLAGS: "",
      },
    });
    [gw] = await Promise.all([
      startGateway({ backend: "postgres+redis", env: { MARKUP_BPS: "1500", TRIAL_MAX_PLANS: "1" } }),
      build,
    ]);
  }, 240_000);
  afterAll(async () => {
    await gw?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  const log = async (key: string): Promise<Row[]> => {
    const res = await gw.post("/billing/credits_transactions?size=500", key, {});
    return ((await res.json()) as { transactions: Row[] }).transactions;
  };

  it("decodes every billing call and error, renders every row, and streams like the server", async () => {
    // An org with every kind of credit the CLI renders, and debits of several kinds.
    const org = await gw.org({ isTrial: true, credits: "5" }); // trial + an operator's grant
    for (const creditType of ["purchase", "switch"]) {
      const credit = await gw.admin(
        "POST",
        `/admin/orgs/${org.id}/credits`,
        { amount: "1", creditType },
        { "idempotency-key": `${creditType}-${org.id}` },
      );
      expect(credit.status).toBe(201);
    }
    const tags = {
      "x-planto-plan-id": "plan-go",
      "x-planto-plan-name": "Go plan",
      "x-planto-session-id": "sess-go",
    };
    const chat = (
      base: string,
      model: string,
      usage: Record<string, number>,
      headers: Record<string, string> = {},
    ) =>
      gw.post(
        `${base}/chat/completions`,
        org.key,
        { model, messages: [{ role: "user", content: "x" }], mock: { usage } },
        headers,
      );
    expect(
      (await chat("/v1", "gpt-4.1", { prompt_tokens: 1000, cached_tokens: 400, completion_tokens: 50 }, tags))
        .status,
    ).toBe(200);
    expect(
      (
        await chat("/openrouter/v1", "anthropic/claude-sonnet-4:nitro", {
          prompt_tokens: 100,
          completion_tokens: 10,
          cost: 0.00042,
        })
      ).status,
    ).toBe(200);
    // The smallest charge there is: one token of the cheapest model. Its base is not zero.
    expect(
      (await chat("/openai/v1", "gpt-4.1-nano", { prompt_tokens: 1, completion_tokens: 0 })).status,
    ).toBe(200);
    // A call that used nothing costs nothing and leaves no debit row (its base would be zero).
    expect(
      (await chat("/openai/v1", "gpt-4.1-nano", { prompt_tokens: 0, completion_tokens: 0 })).status,
    ).toBe(200);
    expect(
      (await gw.post("/relace/v1/code/apply", org.key, { initialCode: "a", editSnippet: "b" })).status,
    ).toBe(200);
    await gw.services.flusher.drain();
    const before = await log(org.key);
    const debitsBefore = before.filter((r) => r.transactionType === "debit");
    expect(debitsBefore).toHaveLength(4);

    const broke = await gw.org();
    const byoTrial = await gw.org({ billingMode: "byo", isTrial: true });
    const first = await gw.post(
      "/openai/v1/chat/completions",
      byoTrial.key,
      { model: "gpt-4.1-mini", messages: [{ role: "user", content: "x" }] },
      { "x-planto-provider-key": "sk-user-own", "x-planto-plan-id": "the-one-plan" },
    );
    expect(first.status).toBe(200);

    const balanceBefore = (
      (await (
        await fetch(`${gw.url}/billing/balance`, { headers: { authorization: `Bearer ${org.key}` } })
      ).json()) as {
        balance: string;
      }
    ).balance;
    let stdout: string;
    try {
      ({ stdout } = await run(binary, [], {
        env: {
          GATEWAY: gw.url,
          KEY: org.key,
          BROKE_KEY: broke.key,
          BYO_TRIAL_KEY: byoTrial.key,
          PLAN_ID: "plan-go",
          SESSION_ID: "sess-go",
        },
        timeout: 60_000,
      }));
    } catch (err) {
      const e = err as { stderr?: string; stdout?: string };
      throw new Error(`the Go client failed:\n${e.stderr ?? ""}${e.stdout ?? ""}`);
    }
    const out = JSON.parse(stdout.trim()) as GoSummary;

    // The CLI's 13 billing calls: the balance, and the six scopes on both endpoints.
    expect(out.billingCalls).toBe(13);
    expect(out.scopes).toEqual({ today: 8, month: 8, plan: 1, session: 1, debits: 4, purchases: 4 });
    expect(out.rowsRendered).toBe(26);
    expect([...out.creditTypes].sort()).toEqual(["grant", "purchase", "switch", "trial"]);
    expect(out.clampedPageSize).toBe(8);
    expect(out.numPagesMax).toBe(false);
    expect(out.balance).toBe(balanceBefore);
    expect(out.rendered.some((l) => l.includes(" openrouter/anthropic/claude-sonnet-4 "))).toBe(true);
    expect(out.rendered.some((l) => / gpt-4\.1 in=1000 out=50 .*, cache discount /.test(l))).toBe(true);
    expect(out.apiErrors).toEqual({
      "402": "cloud_insufficient_credits",
      "403": "trial_plans_exceeded",
      "401": "invalid_api_key",
    });

    // The server's calls: read to the usage chunk, then closed.
    expect(out.streams).toEqual([
      expect.objectContaining({
        model: "gpt-4.1",
        promptTokens: 900,
        cached: 100,
        completion: 30,
        toolCall: "writePlan",
      }),
      expect.objectContaining({
        model: "anthropic/claude-sonnet-4:nitro",
        promptTokens: 900,
        cached: 100,
        completion: 30,
        toolCall: "writePlan",
      }),
    ]);
    expect(out.streams[0]?.generationId).toMatch(/^chatcmpl-/);
    expect(out.streams[1]?.generationId).toMatch(/^gen-/);
    expect(out.errorFrame).toMatchObject({ code: 502, metadata: { type: "upstream_error" } });

    // Each of the server's streamed calls is debited once, at the usage it read.
    await expect.poll(() => gw.services.calls.size, { timeout: 10_000 }).toBe(0);
    await gw.services.flusher.drain();
    const added = (await log(org.key)).filter(
      (r) => r.transactionType === "debit" && !debitsBefore.some((b) => b.id === r.id),
    );
    const byModel = (provider: string, name: string) =>
      added.filter((r) => r.debitModelProvider === provider && r.debitModelName === name);
    // gpt-4.1: 800 input at $2, 100 cached at $0.5, 30 output at $8 per 1M, then 15%.
    expect(byModel("openai", "gpt-4.1").map((r) => r.amount)).toEqual(["0.0021735"]);
    // OpenRouter's own cost, $0.0009, then 15%.
    expect(byModel("openrouter", "anthropic/claude-sonnet-4").map((r) => r.amount)).toEqual(["0.001035"]);
    expect(byModel("openai", "gpt-4.1-mini")).toHaveLength(1); // the call cut mid-stream
    expect(added).toHaveLength(3);
  }, 120_000);
});
