import type { Nanos } from "../pricing/money.ts";
import type { RateCheck, RateCorrection, RateState } from "./rate-limit.ts";

/**
 * The metering store: balances, holds and the ledger stream. Redis in production (src/metering/
 * redis-store.ts, Lua scripts in ./lua), in process for a single embedded instance (memory-store.ts);
 * both pass the same contract tests (test/metering/store.test.ts). Pick one with createMeteringStore
 * (./index.ts).
 *
 * Money is integer nanodollars in safe integers; a fraction or an unsafe integer is a bug in the
 * caller and throws (assertNanos) before anything is written.
 *
 * Overspend bound: reserve admits a call only while balance − held ≥ its hold, and settle always
 * succeeds, so a balance goes below zero only by what calls cost beyond their holds: at most the
 * sum, over the calls in flight, of (actual cost − hold) for those that overran; for one call, its
 * own excess. Holds are estimated high (see estimateReservation), so an overrun needs a prompt
 * denser than 2.5 bytes per token or an upstream that ignores max_tokens. The bound assumes a hold
 * outlives its call: a hold reclaimed by reclaimExpired while its call is still running (a call
 * longer than HOLD_TTL_MS) no longer counts, and that call's whole cost, not just its excess, can
 * then land below zero.
 *
 * Idempotency: settled request ids and applied credit ids are remembered for DONE_TTL_SECONDS, so a
 * late repeat (a retry after a timeout, a settle after its hold was reclaimed) changes nothing.
 * Request ids and credit ids must be unique across orgs (they are UUIDs and transaction ids).
 */
