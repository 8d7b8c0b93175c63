import { and, eq, inArray, isNull, lte, or, sql } from "drizzle-orm";
import type { Db } from "./client.ts";
import { creditOutbox } from "./schema/credit-outbox.ts";
import { creditTransactions } from "./schema/credit-transactions.ts";
import { deadLetters } from "./schema/dead-letters.ts";
import { usageRecords } from "./schema/usage-records.ts";

/**
 * Which of these request ids have their usage record (every settled call writes one). Each gateway
 * asks this every second for every call it settled since (the settle journal letting go), so the ids
 * go as one json parameter: an `in` list of a thousand parameters cost Postgres about twice as much
 * to parse, bind and plan (4.5 against 6.2 µs of Postgres CPU per id, bench/ledger-pg.ts).
 */
export async function recordedCalls(db: Db, ids: string[]): Promise<Set<string>> {
  if (ids.length === 0) return new Set();
  const rows = await db
    .select({ id: usageRecords.id })
    .from(usageRecords)
    .where(sql`${usageRecords.id} in (select json_array_elements_text(${JSON.stringify(ids)}::json))`);
  return new Set(rows.map((r) => r.id));
}

/** Which of these request ids have their debit row. */
export async function debitedCalls(db: Db, ids: string[]): Promise<Set<string>> {
  if (ids.length === 0) return new Set();
  const rows = await db
    .select({ id: creditTransactions.id })
    .from(creditTransactions)
    .where(inArray(creditTransactions.id, ids));
  return new Set(rows.map((r) => r.id));
}

/**
 * Served calls with a cost and no debit: a usage record that charged something but whose debit row
 * is missing. The flusher writes both in one statement, so any row here is a loss to explain.
 */
export async function chargedWithoutDebit(
  db: Db,
  limit = 100,
): Promise<{ id: string; orgId: string; charged: number }[]> {
  const u = usageRecords;
  const c = creditTransactions;
  return db
    .select({ id: u.id, orgId: u.orgId, charged: u.charged })
    .from(u)
    .leftJoin(c, eq(c.id, u.id))
    .where(and(sql`${u.charged} > 0`, isNull(c.id)))
    .limit(limit);
}

/**
 * A BYO trial org's confirmed model responses per plan, from its usage records: a call the upstream
 * answered (no upstream error, or one that came after the first token: a stream that failed midway
 * still counts). A call that failed before its first token is not counted: usage_records does not
 * keep the upstream status, so this errs toward the customer.
 */
export async function trialResponsesByPlan(db: Db, orgId: string): Promise<Record<string, number>> {
  const u = usageRecords;
  const rows = await db
    .select({ plan: sql<string>`coalesce(${u.planId}, '')`, n: sql<string>`count(*)` })
    .from(u)
    .where(
      and(
        eq(u.orgId, orgId),
        eq(u.byo, true),
        or(eq(u.upstreamError, false), sql`${u.firstTokenAt} is not null`),
      ),
    )
    .groupBy(sql`coalesce(${u.planId}, '')`);
  return Object.fromEntries(rows.map((r) => [r.plan, Number(r.n)]));
}

/** Sets an entry aside for good (once per id); returns whether this call inserted it. */
export async function insertDeadLetter(
  db: Db,
  row: {
    id: string;
    source: "spool" | "ledger";
    orgId: string | null;
    payload: string;
    error: string;
    at: Date;
  },
): Promise<boolean> {
  const inserted = await db
    .insert(deadLetters)
    .values({ ...row, createdAt: row.at })
    .onConflictDoNothing({ target: deadLetters.id })
    .returning({ id: deadLetters.id });
  return inserted.length > 0;
}

export async function countDeadLetters(db: Db): Promise<number> {
  const [row] = await db.select({ n: sql<string>`count(*)` }).from(deadLetters);
  return Number(row?.n ?? 0);
}

/** Owes a credit for money taken; a second write for the same id changes nothing. */
export async function oweCredit(
  db: Db,
  row: { id: string; orgId: string; credit: Record<string, unknown>; at: Date },
): Promise<void> {
  await db
    .insert(creditOutbox)
    .values({ id: row.id, orgId: row.orgId, credit: row.credit, nextAttemptAt: row.at, createdAt: row.at })
    .onConflictDoNothing({ target: creditOutbox.id });
}

/** The owed credits due at `now`. */
export async function dueCredits(db: Db, now: Date, limit = 50) {
  return db.select().from(creditOutbox).where(lte(creditOutbox.nextAttemptAt, now)).limit(limit);
}

/** The credit landed: nothing is owed any more. */
export async function creditPaid(db: Db, id: string): Promise<void> {
  await db.delete(creditOutbox).where(eq(creditOutbox.id, id));
}

/** The credit failed again: tried anew at `next`. */
export async function creditRetryAt(db: Db, id: string, next: Date, error: string): Promise<void> {
  await db
    .update(creditOutbox)
    .set({ attempts: sql`${creditOutbox.attempts} + 1`, nextAttemptAt: next, lastError: error })
    .where(eq(creditOutbox.id, id));
}
