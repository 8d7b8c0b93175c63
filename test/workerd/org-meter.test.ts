import { env, runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import postgres from "postgres";
import { describe, expect, it } from "vitest";
import { createDurableObjectStore } from "../../src/metering/durable-object-store.ts";
import { encodeCallEvent } from "../../src/metering/events.ts";
import type { OrgMeter } from "../../src/metering/org-meter-object.ts";

/**
 * The metering store's semantics, run against the Durable Object in workerd (the Redis and memory
 * stores pass the same ones in test/metering/store.test.ts). Two stores over the one namespace stand
 * for two isolates (or colos) of the Worker: each reaches the org's object through its own stub.
 */
// Not ended: workerd closes the test's sockets with it (see src/db/scoped.ts for why not end()).
const sql = postgres(env.DATABASE_URL, { max: 1, onnotice: () => {} });
const isolateA = createDurableObjectStore(env.ORG_METER);
const isolateB = createDurableObjectStore(env.ORG_METER);
const NONE = { requestsPerMinute: null, tokensPerMinute: null };
const stubOf = (orgId: string) => env.ORG_METER.get(env.ORG_METER.idFromName(orgId));

function debitEvent(id: string, orgId: string, amount: number): string {
  return encodeCallEvent({
    id,
    orgId,
    keyId: "key",
    amount,
    base: amount,
    surcharge: 0,
    cacheDiscount: 0,
    listPrice: amount,
    inputTokens: 10,
    cachedTokens: 0,
    cacheWriteTokens: 0,
    outputTokens: 5,
    reasoningTokens: 0,
    inputPricePerToken: "0.000002",
    outputPricePerToken: "0.000008",
    provider: "openai",
    model: "gpt-4.1",
    route: "chat",
    byo: false,
    tags: {},
    startedAt: Date.now() - 1000,
    firstTokenAt: Date.now() - 500,
    endedAt: Date.now(),
    stoppedEarly: false,
    clientCancelled: false,
    upstreamError: false,
    noReportedUsage: false,
  });
}

describe("the org's Durable Object as the metering store", () => {
  it("admits exactly what the balance covers from 200 concurrent reserves over two isolates", async () => {
    const orgId = crypto.randomUUID();
    expect(
      await isolateA.reserve({ orgId, requestId: "r", amount: 1, ttlMs: 60_000, nowMs: Date.now() }),
    ).toEqual({
      ok: false,
      reason: "not_loaded",
    });
    expect(await isolateB.loadBalance({ orgId, balance: 1_000 })).toBe(true);
    expect(await isolateA.loadBalance({ orgId, balance: 5_000 })).toBe(false); // loaded once, by whoever is first
    const outcomes = await Promise.all(
      Array.from({ length: 200 }, (_, i) =>
        (i % 2 ? isolateA : isolateB).reserve({
          orgId,
          requestId: `r${i}`,
          amount: 7,
          ttlMs: 60_000,
          nowMs: Date.now(),
        }),
      ),
    );
    const admitted = outcomes.filter((o) => o.ok).length;
    expect(admitted).toBe(Math.floor(1_000 / 7));
    expect(outcomes.filter((o) => !o.ok && o.reason === "insufficient_credits")).toHaveLength(200 - admitted);
    expect(await isolateB.getBalance(orgId)).toEqual({ balance: 1_000, held: admitted * 7 });
  });

  it("settles a call once when two isolates settle it at the same time", async () => {
    const orgId = crypto.randomUUID();
    await isolateA.loadBalance({ orgId, balance: 1_000 });
    await isolateA.reserve({ orgId, requestId: "call", amount: 300, ttlMs: 60_000, nowMs: Date.now() });
    const event = debitEvent("call", orgId, 120);
    const [a, b] = await Promise.all([
      isolateA.settle({ orgId, requestId: "call", cost: 120, event }),
      isolateB.settle({ orgId, requestId: "call", cost: 120, event }),
    ]);
    expect([a, b].filter((s) => s.ok && !s.duplicate)).toHaveLength(1);
    expect([a, b].filter((s) => s.ok && s.duplicate)).toHaveLength(1);
    expect(await isolateB.getBalance(orgId)).toEqual({ balance: 880, held: 0 });
    expect((await stubOf(orgId).opLedgerLag()).length).toBe(1);
  });

  it("reclaims an expired hold on its alarm", async () => {
    const orgId = crypto.randomUUID();
    await isolateA.loadBalance({ orgId, balance: 1_000 });
    // The hold's clock is the caller's: this one expired a minute ago.
    const admitted = await isolateA.reserve({
      orgId,
      requestId: "dead-gateway",
      amount: 1_000,
      ttlMs: 1_000,
      nowMs: Date.now() - 61_000,
    });
    expect(admitted.ok).toBe(true);
    // The reserve set the alarm for the hold's expiry, which has passed: it may have run already;
    // if not, it runs now. Nothing else in the object releases a hold without its settle.
    for (let i = 0; i < 20 && (await isolateB.getBalance(orgId))?.held !== 0; i++)
      await runDurableObjectAlarm(stubOf(orgId));
    expect(await isolateB.getBalance(orgId)).toEqual({ balance: 1_000, held: 0 });
    expect(
      (await isolateB.reserve({ orgId, requestId: "next", amount: 1_000, ttlMs: 60_000, nowMs: Date.now() }))
        .ok,
    ).toBe(true);
  });

  it("writes the outbox to Postgres exactly once, through a failed flush and a replay", async () => {
    const orgId = crypto.randomUUID();
    const stub = stubOf(orgId);
    // Postgres refuses this org's rows (a real error, inside the flush's transaction) from the start,
    // so whenever the alarm runs before the trigger goes, its flush fails.
    const fn = `refuse_${orgId.replace(/-/g, "")}`;
    await sql.unsafe(`create function ${fn}() returns trigger language plpgsql as $$
      begin if new.org_id = '${orgId}' then raise exception 'refused for the test'; end if; return new; end $$`);
    await sql.unsafe(
      `create trigger ${fn} before insert on credit_transactions for each row execute function ${fn}()`,
    );
    await isolateA.loadBalance({ orgId, balance: 10_000 });
    const ids = ["o1", "o2", "o3"].map((id) => `${orgId}-${id}`);
    for (const id of ids) {
      await isolateA.reserve({ orgId, requestId: id, amount: 500, ttlMs: 60_000, nowMs: Date.now() });
      await isolateB.settle({ orgId, requestId: id, cost: 400, event: debitEvent(id, orgId, 400) });
    }
    const failed = await stub.opFlush().then(
      () => null,
      (err: unknown) => err,
    );
    // Postgres's own refusal (the batch statement goes to postgres.js as a prepared statement, not
    // through drizzle, so no "Failed query" wrapper).
    expect(String(failed)).toContain("refused for the test");
    await runDurableObjectAlarm(stub); // fails too, and sets its retry
    expect((await stub.opLedgerLag()).length).toBe(3);
    const written = await sql`select count(*)::int as n from credit_transactions where org_id = ${orgId}`;
    expect(written[0]?.n).toBe(0);

    await sql.unsafe(`drop trigger ${fn} on credit_transactions; drop function ${fn}()`);
    // The retry goes through (run now, or already run on its own while the trigger was dropped).
    // An alarm running on its own at this moment leaves none for runDurableObjectAlarm to run: the
    // test then flushes as the alarm does, rather than spinning past it (seen once under load).
    for (let i = 0; i < 20 && (await stub.opLedgerLag()).length > 0; i++) {
      if (!(await runDurableObjectAlarm(stub))) await stub.opFlush().catch(() => 0);
    }
    expect((await stub.opLedgerLag()).length).toBe(0);
    // A flush whose commit landed but whose rows were not deleted (the object was evicted in
    // between) writes them again: Postgres keeps one row per event id.
    await runInDurableObject(stub, (instance: OrgMeter) => {
      for (const id of ids) {
        (instance as unknown as { sql: { exec(q: string, ...b: (string | number)[]): unknown } }).sql.exec(
          "insert into outbox (event, balance, at) values (?, ?, ?)",
          debitEvent(id, orgId, 400),
          10_000 - 400,
          Date.now(),
        );
      }
    });
    // Flushed here, or by an alarm that came first: either way once.
    await stub.opFlush();
    expect((await stub.opLedgerLag()).length).toBe(0);
    const rows = await sql`select id, amount from credit_transactions where org_id = ${orgId} order by id`;
    expect(rows.map((r) => [r.id, Number(r.amount)])).toEqual(ids.map((id) => [id, 400]));
    const usage = await sql`select count(*)::int as n from usage_records where org_id = ${orgId}`;
    expect(usage[0]?.n).toBe(3);
    expect(await isolateA.getBalance(orgId)).toEqual({ balance: 10_000 - 1_200, held: 0 });
  });

  it("enforces the org's and a key's rate limits exactly across isolates, counted in the object's storage", async () => {
    const orgId = crypto.randomUUID();
    await isolateA.loadBalance({ orgId, balance: 1_000_000 });
    // A fixed time in one window, so the test cannot straddle a minute boundary.
    const window = Date.now() - (Date.now() % 60_000);
    const nowMs = window + 1_000;
    const rate = (keyId: string) => ({
      keyId,
      org: { requestsPerMinute: 10, tokensPerMinute: null },
      key: { requestsPerMinute: 4, tokensPerMinute: null },
      tokens: 100,
    });
    // A call refused for credits counts nothing against the rate.
    const broke = await isolateA.reserve({
      orgId,
      requestId: "too-big",
      amount: 2_000_000,
      ttlMs: 60_000,
      nowMs,
      rate: rate("k0"),
    });
    expect(broke.ok ? "ok" : broke.reason).toBe("insufficient_credits");
    // 30 calls at once over two isolates and three keys: the key limit (4) caps each key, and the
    // org limit (10) caps the org below the keys' sum (12).
    const outcomes = await Promise.all(
      Array.from({ length: 30 }, (_, i) =>
        (i % 2 ? isolateA : isolateB).reserve({
          orgId,
          requestId: `r${i}`,
          amount: 10,
          ttlMs: 60_000,
          nowMs,
          rate: rate(`k${i % 3}`),
        }),
      ),
    );
    const admitted = outcomes.filter((o) => o.ok);
    expect(admitted).toHaveLength(10);
    expect(outcomes.filter((o) => !o.ok && o.reason === "rate_limited")).toHaveLength(20);
    const perKey = [0, 1, 2].map((k) => outcomes.filter((o, i) => o.ok && i % 3 === k).length);
    expect(perKey.every((n) => n <= 4)).toBe(true);
    expect(await isolateB.getBalance(orgId)).toEqual({ balance: 1_000_000, held: 100 });
    // A repeat of an admitted call is not counted again; a BYO call's rate step is refused too.
    const first = outcomes.findIndex((o) => o.ok);
    const repeat = await isolateB.reserve({
      orgId,
      requestId: `r${first}`,
      amount: 10,
      ttlMs: 60_000,
      nowMs,
      rate: rate(`k${first % 3}`),
    });
    expect(repeat.ok).toBe(true);
    const byo = await isolateA.admitRate({ orgId, rate: rate("k9"), nowMs });
    expect(byo.ok).toBe(false);
    // The headers report the scope closest to its limit: the org, which is spent.
    expect(byo.rate.requests).toEqual({ limit: 10, remaining: 0, resetMs: 59_000 });
    // The counts are rows of the object's SQLite, so an evicted object keeps them.
    await runInDurableObject(stubOf(orgId), (_instance: OrgMeter, state) => {
      const rows = state.storage.sql
        .exec<{ id: string; requests: number }>("select id, requests from rate_windows order by id")
        .toArray();
      expect(rows.find((r) => r.id === "o:org")?.requests).toBe(10);
      expect(rows.filter((r) => r.id.startsWith("k:")).reduce((n, r) => n + r.requests, 0)).toBe(10);
    });
    // The next window starts afresh.
    const later = await isolateA.reserve({
      orgId,
      requestId: "next-minute",
      amount: 10,
      ttlMs: 60_000,
      nowMs: window + 61_000,
      rate: rate("k0"),
    });
    expect(later.ok).toBe(true);
  });

  it("corrects the tokens of the window a call was admitted in at settle", async () => {
    const orgId = crypto.randomUUID();
    const window = Date.now() - (Date.now() % 60_000);
    const rate = {
      keyId: "k",
      org: { requestsPerMinute: null, tokensPerMinute: 1_000 },
      key: NONE,
      tokens: 600,
    };
    expect((await isolateA.admitRate({ orgId, rate, nowMs: window + 1 })).ok).toBe(true);
    // A second estimate of 600 does not fit; once the first is corrected to 100 used, it does.
    expect((await isolateB.admitRate({ orgId, rate, nowMs: window + 2 })).ok).toBe(false);
    await isolateA.settleRate({ orgId, keyId: "k", windowStart: window, tokens: 100 - 600 });
    expect((await isolateB.admitRate({ orgId, rate, nowMs: window + 3 })).ok).toBe(true);
  });

  it("says not_loaded for trial counters until they are loaded, and never lowers them", async () => {
    const orgId = crypto.randomUUID();
    const hold = (requestId: string, planId = "p1") =>
      isolateA.holdTrialResponse({
        orgId,
        planId,
        requestId,
        maxPlans: 2,
        maxPerPlan: 3,
        ttlMs: 60_000,
        nowMs: Date.now(),
      });
    expect(await hold("t0")).toEqual({ ok: false, reason: "not_loaded" });
    expect(await isolateB.loadTrial({ orgId, plans: { p1: 2 } })).toBe(true);
    expect(await hold("t1")).toEqual({ ok: true });
    expect(await isolateA.endTrialResponse({ orgId, requestId: "t1", answered: true, event: "{}" })).toBe(
      true,
    );
    // Postgres behind the object (2 < 3 confirmed): the object's own count stays.
    expect(await isolateB.loadTrial({ orgId, plans: { p1: 2 } })).toBe(false);
    expect(await hold("t2")).toEqual({ ok: false, reason: "trial_messages_exceeded" });
    expect(await isolateA.epoch()).toBe(await isolateB.epoch());
  });

  it("holds the auto-recharge lease until it expires or is cleared", async () => {
    const orgId = crypto.randomUUID();
    await isolateA.loadBalance({ orgId, balance: 1_000 });
    const now = Date.now();
    const settle = (requestId: string, nowMs: number) =>
      isolateA.settle({
        orgId,
        requestId,
        cost: 100,
        event: debitEvent(requestId, orgId, 100),
        rebuyBelow: 950,
        rebuyLease: { nowMs, ttlMs: 60_000 },
      });
    const rebuys: boolean[] = [];
    for (const [id, at] of [
      ["s1", now], // crosses below 950 with no lease held: takes it
      ["s2", now + 1_000], // the lease is held
      ["s3", now + 61_000], // the lease ended (its gateway died mid-payment): taken again
      ["s4", now + 62_000], // held again
    ] as const) {
      const o = await settle(id, at);
      rebuys.push(o.ok && o.rebuy === true);
    }
    await isolateB.clearRebuy(orgId);
    const afterClear = await settle("s5", now + 63_000);
    rebuys.push(afterClear.ok && afterClear.rebuy === true);
    expect(rebuys).toEqual([true, false, true, false, true]);
    expect(await isolateB.getBalance(orgId)).toEqual({ balance: 500, held: 0 });
  });
});
