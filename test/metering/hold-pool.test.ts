import { randomUUID } from "node:crypto";
import type { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createLogger } from "../../src/core/log.ts";
import { HoldPool, type HoldPoolOptions } from "../../src/metering/hold-pool.ts";
import { createRedisStore } from "../../src/metering/redis-store.ts";
import type { MeteringStore } from "../../src/metering/store.ts";
import { waitUntil } from "../../tools/servers/ports.ts";
import { type RedisServer, startRedis } from "../../tools/servers/redis.ts";
import { steppingClock } from "../harness/clock.ts";

const log = createLogger("silent");
const OPTIONS: HoldPoolOptions = { size: 8, share: 10, ttlMs: 60_000, maxAgeMs: 5_000, idleMs: 60_000 };
const org = () => `org_${randomUUID()}`;
const event = (id: string, orgId: string) => JSON.stringify(["c", id, orgId]);

describe("hold pool (real Redis)", () => {
  let redis: RedisServer;
  let store: MeteringStore & { reserveMany: NonNullable<MeteringStore["reserveMany"]> };
  let client: ReturnType<typeof createRedisStore>["client"];

  beforeAll(async () => {
    redis = await startRedis();
    const redisStore = createRedisStore({ url: redis.url });
    client = redisStore.client;
    store = redisStore as typeof store;
  });
  afterAll(async () => {
    await store?.close();
    await redis?.stop();
  });

  const poolOf = (options: Partial<HoldPoolOptions> = {}) => {
    const clock = steppingClock();
    return { clock, pool: new HoldPool(store, clock, log, { ...OPTIONS, ...options }) };
  };
  /** The org's entries in the shards' expiry sets (a call's hold, or a batch of pooled ones). */
  const expiryEntries = async (orgId: string) => {
    const out: string[] = [];
    for (const key of await (client as Redis).keys("*hx")) {
      for (const m of await (client as Redis).zrange(key, "0", "-1"))
        if (m.startsWith(`${orgId}\n`)) out.push(m);
    }
    return out;
  };
  const funded = async (balance: number) => {
    const id = org();
    await store.loadBalance({ orgId: id, balance });
    return id;
  };

  it("makes holds ahead, under reserve's rule, and a call takes one at least as large as its own", async () => {
    const orgId = await funded(1_000_000);
    const { pool, clock } = poolOf();
    expect(pool.take(orgId, 1_000)).toBeUndefined();
    pool.refill(orgId, 1_000, undefined);
    await pool.idle();
    // 8 holds of the call's 1,000: 8,000 held, within a tenth of the balance.
    expect(await store.getBalance(orgId)).toEqual({ balance: 1_000_000, held: 8_000 });
    const id = pool.take(orgId, 1_000);
    expect(id).toMatch(/^hp:/);
    // The 8 share one expiry entry.
    expect(await expiryEntries(orgId)).toHaveLength(1);
    expect(pool.take(orgId, 2_000)).toBeUndefined(); // larger than any pooled hold

    // The call settles against its pooled hold: the hold goes, the cost is debited.
    const requestId = `req_${randomUUID()}`;
    const settled = await store.settle({
      orgId,
      requestId,
      cost: 700,
      event: event(requestId, orgId),
      holdId: id as string,
      lastOfBatch: pool.done(id as string),
    });
    expect(settled).toMatchObject({ ok: true, balance: 999_300, duplicate: false });
    expect(await store.getBalance(orgId)).toEqual({ balance: 999_300, held: 7_000 });
    // A repeat changes nothing, and nothing of the other holds.
    const again = await store.settle({
      orgId,
      requestId,
      cost: 700,
      event: event(requestId, orgId),
      holdId: id as string,
    });
    expect(again).toMatchObject({ ok: true, duplicate: true });
    expect(await store.getBalance(orgId)).toEqual({ balance: 999_300, held: 7_000 });

    await pool.close();
    expect(await store.getBalance(orgId)).toEqual({ balance: 999_300, held: 0 });
    // Holds of the batch were given back: its expiry entry stays for reclaim, which finds nothing
    // left to release (a give-back that failed would have left its hold there to be found).
    expect(await expiryEntries(orgId)).toHaveLength(1);
    expect(await store.reclaimExpired(clock.now() + OPTIONS.ttlMs + 1)).toBe(0);
    expect(await expiryEntries(orgId)).toEqual([]);
    expect(await store.getBalance(orgId)).toEqual({ balance: 999_300, held: 0 });
  });

  it("removes a batch's expiry entry with the settle of its last hold when every hold went to a call", async () => {
    const orgId = await funded(1_000_000);
    const { pool } = poolOf();
    pool.refill(orgId, 1_000, undefined);
    await pool.idle();
    const ids = Array.from({ length: 8 }, () => pool.take(orgId, 1_000) as string);
    expect(new Set(ids).size).toBe(8);
    for (const [i, id] of ids.entries()) {
      const requestId = `req_${randomUUID()}`;
      const lastOfBatch = pool.done(id);
      expect(lastOfBatch).toBe(i === ids.length - 1);
      await store.settle({
        orgId,
        requestId,
        cost: 100,
        event: event(requestId, orgId),
        holdId: id,
        lastOfBatch,
      });
      expect(await expiryEntries(orgId)).toHaveLength(lastOfBatch ? 0 : 1);
    }
    expect(await store.getBalance(orgId)).toEqual({ balance: 999_200, held: 0 });
    await pool.close();
  });

  it("takes no more than its share of the free balance, and none when that cannot cover one hold", async () => {
    const small = await funded(25_000);
    const { pool } = poolOf();
    pool.refill(small, 1_000, undefined);
    await pool.idle();
    // 25,000 / 10 = 2,500: two holds of 1,000.
    expect(await store.getBalance(small)).toEqual({ balance: 25_000, held: 2_000 });

    const last = await funded(9_999);
    pool.refill(last, 1_000, undefined);
    await pool.idle();
    expect(await store.getBalance(last)).toEqual({ balance: 9_999, held: 0 });
    expect(pool.take(last, 1_000)).toBeUndefined();
    await pool.close();
  });

  it("counts the monthly budget: pooled holds never take the month past it", async () => {
    const orgId = await funded(1_000_000);
    const { pool } = poolOf();
    const month = Date.UTC(2026, 11, 1);
    // Spent 0 this month, budget 2,500: two holds of 1,000 fit, a third would pass it.
    pool.refill(orgId, 1_000, { monthStart: month, max: 2_500 });
    await pool.idle();
    expect(await store.getBalance(orgId)).toEqual({ balance: 1_000_000, held: 2_000 });
    await pool.close();
  });

  it("gives back what a refused call needs, holds too old to use, and everything at close", async () => {
    const orgId = await funded(1_000_000);
    const { pool, clock } = poolOf();
    pool.refill(orgId, 1_000, undefined);
    await pool.idle();
    expect(await pool.release(orgId)).toBe(true);
    expect(await store.getBalance(orgId)).toEqual({ balance: 1_000_000, held: 0 });
    expect(await pool.release(orgId)).toBe(false);

    pool.refill(orgId, 1_000, undefined);
    await pool.idle();
    clock.advance(OPTIONS.maxAgeMs);
    expect(pool.take(orgId, 1_000)).toBeUndefined();
    await pool.idle();
    expect(await store.getBalance(orgId)).toEqual({ balance: 1_000_000, held: 0 });
    await pool.close();
  });

  it("gives an idle org's holds back", async () => {
    const orgId = await funded(1_000_000);
    const { pool } = poolOf({ idleMs: 20 });
    pool.refill(orgId, 1_000, undefined);
    await pool.idle();
    expect((await store.getBalance(orgId))?.held).toBe(8_000);
    // Driven by the pool's own timer (a real one: giving holds back is not money that moves).
    await waitUntil("the idle org's holds to go back", async () => {
      await pool.idle();
      return (await store.getBalance(orgId))?.held === 0;
    });
    expect(await store.getBalance(orgId)).toEqual({ balance: 1_000_000, held: 0 });
    await pool.close();
  });

  it("holds nothing for an org the store has lost, and its expired holds are reclaimed like a call's", async () => {
    const { pool, clock } = poolOf();
    const lost = org();
    pool.refill(lost, 1_000, undefined);
    await pool.idle();
    expect(pool.take(lost, 1_000)).toBeUndefined();
    expect(await store.getBalance(lost)).toBeNull();

    const orgId = await funded(1_000_000);
    pool.refill(orgId, 1_000, undefined);
    await pool.idle();
    // One of them is used and settled; then the gateway dies with its pool: the rest expire after
    // the TTL and are reclaimed, from their batch's one entry.
    const used = pool.take(orgId, 1_000) as string;
    const requestId = `req_${randomUUID()}`;
    await store.settle({ orgId, requestId, cost: 400, event: event(requestId, orgId), holdId: used });
    expect(await store.getBalance(orgId)).toEqual({ balance: 999_600, held: 7_000 });
    expect(await store.reclaimExpired(clock.now() + OPTIONS.ttlMs + 1)).toBeGreaterThanOrEqual(7);
    expect(await store.getBalance(orgId)).toEqual({ balance: 999_600, held: 0 });
    expect(await expiryEntries(orgId)).toEqual([]);
    await pool.close();
  });
});
