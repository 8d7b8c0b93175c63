import { DurableObject, type SqlStorage } from "cloudflare:workers";
import { createLogger, type Logger } from "../core/log.ts";
import { writeLedgerBatch } from "../db/ledger.ts";
import { openPostgres } from "../db/postgres.ts";
import type { Nanos } from "../pricing/money.ts";
import { hasLimits, RateCounters, type RateState, type RateWindow, type RateWindows } from "./rate-limit.ts";
import {
  assertNanos,
  type CreditOutcome,
  DONE_TTL_SECONDS,
  type MeteringStore,
  type ReserveOutcome,
  type SettleOutcome,
  type TrialVerdict,
} from "./store.ts";

/** What the object reads from the Worker's bindings. */
export interface OrgMeterEnv {
  /** Hyperdrive in front of Postgres (wrangler.toml); preferred over DATABASE_URL. */
  HYPERDRIVE?: { connectionString: string };
  DATABASE_URL?: string;
  LOG_LEVEL?: string;
}

/** The object's methods as a stub (an RPC client in another isolate or colo) sees them. */
export type OrgMeterRpc = {
  [K in keyof OrgMeter as K extends `op${string}` ? K : never]: OrgMeter[K] extends (...a: infer A) => infer R
    ? (...a: A) => Promise<Awaited<R>>
    : never;
};

/** Arguments of the store's operations, less the org (the object is the org). */
type Args<K extends keyof MeteringStore> = MeteringStore[K] extends (a: infer A) => unknown
  ? Omit<A, "orgId">
  : never;

/** Outbox rows written per Postgres transaction. */
const FLUSH_BATCH = 500;
/** How soon after an event is appended the alarm writes it (batches the events of a burst). */
const FLUSH_DELAY_MS = 200;
const RETRY_MAX_MS = 60_000;

const SCHEMA = [
  // One row once the balance is loaded; none before (reserve then answers not_loaded).
  // rebuy_until: when the pending auto-recharge's lease ends (ms); null when none is pending.
  "create table if not exists org (k integer primary key check (k = 1), bal integer not null, held integer not null, rebuy_until integer)",
  "create table if not exists holds (id text primary key, amount integer not null, expires integer not null)",
  "create index if not exists holds_expires on holds (expires)",
  "create table if not exists month_spend (start integer primary key, spend integer not null)",
  "create table if not exists done (id text primary key, amount integer not null, at integer not null)",
  "create index if not exists done_at on done (at)",
  "create table if not exists trial_plans (plan text primary key, confirmed integer not null, in_flight integer not null)",
  "create table if not exists trial_slots (id text primary key, plan text not null, expires integer not null)",
  "create index if not exists trial_slots_expires on trial_slots (expires)",
  "create table if not exists outbox (seq integer primary key autoincrement, event text not null, balance integer, at integer not null)",
  // One row once the trial counters were loaded from Postgres (loadTrial); none before.
  "create table if not exists trial_loaded (k integer primary key check (k = 1))",
  // The rate limit windows of the org and of its keys (RateCounters), one row per scope.
  "create table if not exists rate_windows (id text primary key, start integer not null, requests integer not null, tokens integer not null)",
];

/** The org's rate scope in RateCounters: the object is the org, so it need not know the org's id. */
const ORG_SCOPE = "org";

type Row = Record<string, string | number | null>;

/**
 * One org's metering state, in a SQLite-backed Durable Object addressed by `idFromName(orgId)`:
 * the same semantics as the Redis scripts (src/metering/lua), and the same contract
 * (MeteringStore). Each operation is one `transactionSync`, with no await between its reads and its
 * writes, and a Durable Object runs one such call at a time, so every isolate and colo that
 * reserves, settles or credits for the org sees one balance.
 *
 * Ledger events go to an outbox table in the same transaction as the money they record; the alarm
 * writes them to Postgres (src/db/ledger.ts, idempotent by event id) and deletes them only after
 * the commit, so a failed or repeated flush loses and duplicates nothing. The alarm also releases
 * expired holds and trial slots and forgets done markers older than DONE_TTL_SECONDS.
 */
