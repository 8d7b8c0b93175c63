import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startGateway, type TestGateway } from "../harness/gateway.ts";

describe("GET /metrics", () => {
  let gw: TestGateway;
  beforeAll(async () => {
    gw = await startGateway({ backend: "postgres+redis" });
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

    const res = await fetch(`${gw.url}/metrics`);
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
});
