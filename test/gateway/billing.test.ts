import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { backends, startGateway, type TestGateway } from "../harness/gateway.ts";

describe.each(backends)("credits in, ledger out (%s)", (backend) => {
  let gw: TestGateway;
  beforeAll(async () => {
    gw = await startGateway({ backend });
  });
  afterAll(() => gw?.close());

  const billing = (key: string, path: string, body?: unknown) =>
    fetch(`${gw.url}/billing${path}`, {
      method: body === undefined ? "GET" : "POST",
      headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });

  it("an integrated trial org starts with its trial credit", async () => {
    const org = await gw.org({ isTrial: true });
    expect(await (await billing(org.key, "/balance")).json()).toEqual({
      balance: "10",
      orgId: org.id,
      orgName: "test org",
    });
    const log = (await (await billing(org.key, "/credits_transactions", {})).json()) as {
      transactions: Record<string, unknown>[];
    };
    expect(log.transactions).toHaveLength(1);
    expect(log.transactions[0]).toMatchObject({
      transactionType: "credit",
      creditType: "trial",
      amount: "10",
      startBalance: "0",
      endBalance: "10",
    });
  });

  it("admin credits are idempotent by Idempotency-Key; the same key with another amount is refused", async () => {
    const org = await gw.org();
    const grant = (amount: string, key = "grant-1") =>
      gw.admin(
        "POST",
        `/admin/orgs/${org.id}/credits`,
        { amount, creditType: "admin_grant" },
        { "idempotency-key": key },
      );
    const first = await grant("2.5");
    expect(first.status).toBe(201);
    const again = await grant("2.5");
    expect(again.status).toBe(200);
    expect(again.body).toEqual(first.body);
    const conflict = await grant("3");
    expect(conflict.status).toBe(409);
    expect(conflict.headers.get("content-type")).toBe("application/json");
    expect((await grant("1", "grant-2")).status).toBe(201);
    expect(await (await billing(org.key, "/balance")).json()).toMatchObject({
      balance: "3.5",
      orgId: org.id,
    });
    expect((await gw.admin("POST", `/admin/orgs/${org.id}/credits`, { amount: "1" })).status).toBe(400);
    expect(
      (
        await gw.admin(
          "POST",
          `/admin/orgs/${org.id}/credits`,
          { amount: "-1" },
          { "idempotency-key": "neg" },
        )
      ).status,
    ).toBe(400);
    expect((await gw.admin("GET", `/admin/orgs/${org.id}`)).body).toMatchObject({
      id: org.id,
      balance: "3.5",
    });
  });

  it("pages debits and credits, newest first, in the CLI's shapes", async () => {
    const org = await gw.org({ credits: "1" });
    for (let i = 0; i < 5; i++) {
      await org.client.chat.completions.create({
        model: "gpt-4.1-nano",
        messages: [{ role: "user", content: `n${i}` }],
      });
    }
    await gw.services.flusher.drain();
    const page = async (n: number, body: Record<string, unknown> = {}) =>
      (await (await billing(org.key, `/credits_transactions?size=2&page=${n}`, body)).json()) as {
        transactions: Record<string, unknown>[];
        numPages: number;
        numPagesMax: boolean;
        monthStart: string;
      };
    const p1 = await page(1);
    expect(p1.numPages).toBe(3);
    expect(p1.numPagesMax).toBe(false);
    expect(p1.transactions).toHaveLength(2);
    expect(new Date(p1.monthStart).toISOString()).toBe(p1.monthStart);
    const all = [...p1.transactions, ...(await page(2)).transactions, ...(await page(3)).transactions];
    expect(all.map((t) => t.transactionType)).toEqual([
      "debit",
      "debit",
      "debit",
      "debit",
      "debit",
      "credit",
    ]);
    for (const d of all.slice(0, 5)) {
      for (const field of [
        "debitPurpose",
        "debitInputTokens",
        "debitOutputTokens",
        "debitCachedTokens",
        "debitModelInputPricePerToken",
        "debitModelOutputPricePerToken",
        "debitBaseAmount",
        "debitSurcharge",
      ]) {
        expect(d[field], field).not.toBeNull();
        expect(d[field], field).not.toBeUndefined();
      }
      expect(Number(d.debitBaseAmount)).toBeGreaterThan(0);
      expect(d.amount).toMatch(/^\d+(\.\d+)?$/);
    }
    expect((await page(1, { transactionType: "credit" })).transactions).toHaveLength(1);
    expect((await page(1, { transactionType: "debit" })).numPages).toBe(3);
    // The admin API's finer credit type shows as one of the four the CLI renders.
    expect(all[5]).toMatchObject({ creditType: "grant" });
    const bad = await billing(org.key, "/credits_transactions?size=0", {});
    expect(bad.status).toBe(400);
    // The Go CLI sends every field, empty ones too, and may ask for more than the maximum page.
    const cli = { transactionType: "", planId: "", sessionId: "", dayStart: null, month: false };
    const clamped = await billing(org.key, "/credits_transactions?size=5000&page=1", cli);
    expect(clamped.status).toBe(200);
    expect(((await clamped.json()) as { transactions: unknown[] }).transactions).toHaveLength(6);
    expect((await billing(org.key, "/credits_summary", cli)).status).toBe(200);
  });
});