export class OrgMeter extends DurableObject<OrgMeterEnv> {
  private readonly sql: SqlStorage;
  private readonly log: Logger;
  /** When the alarm is set for (null: none); kept here so each operation need not ask storage. */
  private alarmAt: number | null = null;
  private failures = 0;
  /** The org's and its keys' rate windows, kept in the object's SQLite (exact: one object per org). */
  private readonly rates: RateCounters;

  constructor(ctx: DurableObject<OrgMeterEnv>["ctx"], env: OrgMeterEnv) {
    super(ctx, env);
    this.sql = ctx.storage.sql;
    this.rates = new RateCounters(this.rateWindows());
    const level = (["debug", "info", "warn", "error", "silent"] as const).find((l) => l === env.LOG_LEVEL);
    this.log = createLogger(level ?? "info", (line) => console.log(line.trimEnd()));
    void ctx.blockConcurrencyWhile(async () => {
      for (const statement of SCHEMA) this.sql.exec(statement);
      this.alarmAt = await ctx.storage.getAlarm();
    });
  }

  private row<T extends Row>(query: string, ...bindings: (string | number | null)[]): T | undefined {
    return this.sql.exec<T>(query, ...bindings).toArray()[0];
  }

  private org(): { bal: number; held: number; rebuy_until: number | null } | undefined {
    return this.row<{ bal: number; held: number; rebuy_until: number | null }>(
      "select bal, held, rebuy_until from org",
    );
  }

  /** RateCounters' windows as rows; written inside the transaction of the operation that counts. */
  private rateWindows(): RateWindows {
    return {
      get: (id) =>
        this.row<RateWindow & Row>("select start, requests, tokens from rate_windows where id = ?", id),
      set: (id, w) => {
        this.sql.exec(
          "insert into rate_windows (id, start, requests, tokens) values (?, ?, ?, ?) on conflict (id) do update set start = excluded.start, requests = excluded.requests, tokens = excluded.tokens",
          id,
          w.start,
          w.requests,
          w.tokens,
        );
      },
      // An org has a handful of keys: the table stays small, and the alarm would not otherwise run.
      sweep: (start) => void this.sql.exec("delete from rate_windows where start < ?", start),
    };
  }

  private isDone(id: string): { amount: number } | undefined {
    return this.row<{ amount: number }>("select amount from done where id = ?", id);
  }

  private append(event: string, balance: number | null): void {
    this.sql.exec("insert into outbox (event, balance, at) values (?, ?, ?)", event, balance, Date.now());
    this.wake(Date.now() + FLUSH_DELAY_MS);
  }

  /** Sets the alarm for `at` unless it is set sooner already. */
  private wake(at: number): void {
    if (this.alarmAt !== null && this.alarmAt <= at) return;
    this.alarmAt = at;
    void this.ctx.storage.setAlarm(at);
  }

  opReserve({ requestId, amount, ttlMs, nowMs, budget, rate }: Args<"reserve">): ReserveOutcome {
    assertNanos("reserve amount", amount, 0);
    const outcome = this.ctx.storage.transactionSync((): ReserveOutcome => {
      const org = this.org();
      if (!org) return { ok: false, reason: "not_loaded" };
      const known = this.isDone(requestId) ?? this.row("select 1 from holds where id = ?", requestId);
      if (known) return { ok: true, balance: org.bal, held: org.held };
      if (org.bal - org.held < amount)
        return { ok: false, reason: "insufficient_credits", balance: org.bal, held: org.held };
      if (budget) {
        const spent = this.row<{ spend: number }>(
          "select spend from month_spend where start = ?",
          budget.monthStart,
        );
        if ((spent?.spend ?? 0) + org.held + amount > budget.max)
          return { ok: false, reason: "monthly_max_reached", balance: org.bal, held: org.held };
      }
      // After the credit checks, as reserve.lua: a call refused for credits counts nothing.
      let state: RateState | undefined;
      if (rate && (hasLimits(rate.org) || hasLimits(rate.key))) {
        const admitted = this.rates.admit(ORG_SCOPE, rate, nowMs);
        if (!admitted.ok)
          return { ok: false, reason: "rate_limited", balance: org.bal, held: org.held, rate: admitted.rate };
        state = admitted.rate;
      }
      this.sql.exec(
        "insert into holds (id, amount, expires) values (?, ?, ?)",
        requestId,
        amount,
        nowMs + ttlMs,
      );
      this.sql.exec("update org set held = held + ?", amount);
      return state
        ? { ok: true, balance: org.bal, held: org.held + amount, rate: state }
        : { ok: true, balance: org.bal, held: org.held + amount };
    });
    if (outcome.ok) this.wake(nowMs + ttlMs);
    return outcome;
  }

