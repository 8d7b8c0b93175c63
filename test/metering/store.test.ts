import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { createMemoryStore } from "../../src/metering/memory-store.ts";
import { createRedisStore } from "../../src/metering/redis-store.ts";
import type { MeteringStore } from "../../src/metering/store.ts";
import { type RedisCluster, startRedisCluster } from "../harness/redis.ts";

const kinds = ["memory", "redis", "cluster"] as const;
const org = () => `org_${randomUUID()}`;
const rid = () => `req_${randomUUID()}`;
const NOW = 1_800_000_000_000;
const TTL = 60_000;

describe.each(kinds)("metering store contract (%s)", (kind) => {
  let store: MeteringStore;
  let cluster: RedisCluster | undefined;

  beforeAll(async () => {
    if (kind === "memory") store = createMemoryStore();
    else if (kind === "redis") store = createRedisStore({ url: inject("redisUrl") });
    else {
      cluster = await startRedisCluster();
      store = createRedisStore({ clusterNodes: cluster.nodes });
    }
  });
  afterAll(async () => {
    await store?.close();
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
    store.settle({ orgId, requestId, cost, event: JSON.stringify({ id: requestId, orgId }) });

  it("never admits against a balance it does not have (not_loaded), and load does not overwrite", async () => {
    const id = org();
    expect(await reserve(id, rid(), 1)).toEqual({ ok: false, reason: "not_loaded" });
    expect(await store.getBalance(id)).toBeNull();
    expect(await store.loadBalance({ orgId: id, balance: 100 })).toBe(true);
    expect(await store.loadBalance({ orgId: id, balance: 5 })).toBe(false);
    expect(await store.getBalance(id)).toEqual({ balance: 100, held: 0 });
  });

  it("admits iff balance − held covers the hold, and holds add up", async () => {
    const id = await loaded(100);
    expect(await reserve(id, rid(), 60)).toMatchObject({ ok: true, held: 60 });
    expect(await reserve(id, rid(), 50)).toMatchObject({
      ok: false,
      reason: "insufficient_credits",
      balance: 100,
      held: 60,
    });
    expect(await reserve(id, rid(), 40)).toMatchObject({ ok: true, held: 100 });
  });

  it("reserve is idempotent by request id", async () => {
    const id = await loaded(100);
    const r = rid();
    await reserve(id, r, 70);
    expect(await reserve(id, r, 70)).toMatchObject({ ok: true, held: 70 });
    expect(await store.getBalance(id)).toEqual({ balance: 100, held: 70 });
  });

  it("settle releases the hold, debits, appends one ledger event, and is idempotent", async () => {
    const id = await loaded(1000);
    const r = rid();
    await reserve(id, r, 300);
    expect(await settle(id, r, 120)).toEqual({ ok: true, balance: 880, duplicate: false });
    expect(await settle(id, r, 120)).toEqual({ ok: true, balance: 880, duplicate: true });
    expect(await store.getBalance(id)).toEqual({ balance: 880, held: 0 });
    expect(await reserve(id, r, 300)).toMatchObject({ ok: true, held: 0 }); // settled: nothing held again
  });

  it("settle always succeeds: above the hold it goes below zero by that call's excess only", async () => {
    const id = await loaded(100);
    const r = rid();
    expect(await reserve(id, r, 100)).toMatchObject({ ok: true });
    expect(await settle(id, r, 130)).toMatchObject({ ok: true, balance: -30 });
    expect(await reserve(id, rid(), 1)).toMatchObject({ ok: false, reason: "insufficient_credits" });
  });

  it("release voids a hold with no debit", async () => {
    const id = await loaded(100);
    const r = rid();
    await reserve(id, r, 80);
    await store.release({ orgId: id, requestId: r });
    await store.release({ orgId: id, requestId: r });
    expect(await store.getBalance(id)).toEqual({ balance: 100, held: 0 });
  });

  it("credit is idempotent by credit id and reports the first amount on a repeat", async () => {
    const id = await loaded(0);
    const c = `cr_${randomUUID()}`;
    expect(await store.credit({ orgId: id, creditId: c, amount: 500, event: "{}" })).toMatchObject({
      ok: true,
      balance: 500,
      duplicate: false,
    });
    expect(await store.credit({ orgId: id, creditId: c, amount: 700, event: "{}" })).toMatchObject({
      ok: true,
      balance: 500,
      duplicate: true,
      amount: 500,
    });
    expect(
      await store.credit({ orgId: org(), creditId: `cr_${randomUUID()}`, amount: 1, event: "{}" }),
    ).toEqual({
      ok: false,
      reason: "not_loaded",
    });
  });

  it("reclaims expired holds only, and a late settle still debits once", async () => {
    const id = await loaded(100);
    const old = rid();
    const fresh = rid();
    await reserve(id, old, 30, NOW - 2 * TTL);
    await reserve(id, fresh, 20, NOW);
    expect(await store.reclaimExpired(NOW)).toBeGreaterThanOrEqual(1);
    expect(await store.getBalance(id)).toEqual({ balance: 100, held: 20 });
    expect(await settle(id, old, 10)).toMatchObject({ ok: true, balance: 90, duplicate: false });
    expect(await store.getBalance(id)).toEqual({ balance: 90, held: 20 });
  });

  it("counts BYO trial responses within the plan limits, atomically", async () => {
    const id = org();
    const results = await Promise.all(
      Array.from({ length: 200 }, (_, i) =>
        store.countTrialResponse({ orgId: id, planId: `p${i % 15}`, maxPlans: 10, maxPerPlan: 20 }),
      ),
    );
    // Exactly 10 distinct plans get in, and each of them gets all of its 13 or 14 calls (< 20).
    const admittedPlans = new Set(results.flatMap((r, i) => (r.ok ? [`p${i % 15}`] : [])));
    expect(admittedPlans.size).toBe(10);
    results.forEach((r, i) => {
      if (admittedPlans.has(`p${i % 15}`)) expect(r.ok).toBe(true);
      else expect(r).toEqual({ ok: false, reason: "trial_plans_exceeded" });
    });
    const one = org();
    for (let i = 0; i < 3; i++) {
      expect(
        (await store.countTrialResponse({ orgId: one, planId: "p", maxPlans: 1, maxPerPlan: 3 })).ok,
      ).toBe(true);
    }
    expect(await store.countTrialResponse({ orgId: one, planId: "p", maxPlans: 1, maxPerPlan: 3 })).toEqual({
      ok: false,
      reason: "trial_messages_exceeded",
    });
  });

  it("500 concurrent calls for an org that can afford ~100: the books balance and nobody is debited twice", async () => {
    const id = await loaded(100_000);
    const hold = 1000;
    const calls = Array.from({ length: 500 }, () => rid());
    const outcomes = await Promise.all(
      calls.map(async (r, i) => {
        const admitted = await reserve(id, r, hold);
        if (!admitted.ok) return 0;
        const cost = 500 + (i % 7) * 150; // some overrun their hold
        const [a, b] = await Promise.all([settle(id, r, cost), settle(id, r, cost)]);
        expect([a, b].filter((s) => s.ok && !s.duplicate)).toHaveLength(1);
        return cost;
      }),
    );
    const admitted = outcomes.filter((c) => c > 0);
    const charged = admitted.reduce((n, c) => n + c, 0);
    const after = await store.getBalance(id);
    expect(after).toEqual({ balance: 100_000 - charged, held: 0 });
    expect(admitted.length).toBeGreaterThanOrEqual(100);
    // Each admitted call was covered by its hold when admitted; what went below zero is only excess.
    const excess = outcomes.reduce((n, c) => n + Math.max(0, c - hold), 0);
    expect(after!.balance).toBeGreaterThanOrEqual(-excess);
  });

  it("ledger: read, ack after commit, and claim what a dead consumer left", async () => {
    const group = `g${randomUUID().slice(0, 8)}`;
    // Drain what earlier tests appended, so this test sees only its own entries.
    for (;;) {
      const old = await store.readLedger({ group, consumer: "drain", count: 1000, blockMs: 0 });
      if (old.length === 0) break;
      await store.ackLedger(group, old);
    }
    const id = await loaded(1000);
    const ids = [rid(), rid(), rid()];
    for (const r of ids) {
      await reserve(id, r, 10);
      await settle(id, r, 5);
    }
    const read = await store.readLedger({ group, consumer: "dies", count: 100, blockMs: 0 });
    expect(read.map((e) => (JSON.parse(e.event) as { id: string }).id).sort()).toEqual([...ids].sort());
    expect(read.map((e) => e.balance).sort()).toEqual([985, 990, 995]);
    expect(await store.readLedger({ group, consumer: "other", count: 100, blockMs: 0 })).toEqual([]);
    await new Promise((r) => setTimeout(r, 30));
    const claimed = await store.claimStaleLedger({ group, consumer: "other", minIdleMs: 20, count: 100 });
    expect(claimed.map((e) => e.id).sort()).toEqual(read.map((e) => e.id).sort());
    await store.ackLedger(group, claimed);
    expect(await store.claimStaleLedger({ group, consumer: "third", minIdleMs: 0, count: 100 })).toEqual([]);
    expect((await store.ledgerLag()).length).toBeGreaterThanOrEqual(0);
  });
});
