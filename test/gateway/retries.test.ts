import { randomUUID } from "node:crypto";
import { writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import postgres from "postgres";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Sleeper } from "../../src/core/clock.ts";
import { startGateway, type TestGateway, type TestOrg } from "../harness/gateway.ts";
import { ledgerRows } from "../harness/ledger.ts";

const tag = () => `t${randomUUID().slice(0, 8)}`;
const messages = [{ role: "user", content: "hello" }];

/** Backoff that records what it was asked to wait and lets the call go on at once. */
function recordingSleeper(): Sleeper & { waits: number[] } {
  const waits: number[] = [];
  return { waits, sleep: async (ms) => void waits.push(ms) };
}

/**
 * gpt-4.1-mini falls back to OpenRouter's `openai/gpt-4.1-mini`, listed there at 20× the output
 * price, so a hold sized for the direct route alone would be too small for it.
 */
function pricesFile(): string {
  const path = join(tmpdir(), `prices-${randomUUID()}.json`);
  writeFileSync(
    path,
    JSON.stringify([
      {
        id: "openai/gpt-4.1-mini",
        fallbacks: [
          {
            provider: "openrouter",
            upstreamModel: "openai/gpt-4.1-mini",
            prices: { input: "0.4", cachedInput: "0.1", output: "32" },
          },
        ],
      },
    ]),
  );
  return path;
}

/** A port nothing listens on: connections to it are refused. */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

describe("retries and fallbacks before the first byte (Postgres + Redis)", () => {
  let gw: TestGateway;
  let org: TestOrg;
  let sql: postgres.Sql;
  const sleeper = recordingSleeper();

  beforeAll(async () => {
    gw = await startGateway({
      backend: "postgres+redis",
      env: { MARKUP_BPS: "1000", PRICES_FILE: pricesFile() },
      sleeper,
    });
    org = await gw.org({ credits: "10" });
    sql = postgres(gw.config.DATABASE_URL as string, { max: 2, onnotice: () => {} });
  });
  afterAll(async () => {
    await sql?.end();
    await gw?.close();
  });

  const books = (requestId: string) => ledgerRows(gw, sql, requestId);
  const seen = (t: string) => gw.mock.requests.filter((r) => r.tag === t);
  // 1000 prompt and 20 completion tokens on gpt-4.1-mini direct: (1000 × 400 + 20 × 1600) + 10%.
  const directCharge = 432_000 + 43_200;

  it("waits out a 429's retry-after, then charges the one attempt that was served", async () => {
    sleeper.waits.length = 0;
    const t = tag();
    const res = await gw.post("/v1/chat/completions", org.key, {
      model: "gpt-4.1-mini",
      messages,
      mock: {
        tag: t,
        status: 429,
        failFirst: 1,
        retryAfter: 1,
        usage: { prompt_tokens: 1000, completion_tokens: 20 },
      },
    });
    expect(res.status).toBe(200);
    expect(sleeper.waits).toEqual([1000]);
    expect(seen(t).map((r) => r.flavour)).toEqual(["openai", "openai"]);
    const { debits, usage } = await books(res.headers.get("x-request-id") as string);
    expect(debits).toEqual([directCharge]);
    expect(usage).toMatchObject({ provider: "openai", attempts: 2, charged: String(directCharge) });
  });

  it.each([false, true])(
    "falls back to OpenRouter when OpenAI keeps answering 5xx (stream: %s)",
    async (stream) => {
      sleeper.waits.length = 0;
      const t = tag();
      const res = await gw.post("/v1/chat/completions", org.key, {
        model: "gpt-4.1-mini",
        messages,
        stream,
        ...(stream ? { stream_options: { include_usage: true } } : {}),
        mock: {
          tag: t,
          status: 503,
          failOn: "openai",
          usage: { prompt_tokens: 1000, completion_tokens: 20, cost: 0.004 },
        },
      });
      expect(res.status).toBe(200);
      const text = await res.text();
      // Two tries on OpenAI with one jittered backoff between them, then OpenRouter at once.
      expect(seen(t).map((r) => [r.flavour, r.body.model])).toEqual([
        ["openai", "gpt-4.1-mini"],
        ["openai", "gpt-4.1-mini"],
        ["openrouter", "openai/gpt-4.1-mini"],
      ]);
      expect(sleeper.waits).toHaveLength(1);
      expect(sleeper.waits[0]).toBeLessThan(gw.config.UPSTREAM_RETRY_BASE_MS);
      // Charged at the route that served: OpenRouter's $0.004 plus 10%, and the client is told so.
      const costs = [...text.matchAll(/"cost":([0-9.e-]+)/g)].map((m) => Number(m[1]));
      expect(costs).toEqual([0.0044]);
      const { debits, usage } = await books(res.headers.get("x-request-id") as string);
      expect(debits).toEqual([4_400_000]);
      expect(usage).toMatchObject({ provider: "openrouter", model: "openai/gpt-4.1-mini", attempts: 3 });
    },
  );

  it("does not wait longer than UPSTREAM_RETRY_MAX_MS: a long retry-after moves on to the fallback", async () => {
    sleeper.waits.length = 0;
    const t = tag();
    const res = await gw.post("/v1/responses", org.key, {
      model: "gpt-4.1-mini",
      input: "hello",
      mock: { tag: t, status: 429, failOn: "openai", retryAfter: 60 },
    });
    expect(res.status).toBe(200);
    expect(sleeper.waits).toEqual([]);
    expect(seen(t).map((r) => [r.flavour, r.path])).toEqual([
      ["openai", "/openai/v1/responses"],
      ["openrouter", "/openrouter/v1/responses"],
    ]);
    const { usage } = await books(res.headers.get("x-request-id") as string);
    expect(usage).toMatchObject({ provider: "openrouter", route: "responses", attempts: 2 });
  });

  /** A chat call every upstream answers with `status`: what the client got, and who was asked. */
  const failing = async (status: number) => {
    const t = tag();
    const res = await gw.post("/v1/chat/completions", org.key, {
      model: "gpt-4.1-mini",
      messages,
      mock: { tag: t, status },
    });
    return { res, asked: seen(t).map((r) => r.flavour) };
  };

  it("answers with the last route's error when every route fails, and charges nothing", async () => {
    const { res, asked } = await failing(500);
    expect(res.status).toBe(502);
    expect(asked).toEqual(["openai", "openai", "openrouter", "openrouter"]);
    expect((await books(res.headers.get("x-request-id") as string)).debits).toEqual([]);
  });

  it("never retries a 4xx: the provider looked at the request", async () => {
    const { res, asked } = await failing(400);
    expect(res.status).toBe(400);
    expect(asked).toEqual(["openai"]);
  });

  it.each([
    ["a mid-stream error frame", { errorAfterChunks: 2 }],
    ["a dropped connection", { abortAfterChunks: 2 }],
  ])("never retries once bytes reached the client: %s", async (_name, knobs) => {
    const t = tag();
    const res = await gw.post("/v1/chat/completions", org.key, {
      model: "gpt-4.1-mini",
      messages,
      stream: true,
      mock: { tag: t, ...knobs },
    });
    expect(res.status).toBe(200);
    const text = await res.text();
    expect(text).toContain('"error"');
    expect(seen(t)).toHaveLength(1);
    const { usage } = await books(res.headers.get("x-request-id") as string);
    expect(usage).toMatchObject({ provider: "openai", attempts: 1, upstream_error: true });
  });

  it("retries a BYO call on its own provider only: the org's key is for that one", async () => {
    const byo = await gw.org({ billingMode: "byo" });
    const t = tag();
    const res = await gw.post(
      "/v1/chat/completions",
      byo.key,
      { model: "gpt-4.1-mini", messages, mock: { tag: t, status: 503, failOn: "openai" } },
      { "x-planto-provider-key": "sk-byo-own" },
    );
    expect(res.status).toBe(502);
    expect(seen(t).map((r) => [r.flavour, r.headers.authorization])).toEqual([
      ["openai", "Bearer sk-byo-own"],
      ["openai", "Bearer sk-byo-own"],
    ]);
    // Served on a retry: still its own provider, and nothing debited.
    const t2 = tag();
    const ok = await gw.post(
      "/v1/chat/completions",
      byo.key,
      { model: "gpt-4.1-mini", messages, mock: { tag: t2, status: 503, failFirst: 1 } },
      { "x-planto-provider-key": "sk-byo-own" },
    );
    expect(ok.status).toBe(200);
    const { debits, usage } = await books(ok.headers.get("x-request-id") as string);
    expect(debits).toEqual([]);
    expect(usage).toMatchObject({ provider: "openai", attempts: 2, byo: true, charged: "0" });
  });

  it("holds enough for the dearest route: a balance that covers only the direct route is refused", async () => {
    const poor = await gw.org({ credits: "0.01" });
    // 1000 output tokens: $0.0016 direct, $0.032 on the fallback's price.
    const body = { messages, max_tokens: 1000 };
    const refused = await gw.post("/v1/chat/completions", poor.key, { ...body, model: "gpt-4.1-mini" });
    expect(refused.status).toBe(402);
    const fine = await gw.post("/v1/chat/completions", poor.key, { ...body, model: "gpt-4.1-nano" });
    expect(fine.status).toBe(200);
  });
});