  /** The rate step of a call that reserves nothing (BYO); the same check and count as opReserve's. */
  opAdmitRate({ rate, nowMs }: Args<"admitRate">): { ok: boolean; rate: RateState } {
    return this.ctx.storage.transactionSync(() => this.rates.admit(ORG_SCOPE, rate, nowMs));
  }

  opSettleRate(c: Args<"settleRate">): void {
    this.ctx.storage.transactionSync(() => this.rates.correct({ ...c, orgId: ORG_SCOPE }));
  }

  opSettle({ requestId, cost, event, monthStart, rebuyBelow, rebuyLease }: Args<"settle">): SettleOutcome {
    assertNanos("settle cost", cost, 0);
    return this.ctx.storage.transactionSync((): SettleOutcome => {
      const org = this.org();
      if (this.isDone(requestId)) return { ok: true, balance: org?.bal ?? 0, duplicate: true };
      if (!org) return { ok: false, reason: "not_loaded" };
      this.dropHold(requestId);
      const balance = org.bal - cost;
      if (cost > 0) {
        this.sql.exec("update org set bal = ?", balance);
        this.sql.exec(
          "insert into month_spend (start, spend) values (?, ?) on conflict (start) do update set spend = spend + excluded.spend",
          monthStart ?? 0,
          cost,
        );
      }
      this.append(event, balance);
      this.markDone(requestId, cost);
      // The rebuy lease: the settle that crosses the threshold while no lease is held takes it, until
      // nowMs + ttlMs; without rebuyLease it is held until clearRebuy (the old flag).
      const leaseNow = rebuyLease?.nowMs ?? 0;
      const rebuy = rebuyBelow !== undefined && balance < rebuyBelow && (org.rebuy_until ?? -1) < leaseNow;
      if (rebuy)
        this.sql.exec(
          "update org set rebuy_until = ?",
          rebuyLease ? leaseNow + rebuyLease.ttlMs : Number.MAX_SAFE_INTEGER,
        );
      return rebuy
        ? { ok: true, balance, duplicate: false, rebuy: true }
        : { ok: true, balance, duplicate: false };
    });
  }

  opClearRebuy(): void {
    this.ctx.storage.transactionSync(() => this.sql.exec("update org set rebuy_until = null"));
  }

  opRelease({ requestId }: Args<"release">): void {
    this.ctx.storage.transactionSync(() => this.dropHold(requestId));
  }

  opCredit({ creditId, amount, event }: Args<"credit">): CreditOutcome {
    assertNanos("credit amount", amount);
    return this.ctx.storage.transactionSync((): CreditOutcome => {
      const org = this.org();
      const first = this.isDone(creditId);
      if (first) return { ok: true, balance: org?.bal ?? 0, duplicate: true, amount: first.amount };
      if (!org) return { ok: false, reason: "not_loaded" };
      const balance = org.bal + amount;
      this.sql.exec("update org set bal = ?", balance);
      this.append(event, balance);
      this.markDone(creditId, amount);
      return { ok: true, balance, duplicate: false, amount };
    });
  }

  opAppendEvent({ event }: Args<"appendEvent">): void {
    this.ctx.storage.transactionSync(() => this.append(event, null));
  }

