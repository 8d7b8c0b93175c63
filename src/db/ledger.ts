import { and, desc, eq, getTableColumns, getTableName, gte, type SQL, sql } from "drizzle-orm";
import type { PgTable } from "drizzle-orm/pg-core";
import type { CallEvent, CreditEvent, LedgerEvent } from "../metering/events.ts";
import type { Db } from "./client.ts";
import { type CommittedDebit, enqueueSpendNotifications } from "./notifications.ts";
import { creditTransactions } from "./schema/credit-transactions.ts";
import { usageRecords } from "./schema/usage-records.ts";

export type CreditTransactionRow = typeof creditTransactions.$inferSelect;

/** The org's balance as the Postgres ledger has it: credits minus debits, in nanodollars. */
export async function orgLedgerBalance(db: Db, orgId: string): Promise<number> {
  const [row] = await db
    .select({
      balance: sql<string>`coalesce(sum(case when ${creditTransactions.transactionType} = 'credit' then ${creditTransactions.amount} else -${creditTransactions.amount} end), 0)`,
    })
    .from(creditTransactions)
    .where(eq(creditTransactions.orgId, orgId));
  return Number(row?.balance ?? 0);
}

/** A ledger event with the balance the store left after applying it. */
export interface AppliedEvent {
  event: LedgerEvent;
  /** Balance after the event, from the store; undefined for usage events (no money moved). */
  balanceAfter: number | undefined;
}

function debitRow(e: CallEvent, balanceAfter: number): typeof creditTransactions.$inferInsert {
  return {
    id: e.id,
    orgId: e.orgId,
    transactionType: "debit",
    amount: e.amount,
    startBalance: balanceAfter + e.amount,
    endBalance: balanceAfter,
    createdAt: new Date(e.endedAt),
    userId: e.tags.userId ?? null,
    debitInputTokens: e.inputTokens,
    debitCachedTokens: e.cachedTokens,
    debitOutputTokens: e.outputTokens,
    debitModelInputPricePerToken: e.inputPricePerToken,
    debitModelOutputPricePerToken: e.outputPricePerToken,
    debitBaseAmount: e.base,
    debitSurcharge: e.surcharge,
    debitCacheDiscount: e.cacheDiscount,
    debitModelProvider: e.provider,
    debitModelName: e.model,
    debitModelPackName: e.tags.modelPack ?? null,
    debitModelRole: e.tags.modelRole ?? null,
    // The Planto CLI reads purpose as non-null on every debit.
    debitPurpose: e.tags.purpose ?? (e.route === "apply" ? "apply" : "chat"),
    debitPlanId: e.tags.planId ?? null,
    debitPlanName: e.tags.planName ?? null,
    debitSessionId: e.tags.sessionId ?? null,
  };
}

export function creditRow(e: CreditEvent, balanceAfter: number): typeof creditTransactions.$inferInsert {
  return {
    id: e.id,
    orgId: e.orgId,
    transactionType: "credit",
    amount: e.amount,
    startBalance: balanceAfter - e.amount,
    endBalance: balanceAfter,
    createdAt: new Date(e.createdAt),
    creditType: e.creditType,
    creditIsAutoRebuy: e.isAutoRebuy,
    creditAutoRebuyMinThreshold: e.autoRebuyMinThreshold,
    creditAutoRebuyToBalance: e.autoRebuyToBalance,
  };
}

function usageRow(e: CallEvent): typeof usageRecords.$inferInsert {
  return {
    id: e.id,
    orgId: e.orgId,
    keyId: e.keyId,
    route: e.route,
    provider: e.provider,
    model: e.model,
    byo: e.byo,
    inputTokens: e.inputTokens,
    cachedTokens: e.cachedTokens,
    cacheWriteTokens: e.cacheWriteTokens,
    outputTokens: e.outputTokens,
    reasoningTokens: e.reasoningTokens,
    charged: e.amount,
    listPrice: e.listPrice,
    base: e.base,
    surcharge: e.surcharge,
    cacheDiscount: e.cacheDiscount,
    planId: e.tags.planId ?? null,
    planName: e.tags.planName ?? null,
    sessionId: e.tags.sessionId ?? null,
    userId: e.tags.userId ?? null,
    purpose: e.tags.purpose ?? null,
    modelRole: e.tags.modelRole ?? null,
    modelPack: e.tags.modelPack ?? null,
    startedAt: new Date(e.startedAt),
    firstTokenAt: e.firstTokenAt === null ? null : new Date(e.firstTokenAt),
    endedAt: new Date(e.endedAt),
    stoppedEarly: e.stoppedEarly,
    clientCancelled: e.clientCancelled,
    upstreamError: e.upstreamError,
    noReportedUsage: e.noReportedUsage,
  };
}

/**
 * Inserts many rows as ONE statement with ONE parameter: the rows as a JSON array, expanded by
 * json_populate_recordset into the table's own row type. Building per-row SQL with the query builder
 * cost more CPU than the rest of a call; this keeps the flusher's work per event to a JSON encode.
 * Rows whose id exists are skipped.
 */
function bulkInsert(table: PgTable, rows: Record<string, unknown>[]): SQL {
  const columns = Object.entries(getTableColumns(table));
  const json = JSON.stringify(
    rows.map((row) => {
      const out: Record<string, unknown> = {};
      for (const [key, column] of columns) {
        const v = row[key];
        out[column.name] = v instanceof Date ? v.toISOString() : (v ?? null);
      }
      return out;
    }),
  );
  const names = sql.raw(columns.map(([, c]) => `"${c.name}"`).join(", "));
  const name = sql.raw(`"${getTableName(table)}"`);
  return sql`insert into ${name} (${names}) select ${names} from json_populate_recordset(null::${name}, ${json}::json) on conflict (id) do nothing`;
}

