import { randomUUID } from "node:crypto";
import postgres from "postgres";
import { afterAll, beforeAll, describe, expect, inject, it, vi } from "vitest";
import { createLogger } from "../../src/core/log.ts";
import { type Database, openDatabase } from "../../src/db/client.ts";
import { type CallEvent, encodeCallEvent, encodeCreditEvent } from "../../src/metering/events.ts";
import { Flusher } from "../../src/metering/flusher.ts";
import { LocalLedger } from "../../src/metering/local-ledger.ts";
import { createRedisStore } from "../../src/metering/redis-store.ts";
import type { MeteringStore } from "../../src/metering/store.ts";
import { freshDatabaseUrl } from "../harness/databases.ts";

/**
 * The flusher against a real Redis and Postgres: every field of a ledger event lands in its column,
 * unreadable entries are set aside without holding up the rest, and a replay changes nothing.
 */
describe("flusher", () => {
  let database: Database;
  let store: MeteringStore;
  let sql: postgres.Sql;
  const logged: Record<string, unknown>[] = [];
  const log = createLogger("error", (line) => {
    logged.push(JSON.parse(line) as Record<string, unknown>);
  });

  beforeAll(async () => {
    const databaseUrl = await freshDatabaseUrl();
    database = await openDatabase({ databaseUrl, dataDir: "" });
    await database.migrate();
    store = createRedisStore({ url: inject("redisUrl"), keyPrefix: `t${randomUUID().slice(0, 8)}` });
    sql = postgres(databaseUrl, { max: 1, onnotice: () => {} });
  });
  afterAll(async () => {
    await store.close();
    await sql.end();
    await database.close();
  });

  const call = (orgId: string, over: Partial<CallEvent> = {}): CallEvent => ({
    id: `req_${randomUUID()}`,
    orgId,
    keyId: "key_1",
    amount: 1234,
    base: 1175,
    surcharge: 59,
    cacheDiscount: 7,
    listPrice: 1234,
    inputTokens: 812,
    cachedTokens: 100,
    cacheWriteTokens: 3,
    outputTokens: 20,
    reasoningTokens: 5,
    inputPricePerToken: "0.0000004",
    outputPricePerToken: "0.0000016",
    provider: "openai",
    model: "openai/gpt-4.1-mini",
    route: "chat",
    byo: false,
    tags: {
      planId: "plan-1",
      planName: "Plan one",
      sessionId: "s-1",
      userId: "u-1",
      modelRole: "planner",
      modelPack: "daily",
    },
    startedAt: Date.parse("2026-12-01T10:00:00.000Z"),
    firstTokenAt: Date.parse("2026-12-01T10:00:00.250Z"),
    endedAt: Date.parse("2026-12-01T10:00:01.500Z"),
    stoppedEarly: false,
    clientCancelled: true,
    upstreamError: false,
    noReportedUsage: true,
    ...over,
  });

  it("writes the events queued in process (BYO usage) with the stream's, and acks only the stream's", async () => {
    const orgId = `org_${randomUUID()}`;
    await store.loadBalance({ orgId, balance: 1_000_000 });
    const debit = call(orgId);
    const byo = call(orgId, { amount: 0, byo: true, tags: {} });
    await store.settle({ orgId, requestId: debit.id, cost: debit.amount, event: encodeCallEvent(debit) });
    const local = new LocalLedger();
    local.push(encodeCallEvent(byo));
    const committed: string[] = [];
    const flusher = new Flusher(store, database, log, {
      consumer: "local",
      local,
      onCommitted: (ids) => committed.push(...ids),
    });
    await flusher.drain();
    expect(local.size).toBe(0);
    expect(committed).toEqual(expect.arrayContaining([debit.id, byo.id]));
    const rows = await sql`select id, byo, charged from usage_records where org_id = ${orgId} order by byo`;
    expect(rows.map((r) => [r.id, r.byo, Number(r.charged)])).toEqual([
      [debit.id, false, 1234],
      [byo.id, true, 0],
    ]);
    expect(await sql`select id from credit_transactions where org_id = ${orgId}`).toHaveLength(1);
    // Nothing of it is left on the stream, and nothing was left unacked.
    expect((await store.ledgerLag()).length).toBe(0);
  });

  it("writes a debit, its usage record, a BYO usage record and a credit with every field", async () => {
    const orgId = `org_${randomUUID()}`;
    await store.loadBalance({ orgId, balance: 1_000_000 });
    const debit = call(orgId);
    const byo = call(orgId, { amount: 0, byo: true, tags: {}, firstTokenAt: null, route: "apply" });
    await store.credit({
      orgId,
      creditId: `cr_${orgId}`,
      amount: 5000,
      event: encodeCreditEvent({
        id: `cr_${orgId}`,
        orgId,
        amount: 5000,
        creditType: "purchase",
        isAutoRebuy: true,
        autoRebuyMinThreshold: 100,
        autoRebuyToBalance: 9000,
        createdAt: Date.parse("2026-12-01T09:00:00.000Z"),
      }),
    });
    await store.settle({ orgId, requestId: debit.id, cost: debit.amount, event: encodeCallEvent(debit) });
    await store.appendEvent({ orgId, event: encodeCallEvent(byo) });
    const committed: string[] = [];
    const flusher = new Flusher(store, database, log, {
      consumer: "one",
      onCommitted: (ids) => committed.push(...ids),
    });
    await flusher.drain();
    // It names what it committed, so the settle journal can let go without asking Postgres.
    expect(committed).toEqual(expect.arrayContaining([debit.id, byo.id, `cr_${orgId}`]));

    const [d] = await sql`select * from credit_transactions where id = ${debit.id}`;
    expect(d).toMatchObject({
      org_id: orgId,
      transaction_type: "debit",
      amount: "1234",
      start_balance: String(1_005_000),
      end_balance: String(1_005_000 - 1234),
      user_id: "u-1",
      debit_input_tokens: 812,
      debit_cached_tokens: 100,
      debit_output_tokens: 20,
      debit_model_input_price_per_token: "0.0000004",
      debit_model_output_price_per_token: "0.0000016",
      debit_base_amount: "1175",
      debit_surcharge: "59",
      debit_cache_discount: "7",
      debit_model_provider: "openai",
      debit_model_name: "openai/gpt-4.1-mini",
      debit_model_pack_name: "daily",
      debit_model_role: "planner",
      debit_purpose: "chat", // no purpose tag: the route's
      debit_plan_id: "plan-1",
      debit_plan_name: "Plan one",
      debit_session_id: "s-1",
      credit_type: null,
    });
    expect(String((d?.created_at as Date | undefined)?.toISOString())).toBe("2026-12-01T10:00:01.500Z");

    const usage = await sql`select * from usage_records where org_id = ${orgId} order by byo`;
    expect(usage).toHaveLength(2);
    expect(usage[0]).toMatchObject({
      id: debit.id,
      key_id: "key_1",
      route: "chat",
      byo: false,
      input_tokens: 812,
      cached_tokens: 100,
      cache_write_tokens: 3,
      output_tokens: 20,
      reasoning_tokens: 5,
      charged: "1234",
      list_price: "1234",
      base: "1175",
      surcharge: "59",
      cache_discount: "7",
      plan_id: "plan-1",
      session_id: "s-1",
      purpose: null,
      stopped_early: false,
      client_cancelled: true,
      upstream_error: false,
      no_reported_usage: true,
    });
    expect(String((usage[0]?.first_token_at as Date | undefined)?.toISOString())).toBe(
      "2026-12-01T10:00:00.250Z",
    );
    expect(usage[1]).toMatchObject({
      id: byo.id,
      byo: true,
      charged: "0",
      route: "apply",
      first_token_at: null,
    });
    // BYO moved no money: no debit row.
    expect(await sql`select id from credit_transactions where id = ${byo.id}`).toHaveLength(0);

    const [c] = await sql`select * from credit_transactions where id = ${`cr_${orgId}`}`;
    expect(c).toMatchObject({
      transaction_type: "credit",
      amount: "5000",
      start_balance: "1000000",
      end_balance: "1005000",
      credit_type: "purchase",
      credit_is_auto_rebuy: true,
      credit_auto_rebuy_min_threshold: "100",
      credit_auto_rebuy_to_balance: "9000",
      debit_purpose: null,
    });
  });

  it("reads at once when this instance writes to a quiet stream, not at its next slow poll", async () => {
    const orgId = `org_${randomUUID()}`;
    await store.loadBalance({ orgId, balance: 1_000_000 });
    const debit = call(orgId);
    const byo = call(orgId, { amount: 0, byo: true, tags: {} });
    // The two ways settlement tells the flusher: a settle's event went on the stream, and a BYO
    // call's was queued here.
    const writes: Array<[string, (local: LocalLedger) => Promise<void>]> = [
      [
        debit.id,
        async (local) => {
          await store.settle({
            orgId,
            requestId: debit.id,
            cost: debit.amount,
            event: encodeCallEvent(debit),
          });
          local.streamed();
        },
      ],
      [byo.id, async (local) => local.push(encodeCallEvent(byo))],
    ];
    for (const [id, write] of writes) {
      // The lanes' reads, seen through the store: the test writes only once a read found nothing.
      const reads: number[] = [];
      const watched: MeteringStore = {
        ...store,
        readLedger: async (r) => {
          const entries = await store.readLedger(r);
          reads.push(entries.length);
          return entries;
        },
      };
      const local = new LocalLedger();
      const committed: string[] = [];
      // After an empty read, a quiet stream is next polled a minute later (the interval here).
      const flusher = new Flusher(watched, database, log, {
        consumer: "nudged",
        local,
        intervalMs: 60_000,
        onCommitted: (ids) => committed.push(...ids),
      });
      await flusher.drain(); // what earlier tests left on the stream
      reads.length = 0;
      flusher.start();
      try {
        await vi.waitFor(() => expect(reads.at(-1)).toBe(0), { timeout: 20_000, interval: 20 });
        await write(local);
        await vi.waitFor(() => expect(committed).toContain(id), { timeout: 20_000, interval: 20 });
      } finally {
        await flusher.stop();
      }
    }
  });

  it("sets unreadable entries aside in dead_letters and writes the rest of their batch", async () => {
    const orgId = `org_${randomUUID()}`;
    await store.loadBalance({ orgId, balance: 1_000_000 });
    const good = call(orgId);
    await store.settle({ orgId, requestId: good.id, cost: good.amount, event: encodeCallEvent(good) });
    await store.appendEvent({ orgId, event: `{"kind":"debit","id":"req_legacy","orgId":"${orgId}"}` });
    await store.appendEvent({ orgId, event: `["c","req_truncated","${orgId}"]` });
    logged.length = 0;
    const flusher = new Flusher(store, database, log, { consumer: "two" });
    await flusher.drain();

    expect(await sql`select id from credit_transactions where org_id = ${orgId}`).toEqual([{ id: good.id }]);
    const setAside = "a ledger entry Postgres refuses went to dead_letters";
    expect(logged.map((l) => [l.msg, l.entry])).toEqual([
      [setAside, `{"kind":"debit","id":"req_legacy","orgId":"${orgId}"}`],
      [setAside, `["c","req_truncated","${orgId}"]`],
    ]);
    expect(
      (await sql`select payload from dead_letters where payload like ${`%${orgId}%`} order by payload`).map(
        (r) => r.payload,
      ),
    ).toEqual([`["c","req_truncated","${orgId}"]`, `{"kind":"debit","id":"req_legacy","orgId":"${orgId}"}`]);
    expect((await store.ledgerLag()).length).toBe(0);
  });

  it("isolates an entry Postgres refuses for its values (not its shape): dead-lettered once, counted, the rest written", async () => {
    const orgId = `org_${randomUUID()}`;
    await store.loadBalance({ orgId, balance: 1_000_000 });
    const events = Array.from({ length: 9 }, () => call(orgId, { amount: 10 }));
    // A well-formed event whose token count overflows Postgres's integer column (22003): no retry
    // can write it, and before, the whole batch was retried forever behind it.
    const poison = { ...call(orgId, { amount: 10 }), inputTokens: 3_000_000_000 };
    events.splice(4, 0, poison);
    for (const e of events)
      await store.settle({ orgId, requestId: e.id, cost: 10, event: encodeCallEvent(e) });
    let deadLettered = 0;
    const flusher = new Flusher(store, database, log, {
      consumer: "poison",
      onDeadLetter: () => deadLettered++,
    });
    await flusher.drain();

    expect(deadLettered).toBe(1);
    const rows = await sql`select id from credit_transactions where org_id = ${orgId}`;
    expect(rows.map((r) => r.id).sort()).toEqual(
      events
        .filter((e) => e !== poison)
        .map((e) => e.id)
        .sort(),
    );
    const [letter] = await sql`select source, payload, error from dead_letters where org_id = ${orgId}`;
    expect(letter?.source).toBe("ledger");
    expect(letter?.payload).toBe(encodeCallEvent(poison));
    expect(String(letter?.error)).toMatch(/out of range/);
    expect((await store.ledgerLag()).length).toBe(0);
  });

  it("changes nothing when a batch is written twice, and writes the new entries of one that is partly a replay", async () => {
    const orgId = `org_${randomUUID()}`;
    await store.loadBalance({ orgId, balance: 1_000_000 });
    const events = Array.from({ length: 20 }, () => call(orgId, { amount: 10 }));
    for (const e of events)
      await store.settle({ orgId, requestId: e.id, cost: 10, event: encodeCallEvent(e) });
    const entries = await store.readLedger({ group: "replay", consumer: "r", count: 100, blockMs: 0 });
    const { writeLedgerBatch } = await import("../../src/db/ledger.ts");
    const records = entries.map((e) => ({ event: e.event, balanceAfter: e.balance }));
    await writeLedgerBatch(database.db, records.slice(0, 8));
    await writeLedgerBatch(database.db, records);
    await writeLedgerBatch(database.db, records);
    const [n] =
      await sql`select count(*)::int as n, sum(amount)::int as spent from credit_transactions where org_id = ${orgId}`;
    expect(n).toEqual({ n: 20, spent: 200 });
    expect(await sql`select id from usage_records where org_id = ${orgId}`).toHaveLength(20);
  });
});
