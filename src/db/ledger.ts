import { and, desc, eq, gte, sql } from "drizzle-orm";
import {
  type CALL_FIELDS,
  CALL_TAG,
  type CREDIT_FIELDS,
  CREDIT_TAG,
  type CreditEvent,
  callPosition,
  creditPosition,
} from "../metering/events.ts";
import type { Db } from "./client.ts";
import { sqlState } from "./guard.ts";
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

/** A ledger stream entry as the flusher hands it over: the encoded event and the balance after it. */
export interface LedgerRecord {
  /** The event as encoded on the stream (src/metering/events.ts). */
  event: string;
  /** Balance after the event, from the store; undefined for usage events (no money moved). */
  balanceAfter: number | undefined;
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

/**
 * SQL reading a field of an encoded event `e` as a column value. `e` is the batch entry's fields as
 * a text[]: the balance after the event first, then the event's own (Postgres arrays count from 1,
 * so the balance is `e[1]` and the event's position p, its tag being 0, is `e[p + 2]`), split out of
 * `json`, not `jsonb`: jsonb_in parses every number into a numeric, which cost ~20 µs of Postgres
 * CPU per event (a third of a debit's write), while the json lexer and one text[] cost ~4 µs.
 * Timestamps go through float8, not numeric: a millisecond count / 1000 as a double rounds back to
 * the exact microsecond in to_timestamp for any date before the year 2200.
 */
type Cast = "text" | "bigint" | "integer" | "boolean" | "timestamptz";
const read = (position: number, cast: Cast): string => {
  const text = `e[${position + 2}]`;
  if (cast === "timestamptz") return `to_timestamp(${text}::float8 / 1000)`;
  return cast === "text" ? text : `${text}::${cast}`;
};
/** The balance after the entry's event (null for a usage event: no money moved). */
const BALANCE = "e[1]::bigint";
const call = (field: (typeof CALL_FIELDS)[number], cast: Cast) => read(callPosition(field), cast);
const credit = (field: (typeof CREDIT_FIELDS)[number], cast: Cast) => read(creditPosition(field), cast);

/** usage_records column ← its value, for every call event. */
const USAGE_COLUMNS: Record<string, string> = {
  id: call("id", "text"),
  org_id: call("orgId", "text"),
  key_id: call("keyId", "text"),
  route: call("route", "text"),
  provider: call("provider", "text"),
  model: call("model", "text"),
  byo: call("byo", "boolean"),
  input_tokens: call("inputTokens", "integer"),
  cached_tokens: call("cachedTokens", "integer"),
  cache_write_tokens: call("cacheWriteTokens", "integer"),
  output_tokens: call("outputTokens", "integer"),
  reasoning_tokens: call("reasoningTokens", "integer"),
  charged: call("amount", "bigint"),
  list_price: call("listPrice", "bigint"),
  base: call("base", "bigint"),
  surcharge: call("surcharge", "bigint"),
  cache_discount: call("cacheDiscount", "bigint"),
  plan_id: call("planId", "text"),
  plan_name: call("planName", "text"),
  session_id: call("sessionId", "text"),
  user_id: call("userId", "text"),
  purpose: call("purpose", "text"),
  model_role: call("modelRole", "text"),
  model_pack: call("modelPack", "text"),
  started_at: call("startedAt", "timestamptz"),
  first_token_at: call("firstTokenAt", "timestamptz"),
  ended_at: call("endedAt", "timestamptz"),
  stopped_early: call("stoppedEarly", "boolean"),
  client_cancelled: call("clientCancelled", "boolean"),
  upstream_error: call("upstreamError", "boolean"),
  no_reported_usage: call("noReportedUsage", "boolean"),
  // Events written before the field existed have none: they took one request.
  attempts: `coalesce(${call("attempts", "integer")}, 1)`,
};

/** credit_transactions column ← its value, for the call events that moved money. */
const DEBIT_COLUMNS: Record<string, string> = {
  id: call("id", "text"),
  org_id: call("orgId", "text"),
  transaction_type: "'debit'",
  amount: call("amount", "bigint"),
  start_balance: `coalesce(${BALANCE}, 0) + ${call("amount", "bigint")}`,
  end_balance: `coalesce(${BALANCE}, 0)`,
  created_at: call("endedAt", "timestamptz"),
  user_id: call("userId", "text"),
  debit_input_tokens: call("inputTokens", "integer"),
  debit_cached_tokens: call("cachedTokens", "integer"),
  debit_output_tokens: call("outputTokens", "integer"),
  debit_model_input_price_per_token: call("inputPricePerToken", "text"),
  debit_model_output_price_per_token: call("outputPricePerToken", "text"),
  debit_base_amount: call("base", "bigint"),
  debit_surcharge: call("surcharge", "bigint"),
  debit_cache_discount: call("cacheDiscount", "bigint"),
  debit_model_provider: call("provider", "text"),
  debit_model_name: call("model", "text"),
  debit_model_pack_name: call("modelPack", "text"),
  debit_model_role: call("modelRole", "text"),
  // The Planto CLI reads purpose as non-null on every debit.
  debit_purpose: `coalesce(${call("purpose", "text")}, case when ${call("route", "text")} = 'apply' then 'apply' else 'chat' end)`,
  debit_plan_id: call("planId", "text"),
  debit_plan_name: call("planName", "text"),
  debit_session_id: call("sessionId", "text"),
};

/** credit_transactions column ← its value, for credit events. */
const CREDIT_COLUMNS: Record<string, string> = {
  id: credit("id", "text"),
  org_id: credit("orgId", "text"),
  transaction_type: "'credit'",
  amount: credit("amount", "bigint"),
  start_balance: `coalesce(${BALANCE}, 0) - ${credit("amount", "bigint")}`,
  end_balance: `coalesce(${BALANCE}, 0)`,
  created_at: credit("createdAt", "timestamptz"),
  credit_type: credit("creditType", "text"),
  credit_is_auto_rebuy: credit("isAutoRebuy", "boolean"),
  credit_auto_rebuy_min_threshold: credit("autoRebuyMinThreshold", "bigint"),
  credit_auto_rebuy_to_balance: credit("autoRebuyToBalance", "bigint"),
};

/** Every credit_transactions column a debit or a credit fills. */
const TRANSACTION_COLUMNS = [...new Set([...Object.keys(DEBIT_COLUMNS), ...Object.keys(CREDIT_COLUMNS)])];
const selectList = (names: string[], valuesOf: Record<string, string>) =>
  names.map((name) => valuesOf[name] ?? "null").join(", ");

/**
 * One statement for a whole batch, with one parameter: `[[balanceAfter, …event's fields], …]` as
 * json. The flusher only concatenates the entries' text; Postgres builds the usage records, debits
 * and credits from the positions, parsing each entry once (`x->>0` and `x->1` would each parse it
 * again: json parsing was a fifth of Postgres's time per event). It answers, per org, the times of
 * the first and last debit it inserted (for the spend notification). `entries` is materialized on
 * purpose: inlined, each `e[n]` would split the entry's json again.
 *
 * Two forms. `skip` passes over rows whose id is there already, so replaying entries the flusher
 * wrote but could not ack (it died in between) changes nothing. `plain` has no `on conflict`: the
 * arbiter's look into the primary key before each insert was another fifth of Postgres's time
 * (perf, `ExecCheckIndexConstraints`), for replays that are rare; a batch that meets a row already
 * there fails whole (unique_violation) and is written again in the `skip` form.
 */
function batchSql(conflicts: "skip" | "plain"): [string, string] {
  const onConflict = conflicts === "skip" ? "on conflict (id) do nothing" : "";
  return `
with entries as materialized (
  select array(select json_array_elements_text(x)) as e
  from json_array_elements($batch::json) as x
), usage as (
  insert into usage_records (${Object.keys(USAGE_COLUMNS).join(", ")})
  select ${selectList(Object.keys(USAGE_COLUMNS), USAGE_COLUMNS)}
  from entries where e[2] = '${CALL_TAG}'
  ${onConflict}
), inserted as (
  insert into credit_transactions (${TRANSACTION_COLUMNS.join(", ")})
  select ${selectList(TRANSACTION_COLUMNS, DEBIT_COLUMNS)}
  from entries where e[2] = '${CALL_TAG}' and ${call("amount", "bigint")} > 0
  union all
  select ${selectList(TRANSACTION_COLUMNS, CREDIT_COLUMNS)}
  from entries where e[2] = '${CREDIT_TAG}'
  ${onConflict}
  returning org_id, transaction_type, created_at
)
select org_id,
  (extract(epoch from min(created_at)) * 1000)::bigint as first,
  (extract(epoch from max(created_at)) * 1000)::bigint as last
from inserted where transaction_type = 'debit' group by org_id`.split("$batch") as [string, string];
}
const BATCH_SQL = { skip: batchSql("skip"), plain: batchSql("plain") };

/** The rows of a raw query's result: postgres.js answers an array, PGlite an object with `rows`. */
function rowsOf<T>(result: unknown): T[] {
  if (Array.isArray(result)) return result as T[];
  return ((result as { rows?: T[] } | undefined)?.rows ?? []) as T[];
}

/** What a postgres.js client (or transaction) offers that this file uses. */
interface PostgresJsClient {
  unsafe(query: string, params: unknown[], options: { prepare: boolean }): Promise<unknown>;
}

/**
 * Runs the batch statement as a named prepared statement when the driver is postgres.js: drizzle
 * prepares only queries given a name, and this one is parsed, analysed and planned in ~1 ms, a fixed
 * cost per batch that was ~14 µs of Postgres CPU per event at the ~75-event batches a flusher makes
 * at 1,500 calls/s (bench/ledger-pg.ts). drizzle keeps its postgres.js client on the session of a db
 * or transaction; PGlite's has no `unsafe` and goes through drizzle as before.
 */
function executeBatch(tx: Db, param: string, conflicts: "skip" | "plain"): Promise<unknown> {
  const [head, tail] = BATCH_SQL[conflicts];
  const client = (tx as unknown as { session?: { client?: Partial<PostgresJsClient> } }).session?.client;
  if (typeof client?.unsafe === "function") {
    return (client as PostgresJsClient).unsafe(`${head}$1${tail}`, [param], { prepare: true });
  }
  return tx.execute(sql`${sql.raw(head)}${param}${sql.raw(tail)}`);
}

/** The batch parameter, by concatenation: the events are JSON already. */
function batchParameter(batch: LedgerRecord[]): string {
  const parts: string[] = [];
  // An encoded event is a JSON array: the balance goes in front of its first field.
  for (const r of batch) parts.push(`[${r.balanceAfter ?? "null"},${r.event.slice(1)}`);
  return `[${parts.join(",")}]`;
}

/**
 * Writes a batch of ledger records in one transaction: the rows in one statement, then, for the
 * orgs whose newly inserted debits take the billing month past notifyThreshold, the outbox row of
 * the month's notification. A replayed batch inserts no row, so it notifies nobody twice.
 */
export async function writeLedgerBatch(db: Db, batch: LedgerRecord[]): Promise<void> {
  if (batch.length === 0) return;
  const param = batchParameter(batch);
  try {
    await writeBatch(db, param, "plain");
  } catch (err) {
    // A row of the batch is there already (a replay): nothing was written; again, skipping those.
    if (sqlState(err) !== UNIQUE_VIOLATION) throw err;
    await writeBatch(db, param, "skip");
  }
}

const UNIQUE_VIOLATION = "23505";

async function writeBatch(db: Db, param: string, conflicts: "skip" | "plain"): Promise<void> {
  await db.transaction(async (tx) => {
    const inserted = await executeBatch(tx, param, conflicts);
    // The first and last debit of each org stand for all of it: a batch spans a fraction of a
    // second, so at most the two billing months they fall in.
    const debits: CommittedDebit[] = [];
    for (const row of rowsOf<{ org_id: string; first: string | number; last: string | number }>(inserted)) {
      debits.push({ orgId: row.org_id, endedAt: Number(row.first) });
      if (row.last !== row.first) debits.push({ orgId: row.org_id, endedAt: Number(row.last) });
    }
    // In the same transaction as the debits that cross the threshold: a crash loses neither.
    if (debits.length) await enqueueSpendNotifications(tx, debits);
  });
}

/** Whether the ledger already holds the call's usage record (every settled call has one). */
export async function callRecorded(db: Db, requestId: string): Promise<boolean> {
  const [row] = await db
    .select({ id: usageRecords.id })
    .from(usageRecords)
    .where(eq(usageRecords.id, requestId))
    .limit(1);
  return row !== undefined;
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

/**
 * A page of the org's transactions, newest first, and how many there are in all, counted up to
 * `countAtMost` when given (a count that reaches it means "at least that many").
 */
export async function listTransactions(
  db: Db,
  filter: TransactionFilter,
  page: { size: number; page: number; countAtMost?: number },
): Promise<{ rows: CreditTransactionRow[]; total: number }> {
  const where = filterWhere(filter);
  const counted =
    page.countAtMost === undefined
      ? db.select({ n: sql<string>`count(*)` }).from(creditTransactions).where(where)
      : db.select({ n: sql<string>`count(*)` }).from(
          db
            .select({ one: sql`1`.as("one") })
            .from(creditTransactions)
            .where(where)
            .limit(page.countAtMost)
            .as("capped"),
        );
  const [rows, [count]] = await Promise.all([
    db
      .select()
      .from(creditTransactions)
      .where(where)
      .orderBy(desc(creditTransactions.createdAt), desc(creditTransactions.id))
      .limit(page.size)
      .offset(page.size * (page.page - 1)),
    counted,
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
