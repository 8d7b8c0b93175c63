import { randomUUID } from "node:crypto";
import { eq, sql } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Database, openDatabase } from "../../src/db/client.ts";
import { writeLedgerBatch } from "../../src/db/ledger.ts";
import { enqueueSpendNotifications } from "../../src/db/notifications.ts";
import { createOrg, getOrg, recordRechargeFailure, updateOrgBilling } from "../../src/db/orgs.ts";
import { creditTransactions } from "../../src/db/schema/credit-transactions.ts";
import { notifications } from "../../src/db/schema/notifications.ts";
import { type CallEvent, encodeCallEvent } from "../../src/metering/events.ts";
import { waitUntil } from "../../tools/servers/ports.ts";
import { freshDatabaseUrl } from "../harness/databases.ts";
import { debitEvent } from "../harness/events.ts";

const AT = Date.parse("2026-11-20T12:00:00Z");

function debit(orgId: string, amount: number): CallEvent {
  return debitEvent(orgId, amount, { startedAt: AT, endedAt: AT });
}

/** A ledger stream entry of the call, as the flusher hands it over. */
function entry(e: CallEvent, balanceAfter: number) {
  return { event: encodeCallEvent(e), balanceAfter };
}

describe("the notifications outbox in Postgres", () => {
  // Two pools on one database, as two gateway instances' flushers have.
  let a: Database;
  let b: Database;
  beforeAll(async () => {
    const url = await freshDatabaseUrl();
    a = await openDatabase({ databaseUrl: url, dataDir: "" });
    await a.migrate();
    b = await openDatabase({ databaseUrl: url, dataDir: "" });
  });
  afterAll(async () => {
    await a?.close();
    await b?.close();
  });

  const watched = async () => {
    const org = await createOrg(a.db, { name: "race", billingMode: "integrated", isTrial: false });
    await updateOrgBilling(a.db, org.id, {
      notifyThreshold: 1_000,
      billingCycleStartedAt: new Date("2026-10-15T00:00:00Z"),
    });
    return org.id;
  };
  const rowsOf = (orgId: string) => a.db.select().from(notifications).where(eq(notifications.orgId, orgId));

  it("two flushers committing the debits that together cross the threshold: the later one sees the earlier and records it", async () => {
    const orgId = await watched();
    // The first flusher's transaction: its debit (600 of the 1000) is written and checked, and it
    // has not committed yet when the second flusher writes the other 600.
    let commit!: () => void;
    const held = new Promise<void>((resolve) => {
      commit = resolve;
    });
    let checked!: () => void;
    const firstChecked = new Promise<void>((resolve) => {
      checked = resolve;
    });
    const first = a.db.transaction(async (tx) => {
      const e = debit(orgId, 600);
      await tx.insert(creditTransactions).values({
        id: e.id,
        orgId,
        transactionType: "debit",
        amount: 600,
        startBalance: 10_000,
        endBalance: 9_400,
        createdAt: new Date(e.endedAt),
      });
      expect(await enqueueSpendNotifications(tx, [{ orgId, endedAt: e.endedAt }])).toBe(0);
      checked();
      await held;
    });
    await firstChecked;
    const second = writeLedgerBatch(b.db, [entry(debit(orgId, 600), 8_800)]);
    // The first commits only once the second is blocked on the org's lock, inside its own check.
    await waitUntil("the second flusher to wait on the first's lock", async () => {
      const [waiting] = await a.db
        .select({ n: sql<number>`count(*)::int` })
        .from(sql`pg_stat_activity`)
        .where(sql`datname = current_database() and wait_event_type = 'Lock'`);
      return (waiting?.n ?? 0) > 0;
    });
    commit();
    await Promise.all([first, second]);
    const rows = await rowsOf(orgId);
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({
      kind: "spend_threshold",
      dedupeKey: "2026-11-15T00:00:00.000Z",
      status: "pending",
      payload: { spend: 1_200, notifyThreshold: 1_000, monthStart: "2026-11-15T00:00:00.000Z" },
    });
  });

  it("a replayed batch records nothing more, and a debit of another month counts in that month", async () => {
    const orgId = await watched();
    const batch = [entry(debit(orgId, 1_500), 0)];
    await writeLedgerBatch(a.db, batch);
    await Promise.all([writeLedgerBatch(a.db, batch), writeLedgerBatch(b.db, batch)]);
    expect(await rowsOf(orgId)).toHaveLength(1);
    const december = { ...debit(orgId, 999), endedAt: Date.parse("2026-12-16T00:00:00Z") };
    await writeLedgerBatch(a.db, [entry(december, 0)]);
    expect(await rowsOf(orgId)).toHaveLength(1); // 999 < 1000 in December
    await writeLedgerBatch(a.db, [entry({ ...december, id: `req_${randomUUID()}`, amount: 1 }, 0)]);
    expect((await rowsOf(orgId)).map((r) => r.dedupeKey).sort()).toEqual([
      "2026-11-15T00:00:00.000Z",
      "2026-12-15T00:00:00.000Z",
    ]);
  });

  it("the third failed recharge in a row turns auto-recharge off and records one notification, whatever runs at once", async () => {
    const org = await createOrg(a.db, { name: "cards", billingMode: "integrated", isTrial: false });
    await updateOrgBilling(a.db, org.id, {
      autoRebuyEnabled: true,
      autoRebuyMinThreshold: 500_000_000,
      autoRebuyToBalance: 2_000_000_000,
    });
    const fail = (db: Database, n: number) =>
      recordRechargeFailure(db.db, {
        orgId: org.id,
        rechargeId: `rebuy_${n}`,
        reason: "card declined",
        at: new Date(AT),
      });
    expect(await fail(a, 1)).toEqual({ failures: 1, turnedOff: false });
    expect(await rowsOf(org.id)).toEqual([]);
    const results = await Promise.all([fail(a, 2), fail(b, 3), fail(b, 4)]);
    expect(results.map((r) => r?.failures).sort()).toEqual([2, 3, 4]);
    expect(results.filter((r) => r?.turnedOff)).toHaveLength(1);
    expect(await getOrg(a.db, org.id)).toMatchObject({ autoRebuyEnabled: false, autoRebuyFailures: 4 });
    const rows = await rowsOf(org.id);
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({
      kind: "auto_recharge_disabled",
      payload: { failures: 3, reason: "card declined", autoRebuyToBalance: 2_000_000_000 },
    });
  });
});