describe("the usage summary (credits_summary)", () => {
  let gw: TestGateway;
  beforeAll(async () => {
    gw = await startGateway({ backend: "postgres+redis" });
  });
  afterAll(() => gw?.close());

  it("splits spend by plan, model and purpose, for the whole log, a plan, a session and the billing month", async () => {
    const org = await gw.org({ credits: "5" });
    const call = (model: string, headers: Record<string, string>, usage: Record<string, number>) =>
      gw.post(
        "/v1/chat/completions",
        org.key,
        { model, messages: [{ role: "user", content: "x" }], mock: { usage } },
        headers,
      );
    const costs: number[] = [];
    for (const [model, headers, usage] of [
      [
        "gpt-4.1",
        {
          "x-planto-plan-id": "p1",
          "x-planto-plan-name": "First",
          "x-planto-purpose": "planning",
          "x-planto-session-id": "s1",
        },
        { prompt_tokens: 1000, completion_tokens: 100 },
      ],
      [
        "gpt-4.1-mini",
        {
          "x-planto-plan-id": "p1",
          "x-planto-plan-name": "First",
          "x-planto-purpose": "coding",
          "x-planto-session-id": "s2",
        },
        { prompt_tokens: 2000, cached_tokens: 1000, completion_tokens: 10 },
      ],
      [
        "gpt-4.1",
        {
          "x-planto-plan-id": "p2",
          "x-planto-plan-name": "Second",
          "x-planto-purpose": "planning",
          "x-planto-session-id": "s2",
        },
        { prompt_tokens: 10, completion_tokens: 10 },
      ],
    ] as const) {
      const res = await call(model, headers, usage);
      costs.push(Math.round(Number(res.headers.get("x-planto-cost")) * 1e9));
    }
    await gw.services.flusher.drain();
    const [c1, c2, c3] = costs as [number, number, number];
    const usd = (n: number) => (n / 1e9).toFixed(9).replace(/0+$/, "").replace(/\.$/, "");
    const summary = async (body: Record<string, unknown>) =>
      (await (await gw.post("/billing/credits_summary", org.key, body)).json()) as Record<string, unknown>;

    const all = await summary({});
    expect(all).toMatchObject({
      totalSpend: usd(c1 + c2 + c3),
      byPlanId: { p1: usd(c1 + c2), p2: usd(c3) },
      planNamesById: { p1: "First", p2: "Second" },
      byModelName: { "openai/gpt-4.1": usd(c1 + c3), "openai/gpt-4.1-mini": usd(c2) },
      byPurpose: { planning: usd(c1 + c3), coding: usd(c2) },
      cacheSavings: "0.0003", // 1000 cached gpt-4.1-mini tokens at $0.40 − $0.10 per 1M
    });
    expect(all.balance).toBe(usd(5e9 - c1 - c2 - c3));
    expect(new Date(all.monthStart as string).getTime()).toBeLessThanOrEqual(Date.now());
    expect((await summary({ planId: "p1" })).totalSpend).toBe(usd(c1 + c2));
    expect((await summary({ sessionId: "s2" })).totalSpend).toBe(usd(c2 + c3));
    expect((await summary({ month: true })).totalSpend).toBe(usd(c1 + c2 + c3));
    expect((await summary({ dayStart: new Date(Date.now() + 3_600_000).toISOString() })).totalSpend).toBe(
      "0",
    );
    const bad = await gw.post("/billing/credits_summary", org.key, { dayStart: "yesterday" });
    expect(bad.status).toBe(400);
  });
});
