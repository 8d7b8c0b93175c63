import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createMeteringStore } from "../../src/metering/index.ts";
import { createMemoryStore } from "../../src/metering/memory-store.ts";
import { createRedisStore } from "../../src/metering/redis-store.ts";
import { type LedgerEntry, type MeteringStore, SHARDS, shardOf } from "../../src/metering/store.ts";
import { waitUntil } from "../../tools/servers/ports.ts";
import {
  type RedisCluster,
  type RedisServer,
  startRedis,
  startRedisCluster,
} from "../../tools/servers/redis.ts";

const kinds = ["memory", "redis", "cluster"] as const;
const org = () => `org_${randomUUID()}`;
const rid = () => `req_${randomUUID()}`;
const NOW = 1_800_000_000_000;
const TTL = 60_000;
const GROUP = "contract";

interface TestEvent {
  id: string;
  orgId: string;
  cost: number;
}

describe.each(kinds)("metering store contract (%s)", (kind) => {
  let store: MeteringStore;
  // A Redis of this file's own, not the run's shared one: acking deletes stream entries, which
  // would take them from under the flushers of gateway tests running at the same time.
  let redis: RedisServer | undefined;
  let cluster: RedisCluster | undefined;

  beforeAll(async () => {
    if (kind === "memory") store = createMemoryStore();
    else if (kind === "redis") {
      redis = await startRedis();
      store = createRedisStore({ url: redis.url });
    } else {
      cluster = await startRedisCluster();
      store = createRedisStore({ clusterNodes: cluster.nodes });
    }
    expect(store.kind).toBe(kind);
  });
  afterAll(async () => {
    await store?.close();
    await redis?.stop();
    await cluster?.stop();
  });

  const loaded = async (balance: number) => {
    const id = org();
    expect(await store.loadBalance({ orgId: id, balance })).toBe(true);
    return id;
  };
  const reserve = (orgId: string, requestId: string, amount: number, nowMs = NOW) =>
    store.reserve({ orgId, requestId, amount, ttlMs: TTL, nowMs });
  const settle = (orgId: string, requestId: string, cost: number) =>
    store.settle({ orgId, requestId, cost, event: JSON.stringify({ id: requestId, orgId, cost }) });
  /** Reads and acks everything unread in the ledger; returns the entries (of one org, if given). */
  const drain = async (orgId?: string): Promise<LedgerEntry[]> => {
    const all: LedgerEntry[] = [];
    for (;;) {
      const batch = await store.readLedger({ group: GROUP, consumer: "reader", count: 1000, blockMs: 0 });
      if (batch.length === 0) break;
      await store.ackLedger(GROUP, batch);
      all.push(...batch);
    }
    return orgId ? all.filter((e) => (JSON.parse(e.event) as TestEvent).orgId === orgId) : all;
  };
  const ids = (entries: LedgerEntry[]) => entries.map((e) => (JSON.parse(e.event) as TestEvent).id);

  it("never admits against a balance it does not have (not_loaded); load then works and does not overwrite", async () => {
    const id = org();
    const r = rid();
    expect(await reserve(id, r, 1)).toEqual({ ok: false, reason: "not_loaded" });
    expect(await store.getBalance(id)).toBeNull();
    expect(await store.loadBalance({ orgId: id, balance: 100 })).toBe(true);
    expect(await store.loadBalance({ orgId: id, balance: 5 })).toBe(false);
    expect(await store.getBalance(id)).toEqual({ balance: 100, held: 0 });
    expect(await reserve(id, r, 1)).toEqual({ ok: true, balance: 100, held: 1 });
  });

  it("load also sets the billing month's spend, which the budget check counts; a second load changes neither", async () => {
    const id = org();
    const month = 1_799_000_000_000;
    const hold = (amount: number, monthStart = month, requestId = rid()) =>
      store.reserve({
        orgId: id,
        requestId,
        amount,
        ttlMs: TTL,
        nowMs: NOW,
        budget: { monthStart, max: 100 },
      });
    expect(await store.loadBalance({ orgId: id, balance: 1000, month: { start: month, spend: 70 } })).toBe(
      true,
    );
    expect(await store.loadBalance({ orgId: id, balance: 5, month: { start: month, spend: 0 } })).toBe(false);
    expect(await hold(31)).toMatchObject({ ok: false, reason: "monthly_max_reached" });
    const r = rid();
    expect(await hold(30, month, r)).toEqual({ ok: true, balance: 1000, held: 30 });
    await store.release({ orgId: id, requestId: r });
    // The loaded spend counts in its own month only; another month starts from nothing.
    expect(await hold(99)).toMatchObject({ ok: false, reason: "monthly_max_reached" });
    expect(await hold(99, month + 1)).toMatchObject({ ok: true, held: 99 });
  });

  it("admits iff balance − held covers the hold (equal is enough), and holds add up", async () => {
    const id = await loaded(100);
    expect(await reserve(id, rid(), 60)).toEqual({ ok: true, balance: 100, held: 60 });
    expect(await reserve(id, rid(), 41)).toEqual({
      ok: false,
      reason: "insufficient_credits",
      balance: 100,
      held: 60,
    });
    expect(await reserve(id, rid(), 40)).toEqual({ ok: true, balance: 100, held: 100 });
    expect(await reserve(id, rid(), 1)).toMatchObject({ ok: false, reason: "insufficient_credits" });
    expect(await reserve(id, rid(), 0)).toMatchObject({ ok: true, held: 100 });
    expect(await store.getBalance(id)).toEqual({ balance: 100, held: 100 });
  });

  it("a hold of 0 can be reserved, released, reclaimed and settled", async () => {
    const id = await loaded(10);
    const [a, b, c] = [rid(), rid(), rid()];
    for (const r of [a, b, c]) expect(await reserve(id, r, 0, NOW - 2 * TTL)).toMatchObject({ ok: true });
    await store.release({ orgId: id, requestId: a });
    expect(await store.reclaimExpired(NOW)).toBeGreaterThanOrEqual(1);
    expect(await settle(id, c, 3)).toEqual({ ok: true, balance: 7, duplicate: false });
    expect(await store.getBalance(id)).toEqual({ balance: 7, held: 0 });
    await drain();
  });

  it("reserve is idempotent by request id: a repeat holds nothing more", async () => {
    const id = await loaded(100);
    const r = rid();
    await reserve(id, r, 70);
    expect(await reserve(id, r, 70)).toEqual({ ok: true, balance: 100, held: 70 });
    expect(await store.getBalance(id)).toEqual({ balance: 100, held: 70 });
  });

  it("a repeat of a held reserve is admitted even when the balance or the budget no longer covers it", async () => {
    const id = await loaded(100);
    const month = NOW - 1000;
    const [r, s] = [rid(), rid()];
    await reserve(id, r, 70);
    // The other call takes the rest: a repeat of r must still say admitted, and hold nothing more.
    await reserve(id, s, 30);
    expect(await reserve(id, r, 70)).toEqual({ ok: true, balance: 100, held: 100 });
    const budget = { monthStart: month, max: 50 };
    const again = await store.reserve({
      orgId: id,
      requestId: r,
      amount: 70,
      ttlMs: TTL,
      nowMs: NOW,
      budget,
    });
    expect(again).toEqual({ ok: true, balance: 100, held: 100 });
    expect(await store.getBalance(id)).toEqual({ balance: 100, held: 100 });
    expect(await settle(id, r, 10)).toEqual({ ok: true, balance: 90, duplicate: false });
    expect(await store.getBalance(id)).toEqual({ balance: 90, held: 30 });
    await drain();
  });

  it.runIf(kind === "redis")(
    "a hold an older reserve wrote in Lua's %.14g form (1e+14) is released exactly by settle",
    async () => {
      const id = await loaded(3e14);
      const r = rid();
      await reserve(id, r, 1e14);
      const client = (store as MeteringStore & { client: import("ioredis").Redis }).client;
      const holds = `pg:{pg:${shardOf(id)}}:h:${id}`;
      expect(await client.hget(holds, r)).toBe("100000000000000");
      await client.hset(holds, r, "1e+14");
      expect(await settle(id, r, 5)).toEqual({ ok: true, balance: 3e14 - 5, duplicate: false });
      expect(await store.getBalance(id)).toEqual({ balance: 3e14 - 5, held: 0 });
      await drain();
    },
  );

  it("settle releases the hold, debits, appends exactly one ledger event, and is idempotent", async () => {
    await drain();
    const id = await loaded(1000);
    const r = rid();
    await reserve(id, r, 300);
    expect(await settle(id, r, 120)).toEqual({ ok: true, balance: 880, duplicate: false });
    expect(await settle(id, r, 120)).toEqual({ ok: true, balance: 880, duplicate: true });
    expect(await settle(id, r, 999)).toEqual({ ok: true, balance: 880, duplicate: true });
    expect(await store.getBalance(id)).toEqual({ balance: 880, held: 0 });
    const events = await drain(id);
    expect(ids(events)).toEqual([r]);
    expect(events[0]?.balance).toBe(880);
    // A settled request is not held again by a late repeat of its reserve.
    expect(await reserve(id, r, 300)).toEqual({ ok: true, balance: 880, held: 0 });
  });

  it("settles sent at once (one script on Redis) end as they would one by one, in their order", async () => {
    await drain();
    const a = await loaded(1000);
    // b shares a's shard (on Redis, its settles share the shard's keys); c was never loaded.
    let b = org();
    while (shardOf(b) !== shardOf(a)) b = org();
    await store.loadBalance({ orgId: b, balance: 40 });
    const c = org();
    const [r1, r2, r3, r4] = [rid(), rid(), rid(), rid()];
    await reserve(a, r1, 100);
    await reserve(a, r2, 100);
    await reserve(b, r3, 10);
    const results = await Promise.all([
      settle(a, r1, 30),
      settle(b, r3, 5),
      settle(a, r2, 50),
      settle(a, r1, 30), // a repeat of r1, in the same moment: a duplicate
      settle(a, r4, 7), // its hold is gone (reclaimed): still debited, once
      settle(c, rid(), 1),
      settle(a, r2, 50),
    ]);
    expect(results).toEqual([
      { ok: true, balance: 970, duplicate: false },
      { ok: true, balance: 35, duplicate: false },
      { ok: true, balance: 920, duplicate: false },
      { ok: true, balance: 920, duplicate: true },
      { ok: true, balance: 913, duplicate: false },
      { ok: false, reason: "not_loaded" },
      { ok: true, balance: 913, duplicate: true },
    ]);
    expect(await store.getBalance(a)).toEqual({ balance: 913, held: 0 });
    expect(await store.getBalance(b)).toEqual({ balance: 35, held: 0 });
    expect(await store.getBalance(c)).toBeNull();
    const all = await drain();
    const of = (orgId: string) => all.filter((e) => (JSON.parse(e.event) as TestEvent).orgId === orgId);
    expect(ids(of(a))).toEqual([r1, r2, r4]);
    expect(of(a).map((e) => e.balance)).toEqual([970, 920, 913]);
    expect(ids(of(b))).toEqual([r3]);
    expect(of(b)[0]?.balance).toBe(35);
    // Each is remembered as settled on its own, as a later repeat shows.
    expect(await settle(a, r4, 7)).toEqual({ ok: true, balance: 913, duplicate: true });
    expect(await settle(b, r3, 5)).toEqual({ ok: true, balance: 35, duplicate: true });
  });

  it.runIf(kind !== "memory")(
    "a hold someone else overwrote fails its own settle only, and changes nothing of the others'",
    async () => {
      await drain();
      const a = await loaded(1000);
      const [r1, r2, r3] = [rid(), rid(), rid()];
      await reserve(a, r1, 100);
      await reserve(a, r2, 100);
      await reserve(a, r3, 100);
      const client = (
        store as unknown as { client: { hset(k: string, f: string, v: string): Promise<unknown> } }
      ).client;
      const holdsKey = `pg:{pg:${shardOf(a)}}:h:${a}`;
      await client.hset(holdsKey, r2, "not a number");
      const [s1, s2, s3] = await Promise.allSettled([
        settle(a, r1, 30),
        settle(a, r2, 40),
        settle(a, r3, 50),
      ]);
      expect(s1).toEqual({ status: "fulfilled", value: { ok: true, balance: 970, duplicate: false } });
      expect(s2).toMatchObject({
        status: "rejected",
        reason: { message: expect.stringContaining("SETTLE_BAD_HOLD") },
      });
      expect(s3).toEqual({ status: "fulfilled", value: { ok: true, balance: 920, duplicate: false } });
      // r2's hold still counts (its settle is retried by the journal, not lost); r1's and r3's are gone.
      expect(await store.getBalance(a)).toEqual({ balance: 920, held: 100 });
      expect(ids(await drain(a))).toEqual([r1, r3]);
      // Readable again, its retry settles it like any other.
      await client.hset(holdsKey, r2, "100");
      expect(await settle(a, r2, 40)).toEqual({ ok: true, balance: 880, duplicate: false });
      expect(await store.getBalance(a)).toEqual({ balance: 880, held: 0 });
      expect(ids(await drain(a))).toEqual([r2]);
    },
  );

  it("a settle of cost 0 debits nothing but still records the call (its usage event), once", async () => {
    const id = await loaded(50);
    const r = rid();
    await reserve(id, r, 10);
    expect(await settle(id, r, 0)).toEqual({ ok: true, balance: 50, duplicate: false });
    expect(await settle(id, r, 0)).toEqual({ ok: true, balance: 50, duplicate: true });
    expect(await store.getBalance(id)).toEqual({ balance: 50, held: 0 });
    expect(ids(await drain(id))).toEqual([r]);
  });

  it("settle always succeeds: above the hold it goes below zero by that call's excess only", async () => {
    const id = await loaded(100);
    const r = rid();
    expect(await reserve(id, r, 100)).toMatchObject({ ok: true });
    expect(await settle(id, r, 130)).toEqual({ ok: true, balance: -30, duplicate: false });
    expect(await reserve(id, rid(), 1)).toMatchObject({ ok: false, reason: "insufficient_credits" });
    expect(await store.getBalance(id)).toEqual({ balance: -30, held: 0 });
    await drain();
  });

  it("release voids a hold with no debit and no ledger event; idempotent", async () => {
    await drain();
    const id = await loaded(100);
    const r = rid();
    await reserve(id, r, 80);
    await store.release({ orgId: id, requestId: r });
    await store.release({ orgId: id, requestId: r });
    await store.release({ orgId: id, requestId: rid() });
    expect(await store.getBalance(id)).toEqual({ balance: 100, held: 0 });
    expect(await drain(id)).toEqual([]);
  });

  it("credit adds once per credit id, reports the first amount on a repeat, and appends one event", async () => {
    const id = await loaded(0);
    const c = `cr_${randomUUID()}`;
    const event = JSON.stringify({ id: c, orgId: id, cost: 0 });
    expect(await store.credit({ orgId: id, creditId: c, amount: 500, event })).toEqual({
      ok: true,
      balance: 500,
      duplicate: false,
      amount: 500,
    });
    expect(await store.credit({ orgId: id, creditId: c, amount: 700, event })).toEqual({
      ok: true,
      balance: 500,
      duplicate: true,
      amount: 500,
    });
    const events = await drain(id);
    expect(ids(events)).toEqual([c]);
    expect(events[0]?.balance).toBe(500);
    expect(
      await store.credit({ orgId: org(), creditId: `cr_${randomUUID()}`, amount: 1, event: "{}" }),
    ).toEqual({ ok: false, reason: "not_loaded" });
  });

  it("reclaims expired holds only, and a settle after its hold was reclaimed still debits once", async () => {
    const id = await loaded(100);
    const old = rid();
    const fresh = rid();
    await reserve(id, old, 30, NOW - 2 * TTL);
    await reserve(id, fresh, 20, NOW);
    expect(await store.reclaimExpired(NOW)).toBe(1);
    expect(await store.reclaimExpired(NOW)).toBe(0);
    expect(await store.getBalance(id)).toEqual({ balance: 100, held: 20 });
    expect(await settle(id, old, 10)).toEqual({ ok: true, balance: 90, duplicate: false });
    expect(await settle(id, old, 10)).toEqual({ ok: true, balance: 90, duplicate: true });
    expect(await store.getBalance(id)).toEqual({ balance: 90, held: 20 });
    // The fresh hold expires in its turn (with other tests' holds: reclaim is store-wide), then
    // settles normally.
    expect(await store.reclaimExpired(NOW + 2 * TTL)).toBeGreaterThanOrEqual(1);
    expect(await settle(id, fresh, 15)).toEqual({ ok: true, balance: 75, duplicate: false });
    expect(await store.getBalance(id)).toEqual({ balance: 75, held: 0 });
    expect(ids(await drain(id)).sort()).toEqual([old, fresh].sort());
  });

  it("reclaims more expired holds than one script call takes, across orgs of every shard", async () => {
    // 1200 holds in one shard (a script call takes 1000 of a shard), 600 spread over the others.
    const first = org();
    const crowded = [first];
    while (crowded.length < 3) {
      const id = org();
      if (shardOf(id) === shardOf(first)) crowded.push(id);
    }
    const spread = Array.from({ length: 30 }, org);
    const all = [...crowded, ...spread];
    for (const id of all) expect(await store.loadBalance({ orgId: id, balance: 1_000_000 })).toBe(true);
    await Promise.all([
      ...Array.from({ length: 1200 }, (_, i) => reserve(crowded[i % 3]!, rid(), 10, NOW - 2 * TTL)),
      ...Array.from({ length: 600 }, (_, i) => reserve(spread[i % 30]!, rid(), 10, NOW - 2 * TTL)),
    ]);
    expect(await store.reclaimExpired(NOW)).toBe(1800);
    for (const id of all) expect(await store.getBalance(id)).toEqual({ balance: 1_000_000, held: 0 });
  });

  const holdTrial = (
    orgId: string,
    planId: string,
    limits = { maxPlans: 10, maxPerPlan: 20 },
    requestId = rid(),
  ) =>
    store
      .loadTrial({ orgId, plans: {} })
      .then(() => store.holdTrialResponse({ orgId, planId, requestId, ...limits, ttlMs: TTL, nowMs: NOW }));
  const endTrial = (orgId: string, requestId: string, answered: boolean) =>
    store.endTrialResponse({
      orgId,
      requestId,
      answered,
      event: JSON.stringify({ id: requestId, orgId, cost: 0 }),
    });

  it("holds BYO trial slots: at most maxPlans distinct plans, even under 200 concurrent calls", async () => {
    const id = org();
    const results = await Promise.all(Array.from({ length: 200 }, (_, i) => holdTrial(id, `p${i % 15}`)));
    // Exactly 10 distinct plans get in, and each of them gets all of its 13 or 14 calls (< 20).
    const admittedPlans = new Set(results.flatMap((r, i) => (r.ok ? [`p${i % 15}`] : [])));
    expect(admittedPlans.size).toBe(10);
    results.forEach((r, i) => {
      if (admittedPlans.has(`p${i % 15}`)) expect(r).toEqual({ ok: true });
      else expect(r).toEqual({ ok: false, reason: "trial_plans_exceeded" });
    });
    // A plan already counted stays open; a new one does not.
    const known = [...admittedPlans][0]!;
    expect(await holdTrial(id, known)).toEqual({ ok: true });
    expect(await holdTrial(id, "new")).toEqual({ ok: false, reason: "trial_plans_exceeded" });
    // Another org has limits of its own.
    expect(await holdTrial(org(), "new")).toEqual({ ok: true });
  });

  it("holds BYO trial slots: at most maxPerPlan per plan, in flight and confirmed together, even under 200 concurrent calls", async () => {
    const id = org();
    const limits = { maxPlans: 1, maxPerPlan: 20 };
    const requests = Array.from({ length: 200 }, () => rid());
    const results = await Promise.all(requests.map((r) => holdTrial(id, "p", limits, r)));
    expect(results.filter((r) => r.ok)).toHaveLength(20);
    expect(results.filter((r) => !r.ok)).toEqual(
      Array.from({ length: 180 }, () => ({ ok: false, reason: "trial_messages_exceeded" })),
    );
    // A repeat of a held request is admitted without holding another slot.
    const held = requests.filter((_, i) => results[i]?.ok);
    expect(await holdTrial(id, "p", limits, held[0])).toEqual({ ok: true });
    // Confirming them all keeps the plan full.
    await Promise.all(held.map((r) => endTrial(id, r, true)));
    expect(await holdTrial(id, "p", limits)).toEqual({ ok: false, reason: "trial_messages_exceeded" });
    await drain(id);
  });

  it("a released trial slot gives its response back; a confirmed one does not; ends are idempotent and append the usage event", async () => {
    const id = org();
    const limits = { maxPlans: 10, maxPerPlan: 2 };
    const [a, b, c] = [rid(), rid(), rid()];
    expect(await holdTrial(id, "p", limits, a)).toEqual({ ok: true });
    expect(await holdTrial(id, "p", limits, b)).toEqual({ ok: true });
    expect(await holdTrial(id, "p", limits)).toEqual({ ok: false, reason: "trial_messages_exceeded" });
    expect(await endTrial(id, a, false)).toBe(true); // the upstream failed: released
    expect(await endTrial(id, a, true)).toBe(false); // a retried end counts nothing
    expect(await endTrial(id, b, true)).toBe(true); // answered: confirmed
    expect(await endTrial(id, b, true)).toBe(false);
    expect(await holdTrial(id, "p", limits, c)).toEqual({ ok: true });
    expect(await endTrial(id, c, true)).toBe(true);
    expect(await holdTrial(id, "p", limits)).toEqual({ ok: false, reason: "trial_messages_exceeded" });
    expect(ids(await drain(id))).toEqual([a, a, b, b, c]);
  });

  it("a plan whose only calls failed stops counting against maxPlans", async () => {
    const id = org();
    const limits = { maxPlans: 2, maxPerPlan: 20 };
    const [failed, failedToo, kept] = [rid(), rid(), rid()];
    expect(await holdTrial(id, "a", limits, failed)).toEqual({ ok: true });
    expect(await holdTrial(id, "a", limits, failedToo)).toEqual({ ok: true });
    expect(await holdTrial(id, "b", limits, kept)).toEqual({ ok: true });
    expect(await holdTrial(id, "c", limits)).toEqual({ ok: false, reason: "trial_plans_exceeded" });
    await endTrial(id, failed, false);
    // Plan a still has a call in flight: it still counts.
    expect(await holdTrial(id, "c", limits)).toEqual({ ok: false, reason: "trial_plans_exceeded" });
    await endTrial(id, failedToo, false);
    await endTrial(id, kept, true);
    const c = rid();
    expect(await holdTrial(id, "c", limits, c)).toEqual({ ok: true });
    await endTrial(id, c, true);
    expect(await holdTrial(id, "a", limits)).toEqual({ ok: false, reason: "trial_plans_exceeded" });
    await drain(id);
  });

  it("trial counters the store lost say not_loaded, and are loaded from Postgres's counts (raised, never lowered)", async () => {
    const id = org();
    const limits = { maxPlans: 2, maxPerPlan: 3 };
    const hold = (planId: string) =>
      store.holdTrialResponse({ orgId: id, planId, requestId: rid(), ...limits, ttlMs: TTL, nowMs: NOW });
    expect(await hold("p")).toEqual({ ok: false, reason: "not_loaded" });
    expect(await store.loadTrial({ orgId: id, plans: { p: 2, q: 1 } })).toBe(true);
    expect(await hold("p")).toEqual({ ok: true });
    expect(await hold("p")).toEqual({ ok: false, reason: "trial_messages_exceeded" });
    expect(await hold("r")).toEqual({ ok: false, reason: "trial_plans_exceeded" });
    // A second load (another instance) with older counts lowers nothing.
    expect(await store.loadTrial({ orgId: id, plans: { p: 0 } })).toBe(false);
    expect(await hold("p")).toEqual({ ok: false, reason: "trial_messages_exceeded" });
  });

  it("has an epoch that stays the same while the store keeps its data", async () => {
    const first = await store.epoch();
    expect(first).toMatch(/.{8,}/);
    expect(await store.epoch()).toBe(first);
  });

  it("a trial slot whose gateway died is reclaimed after its TTL, and its late end counts nothing", async () => {
    const id = org();
    const limits = { maxPlans: 1, maxPerPlan: 1 };
    const dead = rid();
    await store.loadTrial({ orgId: id, plans: {} });
    expect(
      await store.holdTrialResponse({
        orgId: id,
        planId: "p",
        requestId: dead,
        ...limits,
        ttlMs: TTL,
        nowMs: NOW - 2 * TTL,
      }),
    ).toEqual({ ok: true });
    expect(await holdTrial(id, "p", limits)).toEqual({ ok: false, reason: "trial_messages_exceeded" });
    expect(await holdTrial(id, "q", limits)).toEqual({ ok: false, reason: "trial_plans_exceeded" });
    expect(await store.reclaimExpired(NOW)).toBeGreaterThanOrEqual(1);
    expect(await endTrial(id, dead, true)).toBe(false);
    // The plan is free again, and so is the plan count.
    const next = rid();
    expect(await holdTrial(id, "q", limits, next)).toEqual({ ok: true });
    expect(await endTrial(id, next, true)).toBe(true);
    expect(ids(await drain(id))).toEqual([dead, next]);
  });

  it("500 concurrent calls for an org that can afford ~100: the books balance and nobody is debited twice", async () => {
    await drain();
    const start = 100_000;
    const id = await loaded(start);
    const hold = 1000;
    const calls = Array.from({ length: 500 }, (_, i) => ({ requestId: rid(), cost: 700 + (i % 7) * 150 }));
    const outcomes = await Promise.all(
      calls.map(async ({ requestId, cost }) => {
        const [admitted, again] = await Promise.all([
          reserve(id, requestId, hold),
          reserve(id, requestId, hold),
        ]);
        if (!admitted.ok) return 0;
        expect(again.ok).toBe(true); // the repeat sees the first outcome
        const [a, b] = await Promise.all([settle(id, requestId, cost), settle(id, requestId, cost)]);
        expect([a, b].filter((s) => s.ok && !s.duplicate)).toHaveLength(1);
        return cost;
      }),
    );
    const charged = outcomes.reduce((n, c) => n + c, 0);
    const admitted = outcomes.filter((c) => c > 0).length;
    const after = await store.getBalance(id);
    expect(after).toEqual({ balance: start - charged, held: 0 });
    expect(admitted).toBeGreaterThanOrEqual(start / hold);
    // These costs overrun their holds on average, so the balance does go below zero, but only by
    // the admitted calls' excess over their holds (they all overlapped: a one-call-at-a-time
    // sequence would stay within one call's excess).
    const excess = outcomes.reduce((n, c) => n + Math.max(0, c - hold), 0);
    expect(after!.balance).toBeLessThan(0);
    expect(after!.balance).toBeGreaterThanOrEqual(-excess);
    // One ledger event per admitted call, none twice, and they add up to the debits.
    const events = await drain(id);
    expect(events).toHaveLength(admitted);
    expect(new Set(ids(events)).size).toBe(admitted);
    expect(events.reduce((n, e) => n + (JSON.parse(e.event) as TestEvent).cost, 0)).toBe(charged);
  });

  it("ledger: read, ack after commit, claim what a dead consumer left; acked entries never come back", async () => {
    const group = `g${randomUUID().slice(0, 8)}`;
    expect(await drain()).toBeDefined(); // earlier tests' entries, so this test sees only its own
    expect(await store.ledgerLag()).toEqual({ length: 0, oldestMs: null });
    const before = Date.now();
    const id = await loaded(1000);
    const rids = [rid(), rid(), rid()];
    for (const r of rids) {
      await reserve(id, r, 10);
      await settle(id, r, 5);
    }
    const lag = await store.ledgerLag();
    expect(lag.length).toBe(3);
    expect(lag.oldestMs).toBeGreaterThanOrEqual(before - 1000); // the Redis clock, not ours
    expect(lag.oldestMs).toBeLessThanOrEqual(Date.now() + 1000);

    const read = await store.readLedger({ group, consumer: "dies", count: 100, blockMs: 0 });
    expect(ids(read).sort()).toEqual([...rids].sort());
    expect(read.map((e) => e.balance).sort()).toEqual([985, 990, 995]);
    expect(read.every((e) => e.shard === (kind === "memory" ? 0 : shardOf(id)))).toBe(true);
    expect(await store.readLedger({ group, consumer: "other", count: 100, blockMs: 0 })).toEqual([]);
    expect((await store.ledgerLag()).length).toBe(3); // read is not flushed
    // Not idle long enough yet: the consumer may still be writing them.
    expect(await store.claimStaleLedger({ group, consumer: "other", minIdleMs: 60_000, count: 100 })).toEqual(
      [],
    );
    // Idle time is the store's own (Redis's clock): look until the entries have been idle 40 ms.
    const taken = new Map<string, LedgerEntry>();
    await waitUntil("the read entries to go stale", async () => {
      const batch = await store.claimStaleLedger({ group, consumer: "other", minIdleMs: 40, count: 100 });
      for (const e of batch) taken.set(e.id, e);
      return taken.size >= read.length;
    });
    const claimed = [...taken.values()];
    expect(claimed.map((e) => e.id).sort()).toEqual(read.map((e) => e.id).sort());
    expect(claimed.map((e) => e.event).sort()).toEqual(read.map((e) => e.event).sort());
    await store.ackLedger(group, claimed);
    expect(await store.claimStaleLedger({ group, consumer: "third", minIdleMs: 0, count: 100 })).toEqual([]);
    expect(await store.readLedger({ group, consumer: "third", count: 100, blockMs: 0 })).toEqual([]);
    expect(await store.ledgerLag()).toEqual({ length: 0, oldestMs: null });
  });

  it("ledger: reads every shard, each entry once, and a busy shard still fills a batch", async () => {
    await drain();
    const group = `g${randomUUID().slice(0, 8)}`;
    const orgs = await Promise.all(Array.from({ length: 32 }, () => loaded(1000)));
    const spread = await Promise.all(
      orgs.map(async (id) => {
        const r = rid();
        await settle(id, r, 1);
        return r;
      }),
    );
    const seen: string[] = [];
    for (;;) {
      const batch = await store.readLedger({ group, consumer: "c", count: 5, blockMs: 0 });
      if (batch.length === 0) break;
      expect(batch.length).toBeLessThanOrEqual(5 + SHARDS);
      seen.push(...ids(batch));
      await store.ackLedger(group, batch);
    }
    expect(seen.sort()).toEqual(spread.sort());

    const busy = orgs[0]!;
    await Promise.all(Array.from({ length: 300 }, () => settle(busy, rid(), 1)));
    const batch = await store.readLedger({ group, consumer: "c", count: 200, blockMs: 0 });
    expect(batch.length).toBeGreaterThanOrEqual(200);
    expect(batch.length).toBeLessThanOrEqual(200 + SHARDS);
    await store.ackLedger(group, batch);
    const rest = await store.readLedger({ group, consumer: "c", count: 1000, blockMs: 0 });
    expect(batch.length + rest.length).toBe(300);
    await store.ackLedger(group, rest);
  });

  it("ledger: a blocking read waits for a new entry, and returns empty when none comes", async () => {
    await drain();
    const group = `g${randomUUID().slice(0, 8)}`;
    const t0 = Date.now();
    expect(await store.readLedger({ group, consumer: "c", count: 10, blockMs: 100 })).toEqual([]);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(kind === "memory" ? 90 : 40);
    const id = await loaded(10);
    const r = rid();
    // Not awaited, and no sleep before the settle: the memory store's waiter is in place once this
    // returns; the Redis stores poll, and find the entry on their first look or the one after.
    const waiting = store.readLedger({ group, consumer: "c", count: 10, blockMs: 1000 });
    await settle(id, r, 1);
    const got = await waiting;
    if (got.length === 0) {
      // The Redis store polls instead of blocking (a blocking read cannot span cluster slots).
      got.push(...(await store.readLedger({ group, consumer: "c", count: 10, blockMs: 1000 })));
    }
    expect(ids(got)).toEqual([r]);
    await store.ackLedger(group, got);
  });

  it("appendEvent records money-free usage; purgeOrg forgets the org", async () => {
    await drain();
    const id = await loaded(10);
    await store.appendEvent({ orgId: id, event: JSON.stringify({ id: "usage", orgId: id, cost: 0 }) });
    const events = await drain(id);
    expect(ids(events)).toEqual(["usage"]);
    expect(events[0]?.balance).toBeUndefined();
    await store.purgeOrg(id);
    expect(await store.getBalance(id)).toBeNull();
    expect(await reserve(id, rid(), 1)).toEqual({ ok: false, reason: "not_loaded" });
  });

  it("rejects amounts that are not safe integers of nanodollars, before changing anything", async () => {
    const id = await loaded(100);
    await expect(reserve(id, rid(), 1.5)).rejects.toThrow(RangeError);
    await expect(reserve(id, rid(), -1)).rejects.toThrow(RangeError);
    await expect(settle(id, rid(), 0.1)).rejects.toThrow(RangeError);
    await expect(settle(id, rid(), 2 ** 53)).rejects.toThrow(RangeError);
    await expect(store.credit({ orgId: id, creditId: rid(), amount: 1e-9, event: "{}" })).rejects.toThrow(
      RangeError,
    );
    await expect(store.loadBalance({ orgId: org(), balance: Number.NaN })).rejects.toThrow(RangeError);
    expect(await store.getBalance(id)).toEqual({ balance: 100, held: 0 });
  });

  it("handles balances up to 2^53 − 1 nanodollars exactly", async () => {
    const id = await loaded(Number.MAX_SAFE_INTEGER - 10);
    const r = rid();
    expect(await reserve(id, r, Number.MAX_SAFE_INTEGER - 11)).toMatchObject({ ok: true });
    expect(await settle(id, r, 7)).toEqual({
      ok: true,
      balance: Number.MAX_SAFE_INTEGER - 17,
      duplicate: false,
    });
    await drain();
  });

  it.runIf(kind === "redis")(
    "after Redis restarts empty: not_loaded, reload, and the scripts load again",
    async () => {
      const id = await loaded(100);
      const r = rid();
      await reserve(id, r, 40);
      await redis!.restart();
      await expect.poll(() => store.getBalance(id).catch(() => "down"), { timeout: 10_000 }).toBeNull();
      expect(await reserve(id, r, 40)).toEqual({ ok: false, reason: "not_loaded" });
      expect(await settle(id, r, 10)).toEqual({ ok: false, reason: "not_loaded" });
      expect(await store.loadBalance({ orgId: id, balance: 100 })).toBe(true);
      expect(await settle(id, r, 10)).toEqual({ ok: true, balance: 90, duplicate: false });
      expect(ids(await drain(id))).toEqual([r]);
    },
  );
});

describe("createMeteringStore", () => {
  it("picks the in-process store without Redis settings", async () => {
    const { store, kind } = createMeteringStore({});
    expect(kind).toBe("memory");
    expect(store.kind).toBe("memory");
    await store.close();
  });

  it("picks Redis for REDIS_URL and Cluster for REDIS_CLUSTER_NODES", async () => {
    const single = createMeteringStore({ REDIS_URL: "redis://127.0.0.1:1" });
    const cluster = createMeteringStore({ REDIS_CLUSTER_NODES: "127.0.0.1:1,127.0.0.1:2" });
    expect(single.kind).toBe("redis");
    expect(cluster.kind).toBe("cluster");
    await Promise.all([single.store.close(), cluster.store.close()]);
  });
});
