import postgres from "postgres";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { backends, startGateway, type TestGateway } from "../harness/gateway.ts";

describe.each(backends)("the monthly budget (%s)", (backend) => {
  let gw: TestGateway;
  beforeAll(async () => {
    gw = await startGateway({ backend });
  });
  afterAll(() => gw?.close());

  it("is not overshot by 200 concurrent calls, and refusals say cloud_monthly_max_reached", async () => {
    const org = await gw.org({ credits: "10" });
    const patched = await gw.admin("PATCH", `/admin/orgs/${org.id}/billing`, {
      maxThresholdPerMonth: "0.003",
    });
    expect(patched.body).toMatchObject({ maxThresholdPerMonth: "0.003" });
    const body = { model: "gpt-4.1-mini", messages: [{ role: "user", content: "hi" }], max_tokens: 100 };
    const results = await Promise.all(
      Array.from({ length: 200 }, async () => {
        const res = await gw.post("/v1/chat/completions", org.key, body);
        const json = (await res.json()) as { error?: { code: string }; billingError?: unknown };
        return { status: res.status, cost: Number(res.headers.get("x-planto-cost") ?? 0), json };
      }),
    );
    const ok = results.filter((r) => r.status === 200);
    const refused = results.filter((r) => r.status !== 200);
    expect(ok.length).toBeGreaterThan(0);
    expect(refused.length).toBeGreaterThan(0);
    for (const r of refused) {
      expect(r.status).toBe(402);
      expect(r.json.error?.code).toBe("cloud_monthly_max_reached");
      expect(r.json.billingError).toEqual({ hasBillingPermission: true, isTrial: false });
    }
    const spent = ok.reduce((n, r) => n + Math.round(r.cost * 1e9), 0);
    // Each call cost less than its hold, so the budget holds exactly: no overshoot at all.
    expect(spent).toBeLessThanOrEqual(3_000_000);
    if (backend === "postgres+redis") {
      await gw.services.flusher.drain();
      const sql = postgres(gw.config.DATABASE_URL as string, { max: 1, onnotice: () => {} });
      const [row] =
        await sql`select coalesce(sum(amount), 0)::bigint as s from credit_transactions where org_id = ${org.id} and transaction_type = 'debit'`;
      await sql.end();
      expect(Number(row?.s)).toBe(spent);
    }
    // Lifting the budget lets calls through again.
    await gw.admin("PATCH", `/admin/orgs/${org.id}/billing`, { maxThresholdPerMonth: null });
    expect((await gw.post("/v1/chat/completions", org.key, body)).status).toBe(200);
  });
});
