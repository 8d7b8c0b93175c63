import postgres from "postgres";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { openDatabase } from "../../src/db/client.ts";
import { reconcile } from "../../src/metering/reconcile.ts";
import { createRedisStore } from "../../src/metering/redis-store.ts";
import { type Catalog, type CatalogModel, createCatalog } from "../../src/pricing/catalog.ts";
import { estimateReservation } from "../../src/pricing/cost.ts";
import { formatUsd } from "../../src/pricing/money.ts";
import { type MockUpstream, startMockUpstream } from "../../tools/mock-upstream/mock-upstream.ts";
import { waitUntil } from "../../tools/servers/ports.ts";
import { freshDatabaseUrl } from "../harness/databases.ts";
import { ADMIN_TOKEN } from "../harness/gateway.ts";
import {
  adminCall,
  createOrgOn,
  type GatewayProcess,
  spawnGateways,
  stopGateways,
} from "../harness/process.ts";

describe("500 concurrent calls across 3 gateway processes, for an org that can pay for about 100", () => {
  let mock: MockUpstream;
  let gateways: GatewayProcess[] = [];
  let databaseUrl: string;

  beforeAll(async () => {
    mock = await startMockUpstream();
    databaseUrl = await freshDatabaseUrl();
    const env = {
      DATABASE_URL: databaseUrl,
      REDIS_URL: inject("redisUrl"),
      REDIS_KEY_PREFIX: "concurrency",
      ADMIN_TOKEN,
      OPENAI_BASE_URL: mock.baseUrls.openai,
      MARKUP_BPS: "500",
    };
    gateways = await spawnGateways(env, 3);
  }, 60_000);
  afterAll(async () => {
    await stopGateways(gateways);
    await mock?.close();
  });

  it("admits no more than the balance covers, debits every answered call once, and the books balance", async () => {
    const [a] = gateways as [GatewayProcess];
    const org = await createOrgOn(a.url, { isTrial: false });
    const { key } = org;
    const body = JSON.stringify({
      model: "gpt-4.1-mini",
      messages: [{ role: "user", content: "count to twenty" }],
      max_tokens: 50,
    });
    const model = (createCatalog() as Catalog).resolve("gpt-4.1-mini") as CatalogModel;
    const hold = estimateReservation(model, {
      promptBytes: Buffer.byteLength(body),
      maxTokens: 50,
      defaultMaxTokens: 4096,
      markupBps: 500,
    });
    const credit = 100 * hold;
    const credited = await adminCall(
      a.url,
      "POST",
      `/admin/orgs/${org.id}/credits`,
      { amount: formatUsd(credit) },
      {
        "idempotency-key": "c1",
      },
    );
    expect(credited.status).toBe(201);

    const results = await Promise.all(
      Array.from({ length: 500 }, async (_, i) => {
        const gw = gateways[i % 3] as GatewayProcess;
        const res = await fetch(`${gw.url}/v1/chat/completions`, {
          method: "POST",
          headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
          body,
        });
        const json = (await res.json()) as { error?: { code: string } };
        return { status: res.status, id: res.headers.get("x-request-id"), code: json.error?.code };
      }),
    );
    const ok = results.filter((r) => r.status === 200);
    const refused = results.filter((r) => r.status !== 200);
    expect(ok.length).toBeGreaterThanOrEqual(100);
    expect(refused.length).toBeGreaterThan(0);
    for (const r of refused) expect(r).toMatchObject({ status: 402, code: "cloud_insufficient_credits" });

    const sql = postgres(databaseUrl, { max: 2, onnotice: () => {} });
    try {
      await waitUntil("the ledger to catch up", async () => {
        const [{ n }] =
          (await sql`select count(*)::int as n from credit_transactions where org_id = ${org.id} and transaction_type = 'debit'`) as [
            { n: number },
          ];
        return n >= ok.length;
      });
      const debits =
        await sql`select id, amount from credit_transactions where org_id = ${org.id} and transaction_type = 'debit'`;
      expect(debits.map((d) => d.id).sort()).toEqual(ok.map((r) => r.id).sort());
      const spent = debits.reduce((n, d) => n + Number(d.amount), 0);
      const store = createRedisStore({ url: inject("redisUrl"), keyPrefix: "concurrency" });
      const database = await openDatabase({ databaseUrl, dataDir: "" });
      try {
        // The gateways give back the holds they made ahead (hold pools) once the org is idle.
        await waitUntil("the unused pooled holds to be given back", async () => {
          return (await store.getBalance(org.id))?.held === 0;
        });
        const live = await store.getBalance(org.id);
        expect(live).toEqual({ balance: credit - spent, held: 0 });
        // Every call cost less than its hold, so the bound on going below zero is 0 here.
        expect(live!.balance).toBeGreaterThanOrEqual(0);
        const { differences } = await reconcile(store, database);
        expect(differences.filter((d) => d.orgId === org.id)).toEqual([]);
      } finally {
        await store.close();
        await database.close();
      }
    } finally {
      await sql.end();
    }
  }, 60_000);
});
