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
    expect(String(failed)).toContain("Failed query");
    await runDurableObjectAlarm(stub); // fails too, and sets its retry
    expect((await stub.opLedgerLag()).length).toBe(3);
    const written = await sql`select count(*)::int as n from credit_transactions where org_id = ${orgId}`;
    expect(written[0]?.n).toBe(0);

    await sql.unsafe(`drop trigger ${fn} on credit_transactions; drop function ${fn}()`);
    // The retry goes through (run now, or already run on its own while the trigger was dropped).
    for (let i = 0; i < 20 && (await stub.opLedgerLag()).length > 0; i++) await runDurableObjectAlarm(stub);
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
});
