import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { backends, startGateway, type TestGateway, type TestOrg } from "../harness/gateway.ts";

const tag = () => `t${randomUUID().slice(0, 8)}`;
const messages = [{ role: "user" as const, content: "Say hello in twenty tokens." }];

describe.each(backends)("chat completions through the gateway (%s)", (backend) => {
  let gw: TestGateway;
  let org: TestOrg;

  beforeAll(async () => {
    gw = await startGateway({ backend });
    org = await gw.org({ credits: "5" });
  });
  afterAll(() => gw?.close());

  it("streams the upstream's frames unchanged, without the usage frame it was not asked for", async () => {
    const t = tag();
    const body = { model: "gpt-4.1-mini", messages, stream: true, mock: { tag: t, chunks: 5 } };
    const viaGateway = await (await gw.post("/v1/chat/completions", org.key, body)).text();
    // The same call straight to the provider, as the gateway made it (with the usage frame asked for).
    const direct = await fetch(`${gw.mock.baseUrls.openai}/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ ...body, stream_options: { include_usage: true } }),
    }).then((r) => r.text());
    const withoutUsageFrame = direct
      .split("\n\n")
      .filter((frame) => !frame.includes('"choices":[],"usage":{'))
      .join("\n\n");
    expect(viaGateway).toBe(withoutUsageFrame);
    expect(viaGateway).toContain("data: [DONE]");
  });

  it("sends the provider the client's own bytes, with only the usage frame's request added", async () => {
    const t = tag();
    // Spacing, key order, escapes and a number's spelling that a JSON.stringify would not keep.
    const text = `{ "model" : "gpt-4.1-mini", "stream": true, "temperature": 1.0,
      "messages": [{"role": "user", "content": "caf\\u00e9 \\"quoted\\" {[\\n" }],
      "mock": {"tag": "${t}", "chunks": 3} }\n`;
    const res = await fetch(`${gw.url}/v1/chat/completions`, {
      method: "POST",
      headers: { authorization: `Bearer ${org.key}`, "content-type": "application/json" },
      body: text,
    });
    expect(res.status).toBe(200);
    await res.text();
    const upstream = await gw.mock.waitForRequest(t);
    const close = text.lastIndexOf("}");
    expect(upstream.raw.toString("utf8")).toBe(
      `${text.slice(0, close)},"stream_options":{"include_usage":true}${text.slice(close)}`,
    );
    expect(upstream.body.stream_options).toEqual({ include_usage: true });
  });

  it("serializes the body again when a field the client sent must change", async () => {
    const t = tag();
    const body = {
      model: "gpt-4.1-mini",
      messages,
      stream: true,
      stream_options: { include_usage: false },
      mock: { tag: t, chunks: 3 },
    };
    const res = await gw.post("/v1/chat/completions", org.key, body);
    expect(res.status).toBe(200);
    await res.text();
    const upstream = await gw.mock.waitForRequest(t);
    expect(upstream.body).toEqual({ ...body, stream_options: { include_usage: true } });
    // One key, not the client's and a second one after it (JSON parsers disagree on duplicates).
    expect(upstream.raw.toString("utf8").match(/"stream_options"/g)).toHaveLength(1);
  });

  it("streams to the openai SDK, and sends the usage frame with its cost when asked", async () => {
    const stream = await org.client.chat.completions.create({
      model: "openai/gpt-4.1",
      messages,
      stream: true,
      stream_options: { include_usage: true },
    });
    let text = "";
    let usage: (Record<string, unknown> & { completion_tokens?: number }) | undefined;
    for await (const chunk of stream) {
      text += chunk.choices[0]?.delta?.content ?? "";
      if (chunk.usage) usage = chunk.usage as never;
    }
    expect(text).toBe(" tok".repeat(20));
    expect(usage?.completion_tokens).toBe(20);
    expect(typeof usage?.cost).toBe("number");
    expect(usage?.cost as number).toBeGreaterThan(0);
  });

  it("does not forward a usage frame when the client did not ask", async () => {
    const stream = await org.client.chat.completions.create({
      model: "gpt-4.1-nano",
      messages,
      stream: true,
    });
    for await (const chunk of stream) expect(chunk.usage ?? null).toBeNull();
  });

  it("answers plain calls with usage.cost and the cost and balance headers", async () => {
    const { data, response } = await org.client.chat.completions
      .create({ model: "gpt-4.1-mini", messages })
      .withResponse();
    expect(data.choices[0]?.message.content).toBe(" tok".repeat(20));
    const cost = (data.usage as unknown as { cost: number }).cost;
    expect(cost).toBeGreaterThan(0);
    expect(response.headers.get("x-planto-cost")).toMatch(/^\d+(\.\d+)?$/);
    expect(Number(response.headers.get("x-planto-cost"))).toBe(cost);
    expect(response.headers.get("x-planto-balance")).toMatch(/^\d+(\.\d+)?$/);
  });

  it("passes fields it does not know to the provider untouched", async () => {
    const t = tag();
    await gw.post("/v1/chat/completions", org.key, {
      model: "gpt-4.1-mini",
      messages,
      temperature: 0.3,
      some_future_field: { nested: [1, 2] },
      mock: { tag: t },
    });
    const seen = await gw.mock.waitForRequest(t);
    expect(seen.body.some_future_field).toEqual({ nested: [1, 2] });
    expect(seen.body.temperature).toBe(0.3);
    expect(seen.headers.authorization).toBe("Bearer sk-openai-integrated");
  });

  it("routes Planto model ids to their providers with the provider's model id", async () => {
    const cases = [
      ["openai/gpt-4.1", "openai", "gpt-4.1"],
      ["gpt-4.1-mini", "openai", "gpt-4.1-mini"],
      ["anthropic/claude-sonnet-4", "openrouter", "anthropic/claude-sonnet-4"],
      ["google/gemini-2.5-pro", "openrouter", "google/gemini-2.5-pro"],
    ] as const;
    for (const [model, flavour, upstreamModel] of cases) {
      const t = tag();
      const res = await gw.post("/v1/chat/completions", org.key, { model, messages, mock: { tag: t } });
      expect(res.status).toBe(200);
      const seen = await gw.mock.waitForRequest(t);
      expect(seen.flavour).toBe(flavour);
      expect(seen.body.model).toBe(upstreamModel);
    }
  });

  it("aborts the upstream at once when the client goes away", async () => {
    const t = tag();
    const res = await gw.post("/v1/chat/completions", org.key, {
      model: "gpt-4.1-mini",
      messages,
      stream: true,
      mock: { tag: t, chunks: 1000, delayMs: 20 },
    });
    const reader = res.body!.getReader();
    await reader.read();
    await reader.cancel();
    await gw.mock.waitForClientAbort(t, 2_000);
  });

  it("serves the catalog in the contract's shape", async () => {
    const res = await fetch(`${gw.url}/v1/models`);
    const body = (await res.json()) as { object: string; data: Record<string, unknown>[] };
    expect(body.object).toBe("list");
    const m = body.data.find((d) => d.id === "openai/gpt-4.1");
    expect(m).toEqual({
      id: "openai/gpt-4.1",
      object: "model",
      owned_by: "openai",
      provider: "openai",
      context_window: 1_047_576,
      pricing: { input: "2", cached_input: "0.5", output: "8" },
    });
    for (const d of body.data)
      expect(Object.keys(d).sort()).toEqual([
        "context_window",
        "id",
        "object",
        "owned_by",
        "pricing",
        "provider",
      ]);
  });

  it("relays Relace instant apply, plain and streamed", async () => {
    const plain = await gw.post("/v1/code/apply", org.key, { initialCode: "a\n", editSnippet: "b\n" });
    expect(plain.status).toBe(200);
    const body = (await plain.json()) as { mergedCode: string; usage: { cost: number } };
    expect(body.mergedCode).toBe("a\n\nb\n");
    expect(body.usage.cost).toBeGreaterThan(0);
    const streamed = await (
      await gw.post("/v1/code/apply", org.key, {
        initialCode: "x",
        editSnippet: "y",
        stream: true,
        mock: { chunks: 2 },
      })
    ).text();
    expect(streamed).toContain('"mergedCode"');
    expect(streamed).toMatch(/"usage":\{[^}]*"cost":/);
    expect(streamed.trimEnd().endsWith("data: [DONE]")).toBe(true);
  });
});

describe("OpenRouter's older stream shape (usage on the finish chunk)", () => {
  let gw: TestGateway;
  beforeAll(async () => {
    gw = await startGateway({ env: { MARKUP_BPS: "1000" } });
  });
  afterAll(() => gw?.close());

  it("never shows the client OpenRouter's own cost: usage is removed unless asked for, and carries the gateway's cost when asked", async () => {
    const org = await gw.org({ credits: "1" });
    const body = {
      model: "anthropic/claude-sonnet-4",
      messages,
      stream: true,
      mock: { usageOnChoice: true, usage: { cost: 0.5 } },
    };
    const unasked = await (await gw.post("/v1/chat/completions", org.key, body)).text();
    expect(unasked).not.toContain('"usage":{');
    expect(unasked).toContain('"finish_reason":"stop"');
    const asked = await (
      await gw.post("/v1/chat/completions", org.key, { ...body, stream_options: { include_usage: true } })
    ).text();
    const costs = [...asked.matchAll(/"cost":([0-9.e-]+)/g)].map((m) => Number(m[1]));
    expect(costs).toEqual([0.55]); // OpenRouter's $0.50 as the base, plus 10% markup: the gateway's charge, once
  });
});
