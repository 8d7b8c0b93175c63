import { randomUUID } from "node:crypto";
import postgres from "postgres";
import { describe, expect, inject, it } from "vitest";
import { createLogger } from "../../src/core/log.ts";
import { openDatabase } from "../../src/db/client.ts";
import { encodeCallEvent } from "../../src/metering/events.ts";
import { Flusher } from "../../src/metering/flusher.ts";
import { reconcile } from "../../src/metering/reconcile.ts";
import { createRedisStore } from "../../src/metering/redis-store.ts";
import type { MeteringStore } from "../../src/metering/store.ts";
import { startMockUpstream } from "../../tools/mock-upstream/mock-upstream.ts";
import { sleep, waitUntil } from "../../tools/servers/ports.ts";
import { startPostgres } from "../../tools/servers/postgres.ts";
import { startRedis } from "../../tools/servers/redis.ts";
import { freshDatabaseUrl } from "../harness/databases.ts";
import { debitEvent } from "../harness/events.ts";
import { ADMIN_TOKEN, startGateway } from "../harness/gateway.ts";
import { createOrgOn, spawnGateway } from "../harness/process.ts";

const messages = [{ role: "user", content: "hi" }];
const silent = createLogger("silent");

async function count(sql: postgres.Sql, orgId: string): Promise<{ debits: number; spent: number }> {
  const [row] =
    await sql`select count(*)::int as n, coalesce(sum(amount), 0)::bigint as s from credit_transactions where org_id = ${orgId} and transaction_type = 'debit'`;
  return { debits: Number(row?.n), spent: Number(row?.s) };
}

