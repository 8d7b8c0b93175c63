import postgres from "postgres";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { purgeDeletedOrgs } from "../../src/metering/purge.ts";
import type { createRedisStore } from "../../src/metering/redis-store.ts";
import { startGateway, type TestGateway } from "../harness/gateway.ts";

const DAY = 24 * 3600_000;

describe("account deletion", () => {
  let gw: TestGateway;
  beforeAll(async () => {
    gw = await startGateway({ backend: "postgres+redis" });
  });
  afterAll(() => gw?.close());

  it("revokes the keys at once, then the purge leaves nothing of the org in any table or Redis key", async () => {
    const org = await gw.org({ credits: "1" });
    const trial = await gw.org({ billingMode: "byo", isTrial: true });
    for (const o of [org, trial]) {
      const res = await gw.post(
        "/v1/chat/completions",
        o.key,
        { model: "gpt-4.1", messages: [{ role: "user", content: "x" }] },
        {
          "x-planto-plan-id": "plan-a",
          "x-planto-provider-key": "sk-user",
        },
      );
      expect(res.status).toBe(200);
    }
    // A hold still open when the account goes (its call never settles).
    await gw.services.store.reserve({
      orgId: org.id,
      requestId: "req_open",
      amount: 10,
      ttlMs: 60_000,
      nowMs: Date.now(),
    });
    await gw.services.flusher.drain();

    for (const o of [org, trial]) {
      expect((await gw.admin("DELETE", `/admin/orgs/${o.id}`)).status).toBe(200);
      const refused = await gw.post("/v1/chat/completions", o.key, {
        model: "gpt-4.1",
        messages: [{ role: "user", content: "x" }],
      });
      expect(refused.status).toBe(401);
    }
    // Not yet due: nothing is purged before the delay.
    const purge = (now: number) =>
      purgeDeletedOrgs({
        database: gw.services.database,
        store: gw.services.store,
        log: gw.services.log,
        now,
        delayMs: gw.config.PURGE_DELAY_MS,
      });
    expect(await purge(Date.now())).toEqual([]);
    expect(gw.config.PURGE_DELAY_MS).toBeLessThanOrEqual(14 * DAY);
    expect((await purge(Date.now() + 14 * DAY)).sort()).toEqual([org.id, trial.id].sort());

    const sql = postgres(gw.config.DATABASE_URL as string, { max: 1, onnotice: () => {} });
    try {
      const columns =
        await sql`select table_name, column_name from information_schema.columns where table_schema = 'public' and data_type in ('text', 'character varying', 'json', 'jsonb')`;
      expect(columns.length).toBeGreaterThan(10);
      for (const { table_name, column_name } of columns) {
        for (const id of [org.id, trial.id]) {
          const [row] = await sql.unsafe(
            `select count(*)::int as n from "${table_name}" where "${column_name}"::text like $1`,
            [`%${id}%`],
          );
          expect(row?.n, `${table_name}.${column_name}`).toBe(0);
        }
      }
    } finally {
      await sql.end();
    }

    const redis = (gw.services.store as ReturnType<typeof createRedisStore>).client;
    const prefix = gw.config.REDIS_KEY_PREFIX;
    let cursor = "0";
    const seen: string[] = [];
    do {
      const [next, keys] = await redis.scan(cursor, "MATCH", `${prefix}:*`, "COUNT", 1000);
      cursor = next;
      for (const key of keys) {
        const type = await redis.type(key);
        const content =
          type === "hash"
            ? JSON.stringify(await redis.hgetall(key))
            : type === "zset"
              ? JSON.stringify(await redis.zrange(key, "0", "-1"))
              : type === "set"
                ? JSON.stringify(await redis.smembers(key))
                : type === "stream"
                  ? JSON.stringify(await redis.xrange(key, "-", "+"))
                  : type === "string"
                    ? String(await redis.get(key))
                    : "";
        seen.push(key);
        for (const id of [org.id, trial.id]) expect(`${key} ${content}`).not.toContain(id);
      }
    } while (cursor !== "0");
    expect(seen.length).toBeGreaterThan(0);
  });
});