/**
 * Writes a batch of ledger events in one transaction. Rows whose id is already there are skipped,
 * so replaying entries the flusher wrote but could not ack (it died in between) changes nothing.
 */
export async function writeLedgerBatch(db: Db, batch: AppliedEvent[]): Promise<void> {
  const transactions: (typeof creditTransactions.$inferInsert)[] = [];
  const usage: (typeof usageRecords.$inferInsert)[] = [];
  const debits: CommittedDebit[] = [];
  for (const { event, balanceAfter } of batch) {
    if (event.kind === "credit") {
      transactions.push(creditRow(event, balanceAfter ?? 0));
      continue;
    }
    usage.push(usageRow(event));
    if (event.kind === "debit") {
      transactions.push(debitRow(event, balanceAfter ?? 0));
      debits.push({ orgId: event.orgId, endedAt: event.endedAt });
    }
  }
  if (transactions.length === 0 && usage.length === 0) return;
  await db.transaction(async (tx) => {
    if (transactions.length) await tx.execute(bulkInsert(creditTransactions, transactions));
    if (usage.length) await tx.execute(bulkInsert(usageRecords, usage));
    // In the same transaction as the debits that cross the threshold: a crash loses neither.
    if (debits.length) await enqueueSpendNotifications(tx, debits);
  });
}

export async function getTransaction(db: Db, id: string): Promise<CreditTransactionRow | null> {
  const [row] = await db.select().from(creditTransactions).where(eq(creditTransactions.id, id)).limit(1);
  return row ?? null;
}

/** Inserts one credit row now (admin credits answer with it), or finds the row already there. */
export async function insertCredit(
  db: Db,
  row: typeof creditTransactions.$inferInsert,
): Promise<CreditTransactionRow> {
  await db.insert(creditTransactions).values(row).onConflictDoNothing({ target: creditTransactions.id });
  const found = await getTransaction(db, row.id);
  if (!found) throw new Error(`credit ${row.id} vanished after insert`);
  return found;
}

export interface TransactionFilter {
  orgId: string;
  transactionType?: "credit" | "debit";
  planId?: string;
  sessionId?: string;
  since?: Date;
}

function filterWhere(f: TransactionFilter) {
  return and(
    eq(creditTransactions.orgId, f.orgId),
    f.transactionType ? eq(creditTransactions.transactionType, f.transactionType) : undefined,
    f.planId ? eq(creditTransactions.debitPlanId, f.planId) : undefined,
    f.sessionId ? eq(creditTransactions.debitSessionId, f.sessionId) : undefined,
    f.since ? gte(creditTransactions.createdAt, f.since) : undefined,
  );
}

/** A page of the org's transactions, newest first, and how many there are in all. */
export async function listTransactions(
  db: Db,
  filter: TransactionFilter,
  page: { size: number; page: number },
): Promise<{ rows: CreditTransactionRow[]; total: number }> {
  const where = filterWhere(filter);
  const [rows, [count]] = await Promise.all([
    db
      .select()
      .from(creditTransactions)
      .where(where)
      .orderBy(desc(creditTransactions.createdAt), desc(creditTransactions.id))
      .limit(page.size)
      .offset(page.size * (page.page - 1)),
    db.select({ n: sql<string>`count(*)` }).from(creditTransactions).where(where),
  ]);
  return { rows, total: Number(count?.n ?? 0) };
}

export interface DebitSummary {
  total: number;
  cacheSavings: number;
  byPlan: Array<{ planId: string; planName: string | null; amount: number }>;
  byModel: Array<{ model: string; amount: number }>;
  byPurpose: Array<{ purpose: string; amount: number }>;
}

/** Spend in a scope (day, billing month, plan, session), split by plan, model and purpose. */
export async function summarizeDebits(
  db: Db,
  filter: Omit<TransactionFilter, "transactionType">,
): Promise<DebitSummary> {
  const where = filterWhere({ ...filter, transactionType: "debit" });
  const t = creditTransactions;
  const amount = sql<string>`sum(${t.amount})`;
  const [[totals], plans, models, purposes] = await Promise.all([
    db
      .select({
        total: sql<string>`coalesce(sum(${t.amount}), 0)`,
        savings: sql<string>`coalesce(sum(${t.debitCacheDiscount}), 0)`,
      })
      .from(t)
      .where(where),
    db
      .select({ planId: t.debitPlanId, planName: sql<string | null>`max(${t.debitPlanName})`, amount })
      .from(t)
      .where(and(where, sql`${t.debitPlanId} is not null`))
      .groupBy(t.debitPlanId),
    db.select({ model: t.debitModelName, amount }).from(t).where(where).groupBy(t.debitModelName),
    db.select({ purpose: t.debitPurpose, amount }).from(t).where(where).groupBy(t.debitPurpose),
  ]);
  return {
    total: Number(totals?.total ?? 0),
    cacheSavings: Number(totals?.savings ?? 0),
    byPlan: plans.map((p) => ({
      planId: p.planId as string,
      planName: p.planName,
      amount: Number(p.amount),
    })),
    byModel: models.map((m) => ({ model: m.model ?? "unknown", amount: Number(m.amount) })),
    byPurpose: purposes.map((p) => ({ purpose: p.purpose ?? "chat", amount: Number(p.amount) })),
  };
}
