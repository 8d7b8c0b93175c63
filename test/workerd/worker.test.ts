import { createExecutionContext, env, waitOnExecutionContext } from "cloudflare:test";
import postgres from "postgres";
import { beforeAll, describe, expect, it } from "vitest";
import worker from "../../src/worker.ts";
import { STREAMED_CALL, streamedUsage } from "../harness/usage-frame.ts";

/**
 * The Worker in workerd, driven through its own fetch: a Request in, a Response out, and the work it
 * hands to waitUntil (a stream's settle) awaited as the runtime awaits it. Money lives in the org's
 * Durable Object; its outbox reaches the real Postgres the global setup started.
 */
const ADMIN = "worker-admin";
let sql: postgres.Sql;
let org: { id: string; key: string };

async function call(
  path: string,
  init: { method?: string; body?: unknown; auth: string; headers?: Record<string, string> },
) {
  const ctx = createExecutionContext();
  const res = await worker.fetch(
    new Request(`http://worker${path}`, {
      method: init.method ?? "POST",
      headers: { authorization: `Bearer ${init.auth}`, "content-type": "application/json", ...init.headers },
      body: init.body === undefined ? undefined : JSON.stringify(init.body),
    }),
    env,
    ctx,
  );
  const text = await res.text();
  await waitOnExecutionContext(ctx);
  return { res, text };
}

const meter = (orgId: string) => env.ORG_METER.get(env.ORG_METER.idFromName(orgId));

async function newOrg(credits: string): Promise<{ id: string; key: string }> {
  const created = await call("/admin/orgs", {
    auth: ADMIN,
    body: { name: "w", billingMode: "integrated", isTrial: false },
  });
  expect(created.res.status).toBe(201);
  const id = (JSON.parse(created.text) as { id: string }).id;
  const credit = await call(`/admin/orgs/${id}/credits`, {
    auth: ADMIN,
    body: { amount: credits, creditType: "admin_grant" },
    headers: { "idempotency-key": `w-${id}` },
  });
  expect(credit.res.status).toBe(201);
  const key = await call(`/admin/orgs/${id}/api-keys`, { auth: ADMIN, body: {} });
  return { id, key: (JSON.parse(key.text) as { key: string }).key };
}

beforeAll(async () => {
  // Not ended: workerd closes the test's sockets with it (see src/db/scoped.ts for why not end()).
  sql = postgres(env.DATABASE_URL, { max: 1, onnotice: () => {} });
  org = await newOrg("1");
});

describe("the Worker in workerd", () => {
  it("debits a streamed call exactly the cost its usage frame reports", async () => {
    const before = (await meter(org.id).opGetBalance())?.balance ?? 0;
    expect(before).toBe(1e9);
    const { res, text } = await call("/v1/chat/completions", {
      auth: org.key,
      body: STREAMED_CALL,
    });
    expect(res.status).toBe(200);
    expect(text).toContain("data: [DONE]");
    const usage = streamedUsage(text);
    expect(usage?.completion_tokens).toBe(20);
    const cost = Math.round((usage?.cost ?? 0) * 1e9);
    expect(cost).toBeGreaterThan(0);
    expect(before - ((await meter(org.id).opGetBalance())?.balance ?? 0)).toBe(cost);
  });

  it("asks the provider for the usage frame a client did not ask for, and debits it", async () => {
    const usage = { prompt_tokens: 1000, completion_tokens: 20 };
    const own = await newOrg("1"); // the tests below count this org's debits
    const balance = async () => (await meter(own.id).opGetBalance())?.balance ?? 0;
    const asked = { ...STREAMED_CALL, mock: { ...STREAMED_CALL.mock, usage } };
    const { stream_options: _, ...unasked } = asked;
    let before = await balance();
    const withFrame = await call("/v1/chat/completions", { auth: own.key, body: asked });
    const cost = Math.round((streamedUsage(withFrame.text)?.cost ?? 0) * 1e9);
    expect(cost).toBeGreaterThan(0);
    expect(before - (await balance())).toBe(cost);
    before = await balance();
    const without = await call("/v1/chat/completions", { auth: own.key, body: unasked });
    expect(without.res.status).toBe(200);
    expect(streamedUsage(without.text)).toBeUndefined();
    // The same usage, so the same debit: the gateway's request carried include_usage.
    expect(before - (await balance())).toBe(cost);
  });

  it("debits a plain call its x-planto-cost, and the outbox reaches Postgres", async () => {
    const before = (await meter(org.id).opGetBalance())?.balance ?? 0;
    const { res } = await call("/v1/chat/completions", {
      auth: org.key,
      body: { model: "gpt-4.1", messages: [{ role: "user", content: "hi" }] },
    });
    expect(res.status).toBe(200);
    const cost = Math.round(Number(res.headers.get("x-planto-cost")) * 1e9);
    expect(cost).toBeGreaterThan(0);
    const after = (await meter(org.id).opGetBalance())?.balance ?? 0;
    expect(before - after).toBe(cost);

    await meter(org.id).opFlush();
    const [row] =
      await sql`select coalesce(sum(case when transaction_type = 'credit' then amount else -amount end), 0)::bigint as balance,
      count(*) filter (where transaction_type = 'debit')::int as debits
      from credit_transactions where org_id = ${org.id}`;
    expect(Number(row?.balance)).toBe(after);
    expect(row?.debits).toBe(2);
    expect((await meter(org.id).opLedgerLag()).length).toBe(0);
  });

  it("answers the billing balance from the same object", async () => {
    const { res, text } = await call("/billing/balance", { method: "GET", auth: org.key });
    expect(res.status).toBe(200);
    const balance = (await meter(org.id).opGetBalance())?.balance ?? 0;
    expect((JSON.parse(text) as { balance: string }).balance).toBe((balance / 1e9).toString());
  });

  it("runs its cron jobs with a database client of their own", async () => {
    const ctx = createExecutionContext();
    await worker.scheduled({}, env, ctx);
    await waitOnExecutionContext(ctx);
  });
});