describe("a refused connection is retried, then falls back", () => {
  let gw: TestGateway;
  const sleeper = recordingSleeper();

  beforeAll(async () => {
    const port = await closedPort();
    gw = await startGateway({
      backend: "postgres+redis",
      env: { PRICES_FILE: pricesFile(), OPENAI_BASE_URL: `http://127.0.0.1:${port}/v1` },
      sleeper,
    });
  });
  afterAll(() => gw?.close());

  it("OpenAI unreachable: two refused tries, then OpenRouter serves", async () => {
    const org = await gw.org({ credits: "1" });
    const t = tag();
    const res = await gw.post("/v1/chat/completions", org.key, {
      model: "gpt-4.1-mini",
      messages,
      mock: { tag: t },
    });
    expect(res.status).toBe(200);
    expect(sleeper.waits).toHaveLength(1);
    expect(seen(gw, t)).toEqual(["openrouter"]);
    const sql = postgres(gw.config.DATABASE_URL as string, { max: 1, onnotice: () => {} });
    try {
      const { usage: row } = await ledgerRows(gw, sql, res.headers.get("x-request-id") as string);
      expect(row).toMatchObject({ provider: "openrouter", attempts: 3 });
    } finally {
      await sql.end();
    }
  });
});

function seen(gw: TestGateway, t: string): string[] {
  return gw.mock.requests.filter((r) => r.tag === t).map((r) => r.flavour);
}
