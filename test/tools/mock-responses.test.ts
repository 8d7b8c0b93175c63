import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type MockUpstream, startMockUpstream } from "../../tools/mock-upstream/mock-upstream.ts";

describe("the mock upstream's Responses API", () => {
  let mock: MockUpstream;
  beforeAll(async () => {
    mock = await startMockUpstream();
  });
  afterAll(() => mock?.close());

  it("streams what the openai SDK's own Responses stream helper accepts, event by event", async () => {
    const client = new OpenAI({ apiKey: "sk-test", baseURL: mock.baseUrls.openai, maxRetries: 0 });
    const stream = client.responses.stream({ model: "gpt-4.1", input: "hi", instructions: "be brief" });
    const types: string[] = [];
    stream.on("event", (e) => types.push(e.type));
    const final = await stream.finalResponse();
    expect(final.output_text).toBe(" tok".repeat(20));
    expect(final.usage).toMatchObject({ output_tokens: 20, input_tokens_details: { cached_tokens: 0 } });
    expect(types.at(0)).toBe("response.created");
    expect(types.at(-1)).toBe("response.completed");
  });

  it("answers plain calls with the response object; OpenRouter adds cost to the usage", async () => {
    const client = new OpenAI({ apiKey: "sk-test", baseURL: mock.baseUrls.openrouter, maxRetries: 0 });
    const response = await client.responses.create({ model: "anthropic/claude-sonnet-4", input: "hi" });
    expect(response.status).toBe("completed");
    expect((response.usage as unknown as { cost: number }).cost).toBeGreaterThan(0);
  });

  it("fails only the first N tagged calls, only on the named provider, with retry-after", async () => {
    const call = (flavour: "openai" | "openrouter") =>
      fetch(`${mock.baseUrls[flavour]}/responses`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({
          model: "m",
          input: "hi",
          mock: { tag: "ff", status: 429, failFirst: 1, failOn: "openai", retryAfter: 2 },
        }),
      });
    const other = await call("openrouter");
    expect(other.status).toBe(200);
    const first = await call("openai");
    expect(first.status).toBe(429);
    expect(first.headers.get("retry-after")).toBe("2");
    expect(((await first.json()) as { error: { code: string } }).error.code).toBe("rate_limit_exceeded");
    expect((await call("openai")).status).toBe(200);
  });
});
