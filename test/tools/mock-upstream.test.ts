import { randomUUID } from "node:crypto";
import OpenAI, { APIError } from "openai";
import type { ChatCompletionChunk } from "openai/resources/chat/completions";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type MockKnobs,
  type MockUpstream,
  startMockUpstream,
} from "../../tools/mock-upstream/mock-upstream.ts";

const tag = () => `t${randomUUID().slice(0, 8)}`;
const messages = [{ role: "user" as const, content: "Say hello" }];
// 3 priming tokens + per message 3 + ⌈"Say hello".length / 4⌉.
const PROMPT_TOKENS = 3 + 3 + Math.ceil("Say hello".length / 4);

/** Request params plus the mock's knobs, which the SDK sends as an unknown body field. */
function params<T extends object>(body: T, mock: MockKnobs = {}): T {
  return { ...body, mock } as T;
}

async function collect(stream: AsyncIterable<ChatCompletionChunk>): Promise<ChatCompletionChunk[]> {
  const chunks: ChatCompletionChunk[] = [];
  for await (const chunk of stream) chunks.push(chunk);
  return chunks;
}

const text = (chunks: ChatCompletionChunk[]) =>
  chunks.map((c) => c.choices[0]?.delta?.content ?? "").join("");

describe("mock upstream", () => {
  let mock: MockUpstream;
  let openai: OpenAI;
  let openrouter: OpenAI;

  beforeAll(async () => {
    mock = await startMockUpstream();
    openai = new OpenAI({ apiKey: "sk-test-openai", baseURL: mock.baseUrls.openai, maxRetries: 0 });
    openrouter = new OpenAI({ apiKey: "sk-or-test", baseURL: mock.baseUrls.openrouter, maxRetries: 0 });
  });
  afterAll(() => mock?.close());

  describe("OpenAI chat completions", () => {
    it("streams one token per chunk, the first delta carrying the role, and no usage unless asked", async () => {
      const t = tag();
      const stream = await openai.chat.completions.create(
        params({ model: "gpt-4.1-mini", messages, stream: true as const }, { tag: t, chunks: 5 }),
      );
      const chunks = await collect(stream);
      expect(chunks[0]?.choices[0]?.delta).toMatchObject({ role: "assistant", content: "" });
      expect(text(chunks)).toBe(" tok".repeat(5));
      expect(chunks.at(-1)?.choices[0]?.finish_reason).toBe("stop");
      for (const c of chunks) {
        expect(c.object).toBe("chat.completion.chunk");
        expect(c.model).toBe("gpt-4.1-mini");
        expect(c.id).toBe(`chatcmpl-${t}`);
        expect(c.usage).toBeUndefined();
      }
      const seen = await mock.waitForRequest(t);
      expect(seen.flavour).toBe("openai");
      expect(seen.path).toBe("/openai/v1/chat/completions");
      expect(seen.headers.authorization).toBe("Bearer sk-test-openai");
      expect(seen.body.messages).toEqual(messages);
    });

    it("sends usage: null on every chunk and a final usage-only chunk when include_usage is set", async () => {
      const stream = await openai.chat.completions.create(
        params(
          { model: "o4-mini", messages, stream: true as const, stream_options: { include_usage: true } },
          { chunks: 7, usage: { cached_tokens: 4, reasoning_tokens: 10 } },
        ),
      );
      const chunks = await collect(stream);
      const last = chunks.at(-1);
      expect(last?.choices).toEqual([]);
      expect(last?.usage).toEqual({
        prompt_tokens: PROMPT_TOKENS,
        completion_tokens: 17,
        total_tokens: PROMPT_TOKENS + 17,
        prompt_tokens_details: { cached_tokens: 4, audio_tokens: 0 },
        completion_tokens_details: {
          reasoning_tokens: 10,
          audio_tokens: 0,
          accepted_prediction_tokens: 0,
          rejected_prediction_tokens: 0,
        },
      });
      for (const c of chunks.slice(0, -1)) expect(c.usage).toBeNull();
      expect(chunks.filter((c) => c.usage).length).toBe(1);
    });

    it("writes the documented bytes: data frames, obfuscation padding, [DONE]", async () => {
      const res = await fetch(`${mock.baseUrls.openai}/chat/completions`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({
          model: "gpt-4.1",
          messages,
          stream: true,
          stream_options: { include_usage: true },
          mock: { chunks: 2 },
        }),
      });
      expect(res.headers.get("content-type")).toContain("text/event-stream");
      const frames = (await res.text()).split("\n\n");
      expect(frames.at(-1)).toBe("");
      expect(frames.at(-2)).toBe("data: [DONE]");
      // role, 2 content, finish, usage, [DONE]
      expect(frames.length - 1).toBe(6);
      expect(frames[4]).toContain('"choices":[],"usage":{"prompt_tokens"');
      for (const f of frames.slice(0, 5)) {
        expect(f.startsWith("data: {")).toBe(true);
        expect(f).toContain('"obfuscation":');
      }
      const unpadded = await fetch(`${mock.baseUrls.openai}/chat/completions`, {
        method: "POST",
        body: JSON.stringify({
          model: "gpt-4.1",
          stream: true,
          stream_options: { include_obfuscation: false },
        }),
      }).then((r) => r.text());
      expect(unpadded).not.toContain("obfuscation");
      expect(unpadded).not.toContain('"usage"');
    });

    it("answers a plain call with a chat.completion object and its usage", async () => {
      const completion = await openai.chat.completions.create(
        params({ model: "gpt-4.1", messages }, { chunks: 3, usage: { prompt_tokens: 1200 } }),
      );
      expect(completion.object).toBe("chat.completion");
      expect(completion.model).toBe("gpt-4.1");
      expect(completion.choices[0]?.message.content).toBe(" tok tok tok");
      expect(completion.choices[0]?.finish_reason).toBe("stop");
      expect(completion.usage).toMatchObject({
        prompt_tokens: 1200,
        completion_tokens: 3,
        total_tokens: 1203,
      });
      expect(completion.usage?.prompt_tokens_details?.cached_tokens).toBe(0);
      expect(completion.usage?.completion_tokens_details?.reasoning_tokens).toBe(0);
      const bare = await openai.chat.completions.create(
        params({ model: "gpt-4.1", messages }, { noUsage: true }),
      );
      expect(bare.usage).toBeUndefined();
    });

    it.each([400, 401, 404, 429, 500, 503])("surfaces status %i as the SDK's APIError", async (status) => {
      const err = await openai.chat.completions
        .create(params({ model: "gpt-4.1", messages }, { status }))
        .catch((e: unknown) => e);
      expect(err).toBeInstanceOf(APIError);
      expect((err as APIError).status).toBe(status);
      const body = (err as APIError).error as Record<string, unknown>;
      expect(Object.keys(body).sort()).toEqual(["code", "message", "param", "type"]);
    });

    it("makes the SDK throw when the upstream cuts the stream (abortAfterChunks)", async () => {
      const t = tag();
      const stream = await openai.chat.completions.create(
        params({ model: "gpt-4.1", messages, stream: true as const }, { tag: t, abortAfterChunks: 2 }),
      );
      const seen: string[] = [];
      const read = (async () => {
        for await (const c of stream) seen.push(c.choices[0]?.delta?.content ?? "");
      })();
      await expect(read).rejects.toThrow();
      expect(seen.join("")).toBe(" tok tok");
      // The mock closed that socket itself, which is not a client abort.
      await expect(mock.waitForClientAbort(t, 200)).rejects.toThrow(/timed out/);
    });

    it("sends an error frame mid-stream that the SDK throws as APIError (errorAfterChunks)", async () => {
      const stream = await openai.chat.completions.create(
        params({ model: "gpt-4.1", messages, stream: true as const }, { errorAfterChunks: 3 }),
      );
      await expect(collect(stream)).rejects.toBeInstanceOf(APIError);
    });

    it("reports a client that aborts its request (AbortController)", async () => {
      const t = tag();
      const controller = new AbortController();
      const stream = await openai.chat.completions.create(
        params({ model: "gpt-4.1", messages, stream: true as const }, { tag: t, chunks: 1000, delayMs: 10 }),
        { signal: controller.signal },
      );
      for await (const _ of stream) {
        controller.abort();
        break;
      }
      await mock.waitForClientAbort(t, 2_000);
    });

    it("hangs until the client gives up, then reports the abort", async () => {
      const t = tag();
      const err = await openai.chat.completions
        .create(params({ model: "gpt-4.1", messages }, { tag: t, hang: true }), { timeout: 200 })
        .catch((e: unknown) => e);
      expect(err).toBeInstanceOf(APIError);
      await mock.waitForClientAbort(t, 2_000);
    });

    it("delays the first byte and paces the chunks", async () => {
      const started = Date.now();
      const stream = await openai.chat.completions.create(
        params(
          { model: "gpt-4.1", messages, stream: true as const },
          { chunks: 3, delayMs: 30, firstByteDelayMs: 100 },
        ),
      );
      expect(Date.now() - started).toBeGreaterThanOrEqual(90);
      await collect(stream);
      expect(Date.now() - started).toBeGreaterThanOrEqual(180);
    });
  });

  describe("OpenRouter chat completions", () => {
    it("streams with processing comments and always ends with a usage chunk carrying cost", async () => {
      const t = tag();
      const res = await fetch(`${mock.baseUrls.openrouter}/chat/completions`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({
          model: "anthropic/claude-sonnet-4",
          messages,
          stream: true,
          mock: { tag: t, chunks: 4 },
        }),
      });
      expect(res.headers.get("x-generation-id")).toBe(`gen-1700000000-${t}`);
      const raw = await res.text();
      expect(raw.startsWith(": OPENROUTER PROCESSING\n\n")).toBe(true);
      expect(raw).not.toContain('"usage":null');
      expect(raw).toContain('"provider":"Anthropic"');
      expect(raw).toContain('"native_finish_reason":"stop"');
      expect(raw.trimEnd().endsWith("data: [DONE]")).toBe(true);

      const stream = await openrouter.chat.completions.create(
        params({ model: "google/gemini-2.5-pro", messages, stream: true as const }, { chunks: 4 }),
      );
      const chunks = await collect(stream);
      expect(text(chunks)).toBe(" tok".repeat(4));
      const last = chunks.at(-1);
      expect(last?.choices).toEqual([]);
      const usage = last?.usage as unknown as Record<string, unknown>;
      expect(usage).toMatchObject({
        prompt_tokens: PROMPT_TOKENS,
        completion_tokens: 4,
        total_tokens: PROMPT_TOKENS + 4,
        cost: (PROMPT_TOKENS + 8) / 1e6,
        prompt_tokens_details: { cached_tokens: 0, cache_write_tokens: 0 },
        completion_tokens_details: { reasoning_tokens: 0 },
      });
    });

    it("puts usage on a finish-choice chunk with usageOnChoice, and honours usage overrides", async () => {
      const stream = await openrouter.chat.completions.create(
        params(
          { model: "anthropic/claude-sonnet-4", messages, stream: true as const },
          { usageOnChoice: true, usage: { prompt_tokens: 10, completion_tokens: 10, cost: 0.0042 } },
        ),
      );
      const last = (await collect(stream)).at(-1);
      expect(last?.choices[0]?.finish_reason).toBe("stop");
      expect(last?.usage).toMatchObject({ prompt_tokens: 10, completion_tokens: 10, cost: 0.0042 });
    });

    it("answers a plain call with usage and cost, and errors with OpenRouter's body", async () => {
      const completion = await openrouter.chat.completions.create(
        params({ model: "anthropic/claude-sonnet-4", messages }, { chunks: 2 }),
      );
      expect(completion.model).toBe("anthropic/claude-sonnet-4");
      expect(completion.choices[0]?.message.content).toBe(" tok tok");
      expect((completion.usage as unknown as { cost: number }).cost).toBe((PROMPT_TOKENS + 4) / 1e6);

      const err = await openrouter.chat.completions
        .create(params({ model: "anthropic/claude-sonnet-4", messages }, { status: 402 }))
        .catch((e: unknown) => e);
      expect(err).toBeInstanceOf(APIError);
      expect((err as APIError).status).toBe(402);
      expect((err as APIError).error).toMatchObject({ code: 402, message: "Insufficient credits" });
    });

    it("sends OpenRouter's mid-stream error chunk, which the SDK throws", async () => {
      const res = await fetch(`${mock.baseUrls.openrouter}/chat/completions`, {
        method: "POST",
        body: JSON.stringify({
          model: "x-ai/grok-4",
          stream: true,
          mock: { chunks: 5, errorAfterChunks: 1 },
        }),
      });
      const frames = (await res.text()).trim().split("\n\n");
      const last = JSON.parse((frames.at(-1) as string).slice("data: ".length)) as Record<string, unknown>;
      expect(last.error).toEqual({ code: "server_error", message: "Provider disconnected unexpectedly" });
      expect(last.choices).toEqual([
        {
          index: 0,
          delta: { content: "" },
          finish_reason: "error",
          native_finish_reason: "error",
          logprobs: null,
        },
      ]);
      const stream = await openrouter.chat.completions.create(
        params({ model: "x-ai/grok-4", messages, stream: true as const }, { errorAfterChunks: 1 }),
      );
      await expect(collect(stream)).rejects.toBeInstanceOf(APIError);
    });
  });

  describe("Relace instant apply", () => {
    const apply = (body: Record<string, unknown>) =>
      fetch(`${mock.baseUrls.relace}/code/apply`, {
        method: "POST",
        headers: { "content-type": "application/json", authorization: "Bearer rlc-test" },
        body: JSON.stringify(body),
      });

    it("merges plain, with usage", async () => {
      const t = tag();
      const res = await apply({ initialCode: "a\n", editSnippet: "b\n", mock: { tag: t, chunks: 3 } });
      expect(res.headers.get("content-type")).toBe("application/json");
      expect(await res.json()).toEqual({
        mergedCode: "a\n\nb\n",
        usage: { prompt_tokens: 1, completion_tokens: 3, total_tokens: 4 },
      });
      const seen = await mock.waitForRequest(t);
      expect(seen.flavour).toBe("relace");
      expect(seen.headers.authorization).toBe("Bearer rlc-test");
      // The snake_case names of Relace's newer docs work too.
      const snake = (await (await apply({ initial_code: "x", edit_snippet: "y" })).json()) as {
        mergedCode: string;
      };
      expect(snake.mergedCode).toBe("x\ny");
    });

    it("streams mergedCode pieces, then usage, then [DONE]", async () => {
      const res = await apply({ initialCode: "const a = 1;", editSnippet: "const b = 2;", stream: true });
      expect(res.headers.get("content-type")).toContain("text/event-stream");
      const frames = (await res.text()).trim().split("\n\n");
      expect(frames.at(-1)).toBe("data: [DONE]");
      const payloads = frames
        .slice(0, -1)
        .map((f) => JSON.parse(f.slice("data: ".length)) as Record<string, unknown>);
      const usage = payloads.at(-1)?.usage;
      expect(usage).toEqual({ prompt_tokens: 6, completion_tokens: 20, total_tokens: 26 });
      const merged = payloads
        .slice(0, -1)
        .map((p) => p.mergedCode)
        .join("");
      expect(merged).toBe("const a = 1;\nconst b = 2;");
      expect(payloads.length - 1).toBeGreaterThan(1);
    });
  });

  describe("the server", () => {
    it("answers unknown paths with OpenAI's 404 body, and lists models", async () => {
      const res = await fetch(`${mock.url}/openai/v1/nope`, { method: "POST", body: "{}" });
      expect(res.status).toBe(404);
      expect(await res.json()).toEqual({
        error: {
          message: "Invalid URL (POST /v1/nope)",
          type: "invalid_request_error",
          param: null,
          code: null,
        },
      });
      const models = await openai.models.list();
      expect(models.data.map((m) => m.id)).toContain("gpt-4.1");
    });

    it("lists OpenRouter's models in its shape: per-token price strings, context and max output", async () => {
      const res = await fetch(`${mock.baseUrls.openrouter}/models`);
      const body = (await res.json()) as { data: Array<Record<string, unknown>> };
      const sonnet = body.data.find((m) => m.id === "anthropic/claude-sonnet-4");
      expect(sonnet).toMatchObject({
        context_length: 200_000,
        pricing: { prompt: "0.000003", completion: "0.000015", input_cache_read: "0.0000003" },
        top_provider: { max_completion_tokens: 64_000 },
      });
      expect(body.data.map((m) => m.id)).toEqual(expect.arrayContaining(["qwen/qwen3-32b", "openai/o3"]));
    });

    it("calls a tool when the request offers tools, and answers the tool's result with text", async () => {
      const tools = [
        {
          type: "function" as const,
          function: {
            name: "getWeather",
            parameters: {
              type: "object",
              properties: { city: { type: "string" }, days: { type: "integer" } },
              required: ["city", "days"],
            },
          },
        },
      ];
      for (const client of [openai, openrouter]) {
        const plain = await client.chat.completions.create({ model: "gpt-4.1", messages, tools });
        expect(plain.choices[0]?.finish_reason).toBe("tool_calls");
        const call = plain.choices[0]?.message.tool_calls?.[0];
        expect(call?.type === "function" && call.function).toEqual({
          name: "getWeather",
          arguments: '{"city":"mock","days":1}',
        });
        const chunks = await collect(
          await client.chat.completions.create({ model: "gpt-4.1", messages, tools, stream: true }),
        );
        const deltas = chunks.flatMap((c) => c.choices[0]?.delta?.tool_calls ?? []);
        expect(deltas[0]).toMatchObject({ index: 0, type: "function", function: { name: "getWeather" } });
        expect(deltas.map((d) => d.function?.arguments ?? "").join("")).toBe('{"city":"mock","days":1}');
        expect(chunks.flatMap((c) => c.choices.map((x) => x.finish_reason)).filter(Boolean)).toEqual([
          "tool_calls",
        ]);
        const answered = await client.chat.completions.create({
          model: "gpt-4.1",
          tools,
          messages: [
            ...messages,
            { role: "assistant", content: null, tool_calls: plain.choices[0]?.message.tool_calls ?? [] },
            { role: "tool", tool_call_id: call?.id ?? "", content: "sunny" },
          ],
        });
        expect(answered.choices[0]?.finish_reason).toBe("stop");
      }
    });

    it("keeps the last 1000 requests", async () => {
      const first = tag();
      await apply(first);
      for (let batch = 0; batch < 10; batch++) {
        await Promise.all(Array.from({ length: 100 }, () => apply(undefined)));
      }
      expect(mock.requests.length).toBe(1000);
      expect(mock.requests.some((r) => r.tag === first)).toBe(false);

      function apply(t: string | undefined) {
        return fetch(`${mock.baseUrls.relace}/code/apply`, {
          method: "POST",
          body: JSON.stringify({ initialCode: "", editSnippet: "", mock: { tag: t } }),
        }).then((r) => r.arrayBuffer());
      }
    });
  });
});