describe("faults", () => {
  it("a gateway killed mid-stream: its hold expires and is reclaimed; what was charged stays charged", async () => {
    const mock = await startMockUpstream();
    const databaseUrl = await freshDatabaseUrl();
    const env = {
      DATABASE_URL: databaseUrl,
      REDIS_URL: inject("redisUrl"),
      REDIS_KEY_PREFIX: "killed",
      ADMIN_TOKEN,
      OPENAI_BASE_URL: mock.baseUrls.openai,
      HOLD_TTL_MS: "1500",
      RECLAIM_INTERVAL_MS: "200",
      FLUSH_CLAIM_IDLE_MS: "500",
    };
    const a = await spawnGateway(env);
    const b = await spawnGateway(env);
    const store = createRedisStore({ url: inject("redisUrl"), keyPrefix: "killed" });
    const sql = postgres(databaseUrl, { max: 1, onnotice: () => {} });
    try {
      const org = await createOrgOn(a.url, { isTrial: true });
      const { key } = org;
      const call = (stream: boolean, mockKnobs: Record<string, unknown> = {}) =>
        fetch(`${a.url}/v1/chat/completions`, {
          method: "POST",
          headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
          body: JSON.stringify({ model: "gpt-4.1", messages, stream, mock: mockKnobs }),
        });
      const done = await call(false);
      expect(done.status).toBe(200);
      const cost = Number(done.headers.get("x-planto-cost")) * 1e9;

      const open = await call(true, { chunks: 1000, delayMs: 50 });
      await open.body!.getReader().read();
      expect((await store.getBalance(org.id))?.held).toBeGreaterThan(0);
      a.child.kill("SIGKILL");
      await a.exited;

      await waitUntil(
        "b to reclaim the dead gateway's hold",
        async () => (await store.getBalance(org.id))?.held === 0,
        10_000,
      );
      await waitUntil(
        "the charged call to reach Postgres",
        async () => (await count(sql, org.id)).debits === 1,
        10_000,
      );
      expect(Math.round((await count(sql, org.id)).spent)).toBeCloseTo(cost, -1);
      expect((await store.getBalance(org.id))?.balance).toBe(
        10_000_000_000 - (await count(sql, org.id)).spent,
      );
    } finally {
      a.child.kill("SIGKILL");
      b.child.kill("SIGTERM");
      await b.exited;
      await store.close();
      await sql.end();
      await mock.close();
    }
  }, 40_000);

  it("a flusher killed between the Postgres commit and the ack: the next one replays and nothing counts twice", async () => {
    const redis = await startRedis();
    const databaseUrl = await freshDatabaseUrl();
    const database = await openDatabase({ databaseUrl, dataDir: "" });
    await database.migrate();
    const store = createRedisStore({ url: redis.url });
    const sql = postgres(databaseUrl, { max: 1, onnotice: () => {} });
    try {
      const orgId = `org_${randomUUID()}`;
      await store.loadBalance({ orgId, balance: 1_000_000 });
      const event = (id: string, amount: number) => encodeCallEvent(debitEvent(orgId, amount, { id }));
      for (let i = 0; i < 50; i++) {
        const id = `req_${i}_${randomUUID()}`;
        await store.settle({ orgId, requestId: id, cost: 100, event: event(id, 100) });
      }
      // The first flusher commits its batch and "dies" before the ack.
      const dying: MeteringStore = {
        ...store,
        ackLedger: async () => {
          throw new Error("killed before ack");
        },
      };
      const first = new Flusher(dying, database, silent, { consumer: "dies", claimIdleMs: 100 });
      await expect(first.drain()).rejects.toThrow("killed before ack");
      expect(await count(sql, orgId)).toEqual({ debits: 50, spent: 5000 });
      // Started at once: it claims every 50 ms, and takes the entries once they are 100 ms idle.
      const second = new Flusher(store, database, silent, {
        consumer: "next",
        claimIdleMs: 100,
        blockMs: 10,
      });
      second.start();
      await waitUntil("the claimed entries to be acked", async () => (await store.ledgerLag()).length === 0);
      await second.stop();
      expect(second.flushed).toBe(50);
      expect(await count(sql, orgId)).toEqual({ debits: 50, spent: 5000 });
    } finally {
      await store.close();
      await database.close();
      await sql.end();
      await redis.stop();
    }
  });

  it("Postgres down for 30 s under load: calls keep flowing, then the ledger catches up and nothing is lost", async () => {
    const pg = await startPostgres();
    const gw = await startGateway({
      env: { DATABASE_URL: pg.url, REDIS_URL: inject("redisUrl"), KEY_CACHE_TTL_MS: "1000" },
    });
    const sql = postgres(pg.url, { max: 1, onnotice: () => {} });
    try {
      const org = await gw.org({ credits: "10" });
      await org.client.chat.completions.create({
        model: "gpt-4.1-nano",
        messages: [{ role: "user", content: "warm" }],
      });
      await pg.stop();
      const statuses: number[] = [];
      const until = Date.now() + 30_000;
      await Promise.all(
        Array.from({ length: 4 }, async () => {
          while (Date.now() < until) {
            const res = await fetch(`${gw.url}/v1/chat/completions`, {
              method: "POST",
              headers: { authorization: `Bearer ${org.key}`, "content-type": "application/json" },
              body: JSON.stringify({ model: "gpt-4.1-nano", messages }),
            });
            statuses.push(res.status);
            await res.arrayBuffer();
            await sleep(20); // the load's pace, not a wait for an outcome
          }
        }),
      );
      // How many calls fit in 30 s depends on the machine; that every one was served does not.
      expect(statuses.length).toBeGreaterThan(0);
      expect(statuses.filter((s) => s !== 200)).toEqual([]);
      await pg.start();
      await waitUntil(
        "the ledger to catch up",
        async () => (await count(sql, org.id)).debits === statuses.length + 1,
        30_000,
      );
      const { differences } = await reconcile(gw.services.store, gw.services.database);
      expect(differences.filter((d) => d.orgId === org.id)).toEqual([]);
    } finally {
      await sql.end();
      await gw.close();
      await pg.destroy();
    }
  }, 90_000);

  it("Redis restarted empty: balances are rebuilt from Postgres before any call is admitted", async () => {
    const redis = await startRedis();
    const gw = await startGateway({ backend: "postgres+redis", env: { REDIS_URL: redis.url } });
    try {
      const rich = await gw.org({ credits: "1" });
      const poor = await gw.org({ credits: "0.00001" });
      const { response } = await rich.client.chat.completions
        .create({ model: "gpt-4.1", messages: [{ role: "user", content: "x" }] })
        .withResponse();
      const before = Number(response.headers.get("x-planto-balance"));
      await gw.services.flusher.drain();
      await redis.restart();
      expect(await gw.services.store.getBalance(rich.id)).toBeNull();

      const after = await rich.client.chat.completions
        .create({ model: "gpt-4.1", messages: [{ role: "user", content: "x" }] })
        .withResponse();
      const cost = Number(after.response.headers.get("x-planto-cost"));
      expect(Number(after.response.headers.get("x-planto-balance"))).toBeCloseTo(before - cost, 9);
      const refused = await fetch(`${gw.url}/v1/chat/completions`, {
        method: "POST",
        headers: { authorization: `Bearer ${poor.key}`, "content-type": "application/json" },
        body: JSON.stringify({ model: "gpt-4.1", messages }),
      });
      expect(refused.status).toBe(402);
      await waitUntil("the flusher to recover its consumer group", async () => {
        await gw.services.flusher.drain();
        return (await gw.services.store.ledgerLag()).length === 0;
      });
      const { differences } = await reconcile(gw.services.store, gw.services.database);
      expect(differences).toEqual([]);
    } finally {
      await gw.close();
      await redis.stop();
    }
  }, 30_000);

  it("Redis restarted empty: the billing month's spend is rebuilt too, so the monthly budget is not overshot", async () => {
    const redis = await startRedis();
    const gw = await startGateway({ backend: "postgres+redis", env: { REDIS_URL: redis.url } });
    try {
      const org = await gw.org({ credits: "10" });
      await gw.admin("PATCH", `/admin/orgs/${org.id}/billing`, { maxThresholdPerMonth: "0.01" });
      // Each call costs exactly $0.002 (1000 prompt tokens of gpt-4.1) and holds far less than that.
      const call = () =>
        gw.post("/v1/chat/completions", org.key, {
          model: "gpt-4.1",
          messages,
          max_tokens: 10,
          mock: { usage: { prompt_tokens: 1000, completion_tokens: 0 } },
        });
      for (let i = 0; i < 4; i++) expect((await call()).status).toBe(200);
      await gw.services.flusher.drain();
      await redis.restart();
      expect(await gw.services.store.getBalance(org.id)).toBeNull();

      // $0.008 of the $0.01 is spent: one more call fits, the next would pass the budget.
      expect((await call()).status).toBe(200);
      const refused = await call();
      expect(refused.status).toBe(402);
      expect(((await refused.json()) as { error: { code: string } }).error.code).toBe(
        "cloud_monthly_max_reached",
      );
      await waitUntil("the flusher to recover its consumer group", async () => {
        await gw.services.flusher.drain();
        return (await gw.services.store.ledgerLag()).length === 0;
      });
      const sql = postgres(gw.config.DATABASE_URL as string, { max: 1, onnotice: () => {} });
      expect(await count(sql, org.id).finally(() => sql.end())).toEqual({ debits: 5, spent: 10_000_000 });
    } finally {
      await gw.close();
      await redis.stop();
    }
  }, 30_000);
});