export interface MeteringStore {
  readonly kind: "redis" | "cluster" | "memory" | "durable_object";
  /**
   * Holds `amount` for `requestId` iff balance − held ≥ amount. Idempotent by requestId: a repeat
   * of a held or settled request is admitted again without holding more. not_loaded: the store has
   * no balance for the org; load it from Postgres (loadBalance) and retry, never admit against it.
   */
  reserve(r: {
    orgId: string;
    requestId: string;
    amount: Nanos;
    ttlMs: number;
    nowMs: number;
    /** The org's monthly budget: spend this billing month + held + amount may not pass `max`. */
    budget?: { monthStart: number; max: Nanos };
    /**
     * Rate limits (./rate-limit.ts), checked and counted in the same atomic step, after the credit
     * checks: a call refused for credits counts nothing, one refused for rate holds nothing, and an
     * idempotent repeat is counted once. Absent, or every limit null: no rate step.
     */
    rate?: RateCheck;
  }): Promise<ReserveOutcome>;
  /**
   * Holds up to `count` holds of `amount` each for calls not made yet (a gateway's hold
   * pool, ./hold-pool.ts), under reserve's rule (balance − held covers each, and the monthly budget
   * counts them), taking at most 1/`share` of the free balance. A call then settles with its pooled
   * hold's id (settle's `holdId`), or the hold is released, or it expires like any call's; the
   * holds of a batch share one expiry entry, which the settle of the last goes with (`lastOfBatch`)
   * or reclaim removes. Optional: a store reached without a round trip (in
   * process) has no use for it.
   */
  reserveMany?(r: {
    orgId: string;
    /** Unique: the holds are named pooledHoldId(batchId, granted, 1..granted). */
    batchId: string;
    count: number;
    amount: Nanos;
    share: number;
    ttlMs: number;
    nowMs: number;
    budget?: { monthStart: number; max: Nanos };
  }): Promise<{ ok: true; granted: number } | { ok: false; reason: "not_loaded" }>;
  /**
   * False while the store is known to be unreachable (its connection is down): holds made ahead are
   * not used then, so a call is admitted only by a store that answers. Optional: always reachable.
   */
  reachable?(): boolean;
  /**
   * The rate step alone, for calls that reserve nothing (BYO): the same check and count as reserve's.
   * The caller runs it only when a limit is set.
   */
  admitRate(r: { orgId: string; rate: RateCheck; nowMs: number }): Promise<{ ok: boolean; rate: RateState }>;
  /**
   * Corrects the token count of the window a call was admitted in by (actual − estimated) tokens;
   * nothing when that window has ended. Not money: it need not be atomic with the settle.
   */
  settleRate(c: RateCorrection): Promise<void>;
  /**
   * Releases the hold (if any), debits `cost` (settle always succeeds, even below zero) and appends
   * `event` to the ledger, atomically. Idempotent by requestId: a repeat changes nothing and says
   * duplicate. A cost of 0 debits nothing but still appends the event: it is the call's usage record.
   * not_loaded only when the store lost the org's balance since the reserve (Redis restarted empty).
   */
  settle(s: {
    orgId: string;
    requestId: string;
    cost: Nanos;
    event: string;
    /** Start of the billing month the call was admitted in; its spend counts there. */
    monthStart?: number;
    /** The org's auto-recharge threshold: the settle that first takes the balance below it says rebuy. */
    rebuyBelow?: Nanos;
    /**
     * The pending recharge is a lease, not a flag (issue 11): a settle that says rebuy holds it until
     * nowMs + ttlMs, and a crossing settle after that takes it again, so a gateway that died (or lost
     * Redis) during the payment call does not turn auto-recharge off for good. Without it the lease
     * never ends (the old flag). Added with issue 11 (money).
     */
    rebuyLease?: { nowMs: number; ttlMs: number };
    /** The hold the call was admitted with, when it is not its request id (a pooled hold). */
    holdId?: string;
    /** A pooled hold, the last of its batch still held: the batch's expiry entry goes with it. */
    lastOfBatch?: boolean;
  }): Promise<SettleOutcome>;
  /** Ends a pending auto-recharge (paid or failed), so the next crossing may request another. */
  clearRebuy(orgId: string): Promise<void>;
  /** Voids a hold whose call never started: no debit, no ledger event. Idempotent. */
  release(r: { orgId: string; requestId: string }): Promise<void>;
  /** Adds credits and appends `event`; idempotent by creditId (a repeat reports the first amount). */
  credit(c: { orgId: string; creditId: string; amount: Nanos; event: string }): Promise<CreditOutcome>;
  /** Appends an event that moves no money (a BYO call's usage). */
  appendEvent(e: { orgId: string; event: string }): Promise<void>;
  /**
   * Sets the balance iff the store has none (after a restart without persistence), and with it the
   * spend of the billing month starting at `month.start` (what reserve's budget check counts).
   */
  loadBalance(l: {
    orgId: string;
    balance: Nanos;
    month?: { start: number; spend: Nanos };
  }): Promise<boolean>;
  getBalance(orgId: string): Promise<{ balance: Nanos; held: Nanos } | null>;
  /** Releases every hold and trial slot whose TTL passed; returns how many. */
  reclaimExpired(nowMs: number): Promise<number>;
  /**
   * BYO trial limits, held like money: admits a call and holds a slot for its response iff its plan
   * is one of at most maxPlans plans (a plan counts while it has a confirmed or an in-flight
   * response) and the plan's confirmed + in-flight responses are below maxPerPlan, so concurrent
   * calls cannot overshoot either limit. Idempotent by requestId. A slot not ended within ttlMs (its
   * gateway died) is released by reclaimExpired.
   */
  holdTrialResponse(t: {
    orgId: string;
    planId: string;
    requestId: string;
    maxPlans: number;
    maxPerPlan: number;
    ttlMs: number;
    nowMs: number;
  }): Promise<TrialVerdict>;
  /**
   * Sets the org's confirmed trial responses per plan from Postgres (usage_records) when the store
   * has not had them since it lost its data (holdTrialResponse said not_loaded), as loadBalance does
   * for balances. A count already there is raised to the given one, never lowered (the store's own
   * count includes responses Postgres has not seen yet). Marks the trial as loaded either way.
   * Added with issue 11 (money): the Durable Object store keeps its counters in storage, so it may
   * never say not_loaded and can implement this as a no-op that returns false.
   */
  loadTrial(l: { orgId: string; plans: Record<string, number> }): Promise<boolean>;
  /**
   * The store's data epoch: a random value kept in the store, made anew when the store finds none
   * (it lost its data: Redis restarted empty). Each instance polls it off the hot path; a change
   * makes it replay the settles Postgres does not have yet (src/metering/spool.ts). Added with issue
   * 11 (money): a store that cannot lose acknowledged data (a Durable Object) returns a constant.
   */
  epoch(): Promise<string>;
  /**
   * Ends a BYO trial call and appends its usage event, atomically: `answered` confirms its slot (a
   * model response, counted for good); otherwise the slot is released, and a plan left with no
   * confirmed or in-flight response stops counting. Idempotent by requestId: once the slot is ended
   * (or reclaimed) a repeat counts nothing; the event is appended either way (the flusher writes it
   * once). Returns whether a slot was ended.
   */
  endTrialResponse(t: {
    orgId: string;
    requestId: string;
    answered: boolean;
    event: string;
  }): Promise<boolean>;
  /**
   * New ledger entries for this consumer across all shards, about `count` of them (a little more
   * when the budget splits unevenly over shards); waits up to about blockMs when there are none.
   */
  readLedger(r: { group: string; consumer: string; count: number; blockMs: number }): Promise<LedgerEntry[]>;
  /** Acknowledges and deletes entries written to Postgres. */
  ackLedger(group: string, entries: LedgerEntry[]): Promise<void>;
  /** Takes over entries another consumer read but did not ack within minIdleMs (it died). */
  claimStaleLedger(r: {
    group: string;
    consumer: string;
    minIdleMs: number;
    count: number;
  }): Promise<LedgerEntry[]>;
  /** Unflushed (not yet acked) entries and the time (ms since epoch) the oldest was appended. */
  ledgerLag(): Promise<{ length: number; oldestMs: number | null }>;
  /** Removes every key of an org (account deletion). */
  purgeOrg(orgId: string): Promise<void>;
  close(): Promise<void>;
}

