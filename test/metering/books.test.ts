import { randomUUID } from "node:crypto";
import postgres from "postgres";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Catalog, CatalogModel } from "../../src/pricing/catalog.ts";
import { computeCost } from "../../src/pricing/cost.ts";
import { startGateway, type TestGateway, type TestOrg } from "../harness/gateway.ts";

const messages = [{ role: "user", content: "price me" }];

describe("what each call is charged, end to end (Postgres + Redis)", () => {
  let gw: TestGateway;
  let org: TestOrg;
  let sql: postgres.Sql;
  const model = (id: string) => (gw.services.catalog as Catalog).resolve(id) as CatalogModel;

  beforeAll(async () => {
    gw = await startGateway({ backend: "postgres+redis", env: { MARKUP_BPS: "750" } });
    org = await gw.org({ credits: "10" });
    sql = postgres(gw.config.DATABASE_URL as string, { max: 2, onnotice: () => {} });
  });
  afterAll(async () => {
    await sql?.end();
    await gw?.close();
  });

  async function charged(body: Record<string, unknown>, path = "/v1/chat/completions") {
    const res = await fetch(`${gw.url}${path}`, {
      method: "POST",
      headers: { authorization: `Bearer ${org.key}`, "content-type": "application/json" },
      body: JSON.stringify(body),
    });
    expect(res.status).toBe(200);
    const id = res.headers.get("x-request-id") as string;
    await gw.services.flusher.drain();
    const [row] = await sql`select * from credit_transactions where id = ${id}`;
    return {
      row,
      header: res.headers.get("x-planto-cost"),
      body: (await res.json()) as { usage: Record<string, number> },
    };
  }

  const cases: Array<[string, Record<string, unknown>, string, Parameters<typeof computeCost>[1]]> = [
    [
      "plain",
      { model: "gpt-4.1", mock: { usage: { prompt_tokens: 1200, completion_tokens: 300 } } },
      "openai/gpt-4.1",
      { promptTokens: 1200, cachedTokens: 0, cacheWriteTokens: 0, completionTokens: 300, reasoningTokens: 0 },
    ],
    [
      "cached",
      {
        model: "gpt-4.1-mini",
        mock: { usage: { prompt_tokens: 5000, cached_tokens: 4096, completion_tokens: 10 } },
      },
      "openai/gpt-4.1-mini",
      {
        promptTokens: 5000,
        cachedTokens: 4096,
        cacheWriteTokens: 0,
        completionTokens: 10,
        reasoningTokens: 0,
      },
    ],
    [
      "reasoning",
      {
        model: "o4-mini",
        mock: { usage: { prompt_tokens: 100, completion_tokens: 900, reasoning_tokens: 800 } },
      },
      "openai/o4-mini",
      {
        promptTokens: 100,
        cachedTokens: 0,
        cacheWriteTokens: 0,
        completionTokens: 900,
        reasoningTokens: 800,
      },
    ],
    [
      "OpenRouter cost",
      {
        model: "anthropic/claude-sonnet-4",
        mock: { usage: { prompt_tokens: 10, completion_tokens: 10, cost: 0.0042 } },
      },
      "anthropic/claude-sonnet-4",
      {
        promptTokens: 10,
        cachedTokens: 0,
        cacheWriteTokens: 0,
        completionTokens: 10,
        reasoningTokens: 0,
        upstreamCostUsd: 0.0042,
      },
    ],
  ];

  it.each(cases)("%s", async (_name, body, modelId, usage) => {
    const { row, header, body: response } = await charged({ ...body, messages });
    const expected = computeCost(model(modelId), usage, {
      markupBps: 750,
      upstreamCostUsd: usage.upstreamCostUsd,
    });
    expect(Number(row?.amount)).toBe(expected.total);
    expect(Number(row?.debit_base_amount)).toBe(expected.base);
    expect(Number(row?.debit_surcharge)).toBe(expected.surcharge);
    expect(Number(row?.debit_cache_discount)).toBe(expected.cacheDiscount);
    expect(Number(row?.start_balance) - Number(row?.end_balance)).toBe(expected.total);
    expect(Number(header) * 1e9).toBeCloseTo(expected.total, 0);
    expect(Number(response.usage.cost) * 1e9).toBeCloseTo(expected.total, 0);
  });

  it("Relace apply", async () => {
    const { row } = await charged(
      {
        initialCode: "a",
        editSnippet: "b",
        mock: { usage: { prompt_tokens: 3000, completion_tokens: 2000 } },
      },
      "/v1/code/apply",
    );
    const expected = computeCost(
      model("relace-apply-3"),
      {
        promptTokens: 3000,
        cachedTokens: 0,
        cacheWriteTokens: 0,
        completionTokens: 2000,
        reasoningTokens: 0,
      },
      { markupBps: 750 },
    );
    expect(Number(row?.amount)).toBe(expected.total);
    expect(row?.debit_model_provider).toBe("relace");
  });

  it("a client that disconnects mid-stream is charged for the tokens it was sent", async () => {
    const res = await fetch(`${gw.url}/v1/chat/completions`, {
      method: "POST",
      headers: { authorization: `Bearer ${org.key}`, "content-type": "application/json" },
      body: JSON.stringify({
        model: "gpt-4.1",
        messages,
        stream: true,
        mock: { chunks: 200, delayMs: 10, tag: randomUUID() },
      }),
    });
    const id = res.headers.get("x-request-id") as string;
    const reader = res.body!.getReader();
    let received = "";
    while ((received.match(/" tok"/g) ?? []).length < 5)
      received += new TextDecoder().decode((await reader.read()).value);
    await reader.cancel();
    // The gateway sees the client go, stops the upstream and settles: the call leaves the open set.
    expect(await gw.services.calls.drain(20_000)).toBe(0);
    await gw.services.flusher.drain();
    const [usage] = await sql`select * from usage_records where id = ${id}`;
    const [debit] = await sql`select * from credit_transactions where id = ${id}`;
    expect(usage?.client_cancelled).toBe(true);
    expect(usage?.no_reported_usage).toBe(true);
    // Counted from the text the gateway forwarded: at least what the client read, far from all 200.
    expect(debit?.debit_output_tokens).toBeGreaterThanOrEqual(5);
    expect(debit?.debit_output_tokens).toBeLessThan(100);
    expect(Number(debit?.amount)).toBeGreaterThan(0);
  });

  it("a call the provider refused or never answered costs nothing, and its usage record says so", async () => {
    const before = await gw.services.meter.balance(org.id);
    const failed = await fetch(`${gw.url}/v1/chat/completions`, {
      method: "POST",
      headers: { authorization: `Bearer ${org.key}`, "content-type": "application/json" },
      body: JSON.stringify({ model: "gpt-4.1", messages, mock: { status: 500 } }),
    });
    expect(failed.status).toBe(502);
    await gw.services.flusher.drain();
    expect(await gw.services.meter.balance(org.id)).toBe(before);
    const [usage] =
      await sql`select * from usage_records where org_id = ${org.id} and upstream_error order by ended_at desc limit 1`;
    expect(usage).toMatchObject({ upstream_error: true });
    expect(Number(usage?.charged)).toBe(0);
    expect(await sql`select 1 from credit_transactions where id = ${usage?.id as string}`).toHaveLength(0);
  });

  it("BYO calls pass the user's key through, debit nothing, and still record usage at list price", async () => {
    const byo = await gw.org({ billingMode: "byo" });
    const t = randomUUID();
    const res = await fetch(`${gw.url}/v1/chat/completions`, {
      method: "POST",
      headers: {
        authorization: `Bearer ${byo.key}`,
        "content-type": "application/json",
        "x-planto-provider-key": "sk-user-123",
      },
      body: JSON.stringify({ model: "gpt-4.1", messages, mock: { tag: t } }),
    });
    expect(res.status).toBe(200);
    expect((await gw.mock.waitForRequest(t)).headers.authorization).toBe("Bearer sk-user-123");
    await gw.services.flusher.drain();
    const id = res.headers.get("x-request-id") as string;
    expect(await sql`select * from credit_transactions where org_id = ${byo.id}`).toHaveLength(0);
    const [usage] = await sql`select * from usage_records where id = ${id}`;
    expect(usage?.byo).toBe(true);
    expect(Number(usage?.charged)).toBe(0);
    expect(Number(usage?.list_price)).toBeGreaterThan(0);
  });

  it("tags the usage record with the x-planto-* headers", async () => {
    const res = await fetch(`${gw.url}/v1/chat/completions`, {
      method: "POST",
      headers: {
        authorization: `Bearer ${org.key}`,
        "content-type": "application/json",
        "x-planto-plan-id": "plan-1",
        "x-planto-plan-name": "My plan",
        "x-planto-session-id": "repl-9",
        "x-planto-user-id": "user-7",
        "x-planto-purpose": "planning",
        "x-planto-model-role": "planner",
        "x-planto-model-pack": "daily",
      },
      body: JSON.stringify({ model: "gpt-4.1", messages }),
    });
    const id = res.headers.get("x-request-id") as string;
    await gw.services.flusher.drain();
    const [u] = await sql`select * from usage_records where id = ${id}`;
    expect(u).toMatchObject({
      plan_id: "plan-1",
      plan_name: "My plan",
      session_id: "repl-9",
      user_id: "user-7",
      purpose: "planning",
      model_role: "planner",
      model_pack: "daily",
    });
    expect(u?.first_token_at).not.toBeNull();
    const [d] = await sql`select * from credit_transactions where id = ${id}`;
    expect(d).toMatchObject({
      debit_plan_id: "plan-1",
      debit_purpose: "planning",
      debit_session_id: "repl-9",
      debit_model_role: "planner",
    });
  });
});