describe("the gateway on a 3-master Redis Cluster", () => {
  it("meters calls and flushes them like on one Redis", async () => {
    const { startRedisCluster } = await import("../../tools/servers/redis.ts");
    const cluster = await startRedisCluster();
    const gw = await startGateway({
      backend: "postgres+redis",
      env: { REDIS_URL: "", REDIS_CLUSTER_NODES: cluster.nodes },
    });
    try {
      expect(gw.services.store.kind).toBe("cluster");
      const orgs = await Promise.all(Array.from({ length: 4 }, () => gw.org({ credits: "1" })));
      await Promise.all(
        orgs.flatMap((o) =>
          Array.from({ length: 5 }, () =>
            o.client.chat.completions.create({
              model: "gpt-4.1-mini",
              messages: [{ role: "user", content: "x" }],
            }),
          ),
        ),
      );
      await waitUntil(
        "the ledger to be flushed",
        async () => (await gw.services.store.ledgerLag()).length === 0,
      );
      await waitUntil(
        "Postgres to match Redis",
        async () => (await reconcile(gw.services.store, gw.services.database)).differences.length === 0,
      );
      const { differences, checked } = await reconcile(gw.services.store, gw.services.database);
      expect(checked).toBe(4);
      expect(differences).toEqual([]);
      for (const o of orgs)
        expect((await gw.services.store.getBalance(o.id))?.balance).toBeLessThan(1_000_000_000);
    } finally {
      await gw.close();
      await cluster.stop();
    }
  }, 30_000);
});
