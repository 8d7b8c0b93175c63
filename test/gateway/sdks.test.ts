import { createOpenAI } from "@ai-sdk/openai";
import { ChatOpenAI } from "@langchain/openai";
import { generateText, streamText } from "ai";
import postgres from "postgres";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { startGateway, type TestGateway, type TestOrg } from "../harness/gateway.ts";

const INCLUDE_COST = { "x-planto-include-cost": "1" };

/**
 * The SDKs users bring, unmodified, against the gateway: the Vercel AI SDK's default OpenAI provider
 * (the Responses API), LangChain's ChatOpenAI (chat completions) and the openai SDK. Each call must
 * be debited exactly once, and its cost must be readable through the SDK's own surface.
 */
describe("the AI SDK, LangChain and the openai SDK through the gateway (Postgres + Redis)", () => {
  let gw: TestGateway;
  let sql: postgres.Sql;

  beforeAll(async () => {
    gw = await startGateway({ backend: "postgres+redis" });
    sql = postgres(gw.config.DATABASE_URL as string, { max: 2, onnotice: () => {} });
  });
  afterAll(async () => {
    await sql?.end();
    await gw?.close();
  });

  /** After `calls` calls: the org's debits, once the ledger has them all, and its live balance. */
  async function debitsOf(org: TestOrg, calls: number) {
    const rows = await vi.waitUntil(
      async () => {
        await gw.services.flusher.drain();
        const r = await sql`select id, amount from credit_transactions
          where org_id = ${org.id} and transaction_type = 'debit' order by created_at`;
        return r.length >= calls ? r : undefined;
      },
      { timeout: 10_000, interval: 20 },
    );
    return {
      amounts: rows.map((r) => Number(r.amount)),
      balance: (await gw.services.meter.balance(org.id)) as number,
    };
  }

  it("AI SDK generateText: the default provider (Responses API), debited once, cost in usage.raw and the header", async () => {
    const org = await gw.org({ credits: "1" });
    const openai = createOpenAI({ baseURL: `${gw.url}/v1`, apiKey: org.key, headers: INCLUDE_COST });
    const result = await generateText({ model: openai("gpt-4.1-mini"), prompt: "Say hello." });
    expect(result.text).toBe(" tok".repeat(20));
    expect(result.usage.outputTokens).toBe(20);
    const cost = (result.usage.raw as { cost: number }).cost;
    expect(cost).toBeGreaterThan(0);
    expect(Number(result.response.headers?.["x-planto-cost"])).toBe(cost);
    expect(gw.mock.requests.at(-1)?.path).toBe("/openai/v1/responses");
    const { amounts, balance } = await debitsOf(org, 1);
    expect(amounts).toEqual([Math.round(cost * 1e9)]);
    expect(balance).toBe(1e9 - Math.round(cost * 1e9));
  });

  it("AI SDK streamText: streamed through the Responses API, debited once, cost in the final usage", async () => {
    const org = await gw.org({ credits: "1" });
    const openai = createOpenAI({ baseURL: `${gw.url}/v1`, apiKey: org.key });
    const result = streamText({ model: openai("gpt-4.1-mini"), prompt: "Say hello." });
    let text = "";
    for await (const delta of result.textStream) text += delta;
    expect(text).toBe(" tok".repeat(20));
    const usage = await result.usage;
    expect(usage.outputTokens).toBe(20);
    const cost = (usage.raw as { cost: number }).cost;
    expect(cost).toBeGreaterThan(0);
    const { amounts } = await debitsOf(org, 1);
    expect(amounts).toEqual([Math.round(cost * 1e9)]);
  });

  it("LangChain ChatOpenAI: a call and a stream, each debited once, cost in response_metadata.usage", async () => {
    const org = await gw.org({ credits: "1" });
    const model = new ChatOpenAI({
      model: "gpt-4.1-mini",
      apiKey: org.key,
      maxRetries: 0,
      // LangChain asks for the usage frame by default; without it, the header still brings it.
      streamUsage: false,
      configuration: { baseURL: `${gw.url}/v1`, defaultHeaders: INCLUDE_COST },
    });
    const message = await model.invoke("Say hello.");
    expect(message.content).toBe(" tok".repeat(20));
    const invokeCost = (message.response_metadata.usage as { cost: number }).cost;
    expect(invokeCost).toBeGreaterThan(0);

    let streamed = "";
    let streamCost: number | undefined;
    for await (const chunk of await model.stream("Say hello.")) {
      streamed += String(chunk.content);
      const usage = chunk.response_metadata?.usage as { cost?: number } | undefined;
      if (usage?.cost !== undefined) streamCost = usage.cost;
    }
    expect(streamed).toBe(" tok".repeat(20));
    expect(streamCost).toBeGreaterThan(0);
    const sent = gw.mock.requests.at(-1);
    expect(sent?.headers["x-planto-include-cost"]).toBeUndefined(); // the gateway's header, not the provider's
    const { amounts } = await debitsOf(org, 2);
    expect(amounts).toEqual([invokeCost, streamCost as number].map((c) => Math.round(c * 1e9)));

    // The same stream without the header: no usage frame, as before.
    const plain = new ChatOpenAI({
      model: "gpt-4.1-mini",
      apiKey: org.key,
      maxRetries: 0,
      streamUsage: false,
      configuration: { baseURL: `${gw.url}/v1` },
    });
    for await (const chunk of await plain.stream("Say hello.")) {
      expect((chunk.response_metadata?.usage as { cost?: number } | undefined)?.cost).toBeUndefined();
    }
  });

  it("openai SDK: x-planto-include-cost brings the usage frame with cost to a stream that did not ask for usage", async () => {
    const org = await gw.org({ credits: "1" });
    const collect = async (headers: Record<string, string>) => {
      const stream = await org.client.chat.completions.create(
        { model: "gpt-4.1-nano", messages: [{ role: "user", content: "hi" }], stream: true },
        { headers },
      );
      let usage: Record<string, unknown> | undefined;
      for await (const chunk of stream) if (chunk.usage) usage = chunk.usage as never;
      return usage;
    };
    expect(await collect({})).toBeUndefined();
    const usage = await collect(INCLUDE_COST);
    expect(usage?.completion_tokens).toBe(20);
    expect(usage?.cost as number).toBeGreaterThan(0);
    const { amounts } = await debitsOf(org, 2);
    expect(amounts).toHaveLength(2);
    expect(amounts[1]).toBe(Math.round((usage?.cost as number) * 1e9));
  });
});
