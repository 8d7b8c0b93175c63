import { randomUUID } from "node:crypto";
import postgres from "postgres";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startGateway, type TestGateway, type TestOrg } from "../harness/gateway.ts";
import { ledgerRows } from "../harness/ledger.ts";

const tag = () => `t${randomUUID().slice(0, 8)}`;
/** Mock knobs ride in the body; the openai SDK sends unknown fields as they are. */
type WithMock<T> = T & { mock: Record<string, unknown> };

interface SseEvent {
  event: string | undefined;
  data: Record<string, unknown>;
}

/** The events of a Responses API stream, as a client reads them off the wire. */
function parseEvents(text: string): SseEvent[] {
  const events: SseEvent[] = [];
  for (const block of text.split("\n\n")) {
    const lines = block.split("\n").filter((l) => l && !l.startsWith(":"));
    const data = lines.find((l) => l.startsWith("data: "));
    if (!data) continue;
    const event = lines.find((l) => l.startsWith("event: "))?.slice("event: ".length);
    events.push({ event, data: JSON.parse(data.slice("data: ".length)) as Record<string, unknown> });
  }
  return events;
}

describe("the Responses API through the gateway (Postgres + Redis)", () => {
  let gw: TestGateway;
  let org: TestOrg;
  let sql: postgres.Sql;

  beforeAll(async () => {
    // 10% markup: every expected charge below is worked out by hand from the list prices.
    gw = await startGateway({ backend: "postgres+redis", env: { MARKUP_BPS: "1000" } });
    org = await gw.org({ credits: "10" });
    sql = postgres(gw.config.DATABASE_URL as string, { max: 2, onnotice: () => {} });
  });
  afterAll(async () => {
    await sql?.end();
    await gw?.close();
  });

  async function books(requestId: string) {
    const { usage, debits } = await ledgerRows(gw, sql, requestId);
    return { usage, debit: debits[0] };
  }

  // gpt-4.1-mini lists $0.40 / $0.10 cached / $1.60 per 1M tokens: 400, 100 and 1600 nanodollars a token.
  const usage = { prompt_tokens: 1000, cached_tokens: 400, completion_tokens: 20 };
  const miniBase = 600 * 400 + 400 * 100 + 20 * 1600; // 312,000 nanodollars
  const miniCharge = miniBase + miniBase / 10; // plus 10%: 343,200

  it("answers a plain call to the openai SDK with usage, its cost, and debits usage × price once", async () => {
    const { data, response } = await org.client.responses
      .create({
        model: "gpt-4.1-mini",
        input: "Say hello.",
        mock: { usage },
      } as WithMock<{ model: string; input: string }>)
      .withResponse();
    expect(data.object).toBe("response");
    expect(data.output_text).toBe(" tok".repeat(20));
    expect(data.usage?.input_tokens).toBe(1000);
    expect(data.usage?.input_tokens_details.cached_tokens).toBe(400);
    const cost = (data.usage as unknown as { cost: number }).cost;
    expect(cost).toBe(miniCharge / 1e9);
    expect(response.headers.get("x-planto-cost")).toBe("0.0003432");
    const { debit, usage: record } = await books(response.headers.get("x-request-id") as string);
    expect(debit).toBe(miniCharge);
    expect(record).toMatchObject({
      route: "responses",
      provider: "openai",
      model: "openai/gpt-4.1-mini",
      input_tokens: 600,
      cached_tokens: 400,
      output_tokens: 20,
      attempts: 1,
    });
  });

  it("streams the events unchanged to the openai SDK, with the gateway's cost in response.completed", async () => {
    const t = tag();
    const res = await gw.post("/v1/responses", org.key, {
      model: "gpt-4.1-mini",
      input: [{ role: "user", content: [{ type: "input_text", text: "Say hello." }] }],
      stream: true,
      mock: { tag: t, chunks: 5, usage: { ...usage, completion_tokens: 20, reasoning_tokens: 15 } },
    });
    expect(res.headers.get("content-type")).toContain("text/event-stream");
    const text = await res.text();
    expect(text).not.toContain("[DONE]");
    const events = parseEvents(text);
    expect(events.map((e) => e.event)).toEqual([
      "response.created",
      "response.in_progress",
      "response.output_item.added",
      "response.content_part.added",
      ...Array(5).fill("response.output_text.delta"),
      "response.output_text.done",
      "response.content_part.done",
      "response.output_item.done",
      "response.completed",
    ]);
    expect(events.map((e) => e.data.sequence_number)).toEqual(events.map((_, i) => i));
    const completed = events.at(-1)?.data.response as { usage: Record<string, unknown> };
    expect(completed.usage).toMatchObject({
      input_tokens: 1000,
      output_tokens: 20,
      output_tokens_details: { reasoning_tokens: 15 },
      cost: miniCharge / 1e9,
    });
    // Every other event is the provider's, byte for byte.
    const direct = await fetch(`${gw.mock.baseUrls.openai}/responses`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        model: "gpt-4.1-mini",
        input: [{ role: "user", content: [{ type: "input_text", text: "Say hello." }] }],
        stream: true,
        mock: { tag: t, chunks: 5, usage: { ...usage, completion_tokens: 20, reasoning_tokens: 15 } },
      }),
    }).then((r) => r.text());
    const withoutLast = (s: string) => s.split("event: response.completed")[0];
    expect(withoutLast(text)).toBe(withoutLast(direct));
    const { debit } = await books(res.headers.get("x-request-id") as string);
    expect(debit).toBe(miniCharge);
  });

  it("streams through the openai SDK's own event parser", async () => {
    const stream = await org.client.responses.create({
      model: "openai/gpt-4.1",
      input: "Say hello.",
      stream: true,
    });
    let text = "";
    let final: Record<string, unknown> | undefined;
    for await (const event of stream) {
      if (event.type === "response.output_text.delta") text += event.delta;
      if (event.type === "response.completed") final = event.response.usage as never;
    }
    expect(text).toBe(" tok".repeat(20));
    expect(final?.cost as number).toBeGreaterThan(0);
  });

  it("routes OpenRouter models to OpenRouter's /responses and charges OpenRouter's cost plus markup", async () => {
    for (const stream of [false, true]) {
      const t = tag();
      const res = await gw.post("/v1/responses", org.key, {
        model: "anthropic/claude-sonnet-4",
        input: "Say hello.",
        stream,
        mock: { tag: t, usage: { prompt_tokens: 50, completion_tokens: 20, cost: 0.002 } },
      });
      expect(res.status).toBe(200);
      const seen = await gw.mock.waitForRequest(t);
      expect(seen.flavour).toBe("openrouter");
      expect(seen.path).toBe("/openrouter/v1/responses");
      expect(seen.body.model).toBe("anthropic/claude-sonnet-4");
      expect(seen.headers.authorization).toBe("Bearer sk-or-integrated");
      const body = await res.text();
      // OpenRouter's $0.002 is the base; the client sees the gateway's charge, never OpenRouter's.
      const costs = [...body.matchAll(/"cost":([0-9.e-]+)/g)].map((m) => Number(m[1]));
      expect(costs).toEqual([0.0022]);
      const { debit, usage: record } = await books(res.headers.get("x-request-id") as string);
      expect(debit).toBe(2_200_000);
      expect(record).toMatchObject({ provider: "openrouter", route: "responses", output_tokens: 20 });
    }
  });

  it("tags the usage record from the x-planto-* headers, as for chat", async () => {
    const res = await gw.post(
      "/v1/responses",
      org.key,
      { model: "gpt-4.1-nano", input: "hi" },
      { "x-planto-plan-id": "plan-7", "x-planto-purpose": "name" },
    );
    expect(res.status).toBe(200);
    const { usage: record } = await books(res.headers.get("x-request-id") as string);
    expect(record).toMatchObject({ plan_id: "plan-7", purpose: "name" });
  });

  it("refuses bad requests in the contract's envelope, before any upstream call or hold", async () => {
    const cases: Array<[unknown, number, string, string | null]> = [
      [{ model: "gpt-4.1" }, 400, "invalid_request_error", "input"],
      [{ model: "gpt-4.1", input: [] }, 400, "invalid_request_error", "input"],
      [{ model: "gpt-4.1", input: ["hi"] }, 400, "invalid_request_error", "input[0]"],
      [{ input: "hi" }, 400, "invalid_request_error", "model"],
      [{ model: "no-such-model", input: "hi" }, 404, "model_not_found", "model"],
      [{ model: "relace-apply-3", input: "hi" }, 400, "invalid_request_error", "model"],
    ];
    for (const [body, status, code, param] of cases) {
      const res = await gw.post("/v1/responses", org.key, body);
      expect(res.status).toBe(status);
      const err = (await res.json()) as { error: { code: string; param: string | null } };
      expect([err.error.code, err.error.param]).toEqual([code, param]);
    }
    const anonymous = await gw.post("/v1/responses", null, { model: "gpt-4.1", input: "hi" });
    expect(anonymous.status).toBe(401);
    const broke = await gw.org({ credits: "0.000001" });
    const refused = await gw.post("/v1/responses", broke.key, { model: "gpt-4.1", input: "hi" });
    expect(refused.status).toBe(402);
    expect(((await refused.json()) as { error: { code: string } }).error.code).toBe(
      "cloud_insufficient_credits",
    );
  });

  it("refuses a prompt clearly over the model's context window before it goes upstream", async () => {
    const payer = await gw.org({ credits: "1" });
    const upstreamBefore = gw.mock.requests.length;
    // o3 takes 200,000 tokens; 1.7 MB of text is at least 212,500 of them however it is tokenized,
    // whether it comes as a string, as input_text parts, or split between instructions and input.
    const words = (n: number) => "word ".repeat(n);
    const prompts: unknown[] = [
      { model: "o3", input: words(340_000) },
      {
        model: "o3",
        input: [{ role: "user", content: [{ type: "input_text", text: words(340_000) }] }],
      },
      { model: "o3", instructions: words(170_000), input: words(170_000) },
    ];
    for (const body of prompts) {
      const res = await gw.post("/v1/responses", payer.key, body);
      expect(res.status).toBe(400);
      const err = (await res.json()) as { error: { code: string; param: string | null } };
      expect([err.error.code, err.error.param]).toEqual(["context_length_exceeded", "input"]);
    }
    // Half of it fits and goes through.
    const fits = await gw.post("/v1/responses", payer.key, { model: "o3", input: words(170_000) });
    expect(fits.status).toBe(200);
    expect(gw.mock.requests.length).toBe(upstreamBefore + 1);
  });

  it("passes an upstream 400 through and charges nothing", async () => {
    const payer = await gw.org({ credits: "1" });
    const res = await gw.post("/v1/responses", payer.key, {
      model: "gpt-4.1",
      input: "hi",
      mock: { status: 400 },
    });
    expect(res.status).toBe(400);
    await gw.services.flusher.drain();
    expect(await gw.services.meter.balance(payer.id)).toBe(1e9);
    const records = await sql`select charged, upstream_error from usage_records where org_id = ${payer.id}`;
    expect(records.map((r) => [Number(r.charged), r.upstream_error])).toEqual([[0, true]]);
  });

  it("forwards the provider's mid-stream error event and charges what was streamed", async () => {
    const res = await gw.post("/v1/responses", org.key, {
      model: "gpt-4.1",
      input: "hi",
      stream: true,
      mock: { errorAfterChunks: 3 },
    });
    const events = parseEvents(await res.text());
    expect(events.at(-1)).toMatchObject({ event: "error", data: { type: "error", code: "server_error" } });
    const { debit, usage: record } = await books(res.headers.get("x-request-id") as string);
    expect(record).toMatchObject({ upstream_error: true, no_reported_usage: true, output_tokens: 3 });
    expect(debit).toBeGreaterThan(0);
  });

  it("ends a stream the provider dropped with its own error event, numbered after the last one", async () => {
    const res = await gw.post("/v1/responses", org.key, {
      model: "gpt-4.1",
      input: "hi",
      stream: true,
      mock: { abortAfterChunks: 3 },
    });
    const events = parseEvents(await res.text());
    const last = events.at(-1);
    expect(last?.event).toBe("error");
    expect(last?.data).toMatchObject({ type: "error", code: "upstream_error" });
    expect(last?.data.sequence_number).toBe((events.at(-2)?.data.sequence_number as number) + 1);
    const { usage: record } = await books(res.headers.get("x-request-id") as string);
    expect(record).toMatchObject({ stopped_early: true, output_tokens: 3 });
  });
});
