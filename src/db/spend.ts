import { and, eq, gte, lt, sql } from "drizzle-orm";
import type { Db } from "./client.ts";
import { creditTransactions } from "./schema/credit-transactions.ts";

/**
 * What the org was debited in [from, to): a billing month's spend, as the Postgres ledger has it.
 * A debit counts in the month it was settled in (its created_at).
 */
export async function orgSpendBetween(db: Db, orgId: string, from: Date, to: Date): Promise<number> {
  const t = creditTransactions;
  const [row] = await db
    .select({ spend: sql<string>`coalesce(sum(${t.amount}), 0)` })
    .from(t)
    .where(
      and(eq(t.orgId, orgId), eq(t.transactionType, "debit"), gte(t.createdAt, from), lt(t.createdAt, to)),
    );
  return Number(row?.spend ?? 0);
}
