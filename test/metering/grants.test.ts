import postgres from "postgres";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { grantMonthlyCredits } from "../../src/metering/grants.ts";
import { startGateway, type TestGateway } from "../harness/gateway.ts";

describe("monthly grants", () => {
  let now = Date.parse("2026-11-20T12:00:00Z");
  const clock = { now: () => now };
  const gateways: TestGateway[] = [];
  let sql: postgres.Sql;

  beforeAll(async () => {
    const first = await startGateway({ backend: "postgres+redis", clock });
    const shared = {
      DATABASE_URL: first.config.DATABASE_URL as string,
      REDIS_URL: first.config.REDIS_URL as string,
      REDIS_KEY_PREFIX: first.config.REDIS_KEY_PREFIX,
    };
    gateways.push(
      first,
      await startGateway({ env: shared, clock }),
      await startGateway({ env: shared, clock }),
    );
    sql = postgres(shared.DATABASE_URL, { max: 1, onnotice: () => {} });
  });
  afterAll(async () => {
    await sql?.end();
    for (const gw of gateways) await gw.close();
  });

  const runEverywhere = () =>
    Promise.all(
      gateways.map((gw) =>
        grantMonthlyCredits({
          database: gw.services.database,
          meter: gw.services.meter,
          log: gw.services.log,
          now,
          amount: 20_000_000_000,
        }),
      ),
    );
  const credits = (orgId: string) =>
    sql`select credit_type, amount from credit_transactions where org_id = ${orgId} and transaction_type = 'credit' order by created_at`;

  it("grants MONTHLY_GRANT once per billing month with 3 instances, across a month boundary", async () => {
    const gw = gateways[0] as TestGateway;
    const paid = await gw.org();
    const canceled = await gw.org();
    await gw.admin("PATCH", `/admin/orgs/${paid.id}/billing`, {
      billingCycleStartedAt: "2026-10-15T00:00:00Z",
    });
    await gw.admin("PATCH", `/admin/orgs/${canceled.id}/billing`, { subscriptionStatus: "canceled" });

    await runEverywhere();
    await runEverywhere();
    expect(await credits(paid.id)).toHaveLength(1);
    now = Date.parse("2026-12-15T00:00:01Z"); // the next billing month starts
    await runEverywhere();
    await runEverywhere();
    const rows = await credits(paid.id);
    expect(rows.map((r) => [r.credit_type, Number(r.amount)])).toEqual([
      ["grant", 20_000_000_000],
      ["grant", 20_000_000_000],
    ]);
    expect(await gw.services.meter.balance(paid.id)).toBe(40_000_000_000);
    expect(await credits(canceled.id)).toHaveLength(0);
  });

  it("a paid org switching from BYO to integrated gets this month's grant as a switch credit, once", async () => {
    const gw = gateways[1] as TestGateway;
    const org = await gw.org({ billingMode: "byo" });
    await runEverywhere();
    expect(await credits(org.id)).toHaveLength(0);
    await gw.admin("PATCH", `/admin/orgs/${org.id}/billing`, { billingMode: "integrated" });
    await runEverywhere();
    const rows = await credits(org.id);
    expect(rows.map((r) => r.credit_type)).toEqual(["switch"]);
    expect(await gw.services.meter.balance(org.id)).toBe(20_000_000_000);
  });
});
