import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startGateway, type TestGateway } from "../harness/gateway.ts";

describe("GET /metrics", () => {
  let gw: TestGateway;
  beforeAll(async () => {
    gw = await startGateway({ backend: "postgres+redis", env: { METRICS_TOKEN: "scrape-token" } });
  });
  afterAll(() => gw?.close());

  it("is scraped in Prometheus text: calls, timings, debits, credits, refusals, open calls, ledger backlog", async () => {
    const org = await gw.org({ credits: "1" });
    const messages = [{ role: "user", content: "hi" }];
    for (let i = 0; i < 3; i++)
      await gw.post("/v1/chat/completions", org.key, { model: "gpt-4.1-mini", messages });
    await (
      await gw.post("/v1/chat/completions", org.key, { model: "gpt-4.1-mini", messages, stream: true })
    ).text();
    await gw.post("/v1/chat/completions", org.key, {
      model: "gpt-4.1-mini",
      messages,
      mock: { status: 503 },
    });
    await gw.post("/v1/chat/completions", "pk_wrong", { model: "gpt-4.1-mini", messages });

    const res = await fetch(`${gw.url}/metrics`, { headers: { authorization: "Bearer scrape-token" } });
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toContain("text/plain");
    const text = await res.text();
    const value = (line: string) => {
      const found = text.split("\n").find((l) => l.startsWith(line));
      return found === undefined ? undefined : Number(found.slice(line.length).trim());
    };
    expect(
      value('planto_calls_total{route="chat",model="openai/gpt-4.1-mini",provider="openai",status="200"}'),
    ).toBe(4);
    expect(
      value('planto_calls_total{route="chat",model="openai/gpt-4.1-mini",provider="openai",status="502"}'),
    ).toBe(1);
    expect(value('planto_time_to_first_token_seconds_count{route="chat",model="openai/gpt-4.1-mini"}')).toBe(
      4,
    );
    expect(value('planto_call_duration_seconds_count{route="chat",model="openai/gpt-4.1-mini"}')).toBe(5);
    expect(value("planto_debits_total")).toBe(4);
    expect(value("planto_debited_usd_total")).toBeGreaterThan(0);
    expect(value('planto_credits_total{type="admin_grant"}')).toBe(1);
    expect(value('planto_refusals_total{code="invalid_api_key"}')).toBe(1);
    expect(value('planto_refusals_total{code="upstream_error"}')).toBe(1);
    expect(value("planto_open_calls")).toBe(0);
    expect(value("planto_ledger_backlog_events")).toBeGreaterThanOrEqual(0);
    expect(value("planto_ledger_oldest_unflushed_seconds")).toBeGreaterThanOrEqual(0);
  });

  it("refuses a scrape without the token, or with another one, in the JSON envelope", async () => {
    const attempts: Record<string, string>[] = [{}, { authorization: "Bearer not-the-token" }];
    for (const headers of attempts) {
      const res = await fetch(`${gw.url}/metrics`, { headers });
      expect(res.status).toBe(401);
      expect(((await res.json()) as { error: { code: string } }).error.code).toBe("invalid_api_key");
      expect(res.headers.get("x-request-id")).toMatch(/^req_/);
    }
  });

  it("is off without METRICS_TOKEN", async () => {
    const { createApp } = await import("../../src/gateway/app.ts");
    const app = createApp({ ...gw.services, config: { ...gw.config, METRICS_TOKEN: undefined } });
    const res = await app.request("/metrics");
    expect(res.status).toBe(404);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe("not_found");
  });
});

describe("structured logs", () => {
  it("writes one JSON line per call with ids, model, status, tokens, cost and timings, and no key or prompt", async () => {
    const lines: string[] = [];
    const { createLogger } = await import("../../src/core/log.ts");
    const gw = await startGateway({ backend: "postgres+redis" });
    try {
      gw.services.log = createLogger("info", (l) => lines.push(l));
      const org = await gw.org({ credits: "1" });
      const res = await gw.post("/v1/chat/completions", org.key, {
        model: "gpt-4.1",
        messages: [{ role: "user", content: "a secret prompt" }],
      });
      const id = res.headers.get("x-request-id");
      // The call's line is written when it settles, before its response is sent.
      const calls = lines
        .map((l) => JSON.parse(l) as Record<string, unknown>)
        .filter((l) => l.msg === "call");
      expect(calls).toHaveLength(1);
      expect(calls[0]).toMatchObject({
        level: "info",
        requestId: id,
        orgId: org.id,
        model: "openai/gpt-4.1",
        status: 200,
        completionTokens: 20,
      });
      expect(typeof calls[0]?.totalMs).toBe("number");
      expect(calls[0]?.cost).toBe(res.headers.get("x-planto-cost"));
      expect(lines.join("")).not.toContain(org.key);
      expect(lines.join("")).not.toContain("a secret prompt");
    } finally {
      await gw.close();
    }
  });
});