  opLoadBalance({ balance, month }: Args<"loadBalance">): boolean {
    assertNanos("balance", balance);
    if (month) assertNanos("month spend", month.spend, 0);
    return this.ctx.storage.transactionSync(() => {
      if (this.org()) return false;
      this.sql.exec("insert into org (k, bal, held, rebuy_until) values (1, ?, 0, null)", balance);
      if (month)
        this.sql.exec(
          "insert into month_spend (start, spend) values (?, ?) on conflict (start) do nothing",
          month.start,
          month.spend,
        );
      return true;
    });
  }

  opGetBalance(): { balance: Nanos; held: Nanos } | null {
    const org = this.org();
    return org ? { balance: org.bal, held: org.held } : null;
  }

  opReclaimExpired(nowMs: number): number {
    return this.ctx.storage.transactionSync(() => {
      let released = 0;
      for (const slot of this.sql.exec<{ id: string }>(
        "select id from trial_slots where expires <= ?",
        nowMs,
      )) {
        if (this.endSlot(slot.id, false)) released += 1;
      }
      for (const hold of this.sql
        .exec<{ id: string }>("select id from holds where expires <= ?", nowMs)
        .toArray()) {
        if (this.dropHold(hold.id)) released += 1;
      }
      this.sql.exec("delete from done where at < ?", nowMs - DONE_TTL_SECONDS * 1000);
      return released;
    });
  }

  opHoldTrialResponse({
    planId,
    requestId,
    maxPlans,
    maxPerPlan,
    ttlMs,
    nowMs,
  }: Args<"holdTrialResponse">): TrialVerdict {
    const verdict = this.ctx.storage.transactionSync((): TrialVerdict => {
      if (this.row("select 1 from trial_slots where id = ?", requestId)) return { ok: true };
      // A new object (or one purged) has no counts yet: the org may have trial responses in Postgres.
      if (!this.row("select 1 from trial_loaded")) return { ok: false, reason: "not_loaded" };
      const plan = this.row<{ confirmed: number; in_flight: number }>(
        "select confirmed, in_flight from trial_plans where plan = ?",
        planId,
      );
      const plans = this.row<{ n: number }>("select count(*) as n from trial_plans")?.n ?? 0;
      if (!plan && plans >= maxPlans) return { ok: false, reason: "trial_plans_exceeded" };
      if (plan && plan.confirmed + plan.in_flight >= maxPerPlan)
        return { ok: false, reason: "trial_messages_exceeded" };
      this.sql.exec(
        "insert into trial_plans (plan, confirmed, in_flight) values (?, 0, 1) on conflict (plan) do update set in_flight = in_flight + 1",
        planId,
      );
      this.sql.exec(
        "insert into trial_slots (id, plan, expires) values (?, ?, ?)",
        requestId,
        planId,
        nowMs + ttlMs,
      );
      return { ok: true };
    });
    if (verdict.ok) this.wake(nowMs + ttlMs);
    return verdict;
  }

  /** Raises the confirmed counts to Postgres's (never lowers them) and marks the trial loaded. */
  opLoadTrial({ plans }: Args<"loadTrial">): boolean {
    return this.ctx.storage.transactionSync(() => {
      for (const [planId, confirmed] of Object.entries(plans)) {
        this.sql.exec(
          "insert into trial_plans (plan, confirmed, in_flight) values (?, ?, 0) on conflict (plan) do update set confirmed = max(confirmed, excluded.confirmed)",
          planId,
          confirmed,
        );
      }
      const was = this.row("select 1 from trial_loaded") !== undefined;
      if (!was) this.sql.exec("insert into trial_loaded (k) values (1)");
      return !was;
    });
  }

  opEndTrialResponse({ requestId, answered, event }: Args<"endTrialResponse">): boolean {
    return this.ctx.storage.transactionSync(() => {
      const ended = this.endSlot(requestId, answered);
      this.append(event, null);
      return ended;
    });
  }

  opLedgerLag(): { length: number; oldestMs: number | null } {
    const row = this.row<{ n: number; oldest: number | null }>(
      "select count(*) as n, min(at) as oldest from outbox",
    );
    return { length: row?.n ?? 0, oldestMs: row?.oldest ?? null };
  }