export type ReserveOutcome =
  | { ok: true; balance: Nanos; held: Nanos; rate?: RateState }
  | { ok: false; reason: "rate_limited"; balance: Nanos; held: Nanos; rate: RateState }
  | { ok: false; reason: "insufficient_credits"; balance: Nanos; held: Nanos }
  | { ok: false; reason: "monthly_max_reached"; balance: Nanos; held: Nanos }
  | { ok: false; reason: "not_loaded" };

export type SettleOutcome =
  | { ok: true; balance: Nanos; duplicate: boolean; rebuy?: boolean }
  | { ok: false; reason: "not_loaded" };

export type CreditOutcome =
  | { ok: true; balance: Nanos; duplicate: boolean; amount: Nanos }
  | { ok: false; reason: "not_loaded" };

export type TrialVerdict =
  | { ok: true }
  | { ok: false; reason: "trial_plans_exceeded" | "trial_messages_exceeded" }
  /** The store has not had this org's trial counters since it lost its data: loadTrial, then retry. */
  | { ok: false; reason: "not_loaded" };

/** One ledger stream entry: the event, and the balance right after it (undefined when no money moved). */
export interface LedgerEntry {
  shard: number;
  id: string;
  event: string;
  balance: Nanos | undefined;
}

/** A pooled hold's id: "hp:<batch>:<n>:<i>", the i-th of the n holds of a batch (i from 1). */
export const pooledHoldId = (batchId: string, n: number, i: number): string => `hp:${batchId}:${n}:${i}`;

/** The batch a pooled hold belongs to, "hpb:<batch>:<n>" (its expiry entry); undefined for a call's own. */
export function pooledBatchOf(holdId: string): string | undefined {
  if (!holdId.startsWith("hp:")) return undefined;
  return `hpb:${holdId.slice(3, holdId.lastIndexOf(":"))}`;
}

/** Orgs are spread over a fixed number of shards; an org's keys and its shard's stream share a hash tag. */
export const SHARDS = 16;

export function shardOf(orgId: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < orgId.length; i++) {
    h ^= orgId.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return (h >>> 0) % SHARDS;
}

/**
 * How long settled request ids and credit ids are remembered, so late repeats change nothing. Each
 * is a Redis key of about 170 bytes, one per call, so this bounds Redis's memory: an hour of calls
 * (60 MB at 100 calls/s; a week was 10 GB). Repeats later than that are caught in Postgres: a spooled
 * settle is replayed only if its call is not in the ledger, and a credit only if its transaction is not.
 */
export const DONE_TTL_SECONDS = 3600;

/**
 * Rejects an amount that is not a safe integer of nanodollars (or is below `min`). In Redis a
 * fraction would make HINCRBY fail halfway through a script, after some of its writes, and Redis
 * does not roll a script back: so amounts are checked before they are sent.
 */
export function assertNanos(what: string, n: number, min = Number.MIN_SAFE_INTEGER): void {
  if (!Number.isSafeInteger(n) || n < min) {
    throw new RangeError(`${what} must be a safe integer of nanodollars ≥ ${min}, got ${n}`);
  }
}
