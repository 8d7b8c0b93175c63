import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { RATE_WINDOW_MS } from "../../src/metering/rate-limit.ts";
import { backends, startGateway, type TestGateway } from "../harness/gateway.ts";

const messages = [{ role: "user" as const, content: "Say hello." }];
const call = { model: "gpt-4.1-mini", messages, max_tokens: 50 };

describe.each(backends)("rate limits per key and per org over HTTP (%s)", (backend) => {
  let gw: TestGateway;
  // The gateway's clock, moved by the tests: a window boundary never falls inside a test by chance.
  // It starts 5 s into the real clock's next window, not at a fixed date: Redis expires a window's
  // counters by its own clock (PEXPIREAT two windows on), so a date two minutes past drops them at once.
  let now = Math.floor(Date.now() / RATE_WINDOW_MS) * RATE_WINDOW_MS + RATE_WINDOW_MS + 5_000;
  const clock = { now: () => now };

  beforeAll(async () => {
    gw = await startGateway({ backend, clock });
  });
  afterAll(() => gw?.close());

  const nextWindow = () => {
    now = now - (now % RATE_WINDOW_MS) + RATE_WINDOW_MS + 5_000;
  };

  it("sets, shows and clears limits through the admin API, and refuses bad input without changing anything", async () => {
    const org = await gw.org({ credits: "5" });
    const set = await gw.admin("PATCH", `/admin/orgs/${org.id}/rate-limits`, { requestsPerMinute: 10 });
    expect(set.status).toBe(200);
    expect(set.body).toEqual({ orgId: org.id, rateLimits: { requestsPerMinute: 10, tokensPerMinute: null } });
    expect((await gw.admin("GET", `/admin/orgs/${org.id}`)).body).toMatchObject({
      rateLimits: { requestsPerMinute: 10, tokensPerMinute: null },
    });
    for (const bad of [
      { requestsPerMinute: 0 },
      { requestsPerMinute: 1.5 },
      { tokensPerMinute: "9" },
      { rpm: 1 },
    ]) {
      const refused = await gw.admin("PATCH", `/admin/orgs/${org.id}/rate-limits`, bad);
      expect(refused.status).toBe(400);
      expect(refused.body).toMatchObject({ error: { code: "invalid_request_error" } });
    }
    const key = await gw.admin("PATCH", `/admin/api-keys/${org.keyId}/rate-limits`, {
      tokensPerMinute: 5000,
    });
    expect(key.body).toEqual({
      id: org.keyId,
      orgId: org.id,
      rateLimits: { requestsPerMinute: null, tokensPerMinute: 5000 },
    });
    const cleared = await gw.admin("PATCH", `/admin/orgs/${org.id}/rate-limits`, { requestsPerMinute: null });
    expect(cleared.body).toMatchObject({ rateLimits: { requestsPerMinute: null } });
    expect((await gw.admin("PATCH", "/admin/api-keys/key_nope/rate-limits", {})).status).toBe(404);
    expect((await gw.admin("PATCH", "/admin/orgs/org_nope/rate-limits", {})).status).toBe(404);
  });

  it("refuses a key over its requests per minute with 429, retry-after and OpenAI's x-ratelimit headers, and charges nothing for it", async () => {
    nextWindow();
    const org = await gw.org({ credits: "5" });
    await gw.admin("PATCH", `/admin/api-keys/${org.keyId}/rate-limits`, { requestsPerMinute: 2 });
    const first = await gw.post("/v1/chat/completions", org.key, call);
    expect(first.status).toBe(200);
    expect(first.headers.get("x-ratelimit-limit-requests")).toBe("2");
    expect(first.headers.get("x-ratelimit-remaining-requests")).toBe("1");
    expect(first.headers.get("x-ratelimit-reset-requests")).toBe("55s");
    expect(first.headers.get("x-ratelimit-limit-tokens")).toBeNull();
    await first.text();
    expect((await gw.post("/v1/chat/completions", org.key, { ...call, stream: true })).status).toBe(200);
    const balance = await gw.services.meter.balance(org.id);
    now += 1_000;
    const refused = await gw.post("/v1/chat/completions", org.key, call);
    expect(refused.status).toBe(429);
    expect(refused.headers.get("content-type")).toBe("application/json");
    expect(refused.headers.get("retry-after")).toBe("54");
    expect(refused.headers.get("x-ratelimit-remaining-requests")).toBe("0");
    expect(refused.headers.get("x-ratelimit-reset-requests")).toBe("54s");
    expect(await refused.json()).toMatchObject({
      error: { code: "rate_limit_exceeded", type: "requests" },
      type: "rate_limit_exceeded",
      status: 429,
    });
    expect(await gw.services.meter.balance(org.id)).toBe(balance);
    // The openai SDK sees its own RateLimitError.
    const err = await org.client.chat.completions.create(call).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.RateLimitError);
    nextWindow();
    expect((await gw.post("/v1/chat/completions", org.key, call)).status).toBe(200);
  });

  it("counts tokens per minute by estimate at admission and by usage after the call", async () => {
    nextWindow();
    const org = await gw.org({ credits: "5" });
    // Estimate per call: the body's bytes × 0.4 + 50 (max_tokens); the mock answers ~30 tokens.
    await gw.admin("PATCH", `/admin/orgs/${org.id}/rate-limits`, { tokensPerMinute: 300 });
    const first = await gw.post("/v1/chat/completions", org.key, call);
    const usage = ((await first.json()) as { usage: { total_tokens: number } }).usage;
    const afterAdmission = Number(first.headers.get("x-ratelimit-remaining-tokens"));
    expect(afterAdmission).toBeLessThan(300 - 50);
    const estimate = 300 - afterAdmission;
    expect(usage.total_tokens).toBeLessThan(estimate);
    // The first call was settled before its answer was sent: the window now counts what it used.
    const second = await gw.post("/v1/chat/completions", org.key, { ...call, max_tokens: 1 });
    await second.text();
    expect(Number(second.headers.get("x-ratelimit-remaining-tokens"))).toBe(
      300 - usage.total_tokens - (estimate - 49),
    );
    // A call whose own estimate is above the limit can never pass, and says why.
    const huge = await gw.post("/v1/chat/completions", org.key, { ...call, max_tokens: 4000 });
    expect(huge.status).toBe(429);
    expect(((await huge.json()) as { error: { message: string } }).error.message).toMatch(/lower max_tokens/);
  });

  it("limits a BYO org's calls too, though they hold no credits", async () => {
    nextWindow();
    const org = await gw.org({ billingMode: "byo" });
    await gw.admin("PATCH", `/admin/orgs/${org.id}/rate-limits`, { requestsPerMinute: 1 });
    const byo = { "x-planto-provider-key": "sk-user-own" };
    const ok = await gw.post("/v1/chat/completions", org.key, call, byo);
    expect(ok.status).toBe(200);
    expect(ok.headers.get("x-ratelimit-remaining-requests")).toBe("0");
    const refused = await gw.post("/v1/chat/completions", org.key, call, byo);
    expect(refused.status).toBe(429);
    expect(refused.headers.get("retry-after")).toBe("55");
  });

  it("sends no x-ratelimit headers when no limit is set", async () => {
    const org = await gw.org({ credits: "5" });
    const res = await gw.post("/v1/chat/completions", org.key, call);
    expect(res.status).toBe(200);
    expect([...res.headers.keys()].filter((h) => h.startsWith("x-ratelimit"))).toEqual([]);
  });
});