  /** Forgets the org (account deletion); events still in the outbox are flushed first. */
  opPurge(): void {
    this.ctx.storage.transactionSync(() => {
      for (const table of [
        "org",
        "holds",
        "month_spend",
        "trial_plans",
        "trial_slots",
        "trial_loaded",
        "rate_windows",
      ]) {
        this.sql.exec(`delete from ${table}`);
      }
    });
  }

  /** Writes the outbox to Postgres now; what the alarm does (tests call it to drive a retry). */
  async opFlush(): Promise<number> {
    const url = this.env.HYPERDRIVE?.connectionString ?? this.env.DATABASE_URL;
    if (!url) throw new Error("no HYPERDRIVE binding nor DATABASE_URL: the ledger cannot be flushed");
    let written = 0;
    // A client per flush: workerd ties a connection to the event (here, the alarm) that opened it,
    // and closes it when the event ends (not end(): see src/db/scoped.ts).
    let database: ReturnType<typeof openPostgres> | undefined;
    for (;;) {
      const rows = this.sql
        .exec<{ seq: number; event: string; balance: number | null }>(
          "select seq, event, balance from outbox order by seq limit ?",
          FLUSH_BATCH,
        )
        .toArray();
      const last = rows[rows.length - 1];
      if (!last) return written;
      database ??= openPostgres(url, { poolSize: 1 });
      await writeLedgerBatch(
        database.db,
        rows.map((r) => ({ event: r.event, balanceAfter: r.balance ?? undefined })),
      );
      // Only after the commit: a failure above leaves the rows for the next try, and Postgres
      // skips the ids it already has if the commit landed but its answer was lost.
      this.sql.exec("delete from outbox where seq <= ?", last.seq);
      written += rows.length;
    }
  }

  override async alarm(): Promise<void> {
    this.alarmAt = null;
    const now = Date.now();
    const released = this.opReclaimExpired(now);
    if (released > 0) this.log.warn("reclaimed expired holds", { holds: released });
    try {
      await this.opFlush();
      this.failures = 0;
    } catch (err) {
      this.failures += 1;
      this.log.error("ledger flush failed; will retry", { err: String(err), failures: this.failures });
      this.wake(Date.now() + Math.min(RETRY_MAX_MS, 1_000 * 2 ** (this.failures - 1)));
    }
    this.scheduleNext();
  }

  /** The alarm's next time: the outbox's flush, and the first hold, slot or done marker to expire. */
  private scheduleNext(): void {
    const next = this.row<{ at: number | null }>(
      `select min(at) as at from (
         select min(expires) as at from holds
         union all select min(expires) from trial_slots
         union all select min(at) + ? from done
         union all select case when exists (select 1 from outbox) then ? end)`,
      DONE_TTL_SECONDS * 1000,
      Date.now() + FLUSH_DELAY_MS,
    )?.at;
    if (next !== null && next !== undefined) this.wake(Math.max(next, Date.now()));
  }

  private dropHold(requestId: string): boolean {
    const hold = this.row<{ amount: number }>("select amount from holds where id = ?", requestId);
    if (!hold) return false;
    this.sql.exec("delete from holds where id = ?", requestId);
    this.sql.exec("update org set held = held - ?", hold.amount);
    return true;
  }

  private markDone(id: string, amount: number): void {
    this.sql.exec("insert into done (id, amount, at) values (?, ?, ?)", id, amount, Date.now());
  }

  /** Confirms or releases a trial slot; a plan left with nothing confirmed or in flight stops counting. */
  private endSlot(requestId: string, answered: boolean): boolean {
    const slot = this.row<{ plan: string }>("select plan from trial_slots where id = ?", requestId);
    if (!slot) return false;
    this.sql.exec("delete from trial_slots where id = ?", requestId);
    this.sql.exec(
      "update trial_plans set in_flight = max(in_flight - 1, 0), confirmed = confirmed + ? where plan = ?",
      answered ? 1 : 0,
      slot.plan,
    );
    this.sql.exec("delete from trial_plans where plan = ? and confirmed = 0 and in_flight = 0", slot.plan);
    return true;
  }
}
