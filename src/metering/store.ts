import type { Nanos } from "../pricing/money.ts";

/**
 * The metering store: balances, holds and the ledger stream. Redis in production (src/metering/
 * redis-store.ts, Lua scripts in ./lua), in process for a single embedded instance (memory-store.ts);
 * both pass the same contract tests.
 *
 * Overspend bound: reserve admits a call only while balance − held ≥ its hold, and settle always
 * succeeds, so a balance goes below zero only by what calls cost beyond their holds: at most the
 * sum, over the calls in flight, of (actual cost − hold) for those that overran; for one call, its
 * own excess. Holds are estimated high (see estimateReservation), so an overrun needs a prompt
 * denser than 2.5 bytes per token or an upstream that ignores max_tokens.
 */
export interface MeteringStore {
  readonly kind: "redis" | "cluster" | "memory";
  /** Holds `amount` for `requestId` iff balance − held ≥ amount. Idempotent by requestId. */
  reserve(r: {
    orgId: string;
    requestId: string;
    amount: Nanos;
    ttlMs: number;
    nowMs: number;
  }): Promise<ReserveOutcome>;
  /**
   * Releases the hold (if any), debits `cost` (settle always succeeds, even below zero) and appends
   * `event` to the ledger, atomically. Idempotent by requestId.
   */
  settle(s: { orgId: string; requestId: string; cost: Nanos; event: string }): Promise<SettleOutcome>;
  /** Voids a hold whose call never started. */
  release(r: { orgId: string; requestId: string }): Promise<void>;
  /** Adds credits and appends `event`; idempotent by creditId (a repeat reports the first amount). */
  credit(c: { orgId: string; creditId: string; amount: Nanos; event: string }): Promise<CreditOutcome>;
  /** Appends an event that moves no money (a BYO call's usage). */
  appendEvent(e: { orgId: string; event: string }): Promise<void>;
  /** Sets the balance iff the store has none (after a restart without persistence). */
  loadBalance(l: { orgId: string; balance: Nanos }): Promise<boolean>;
  getBalance(orgId: string): Promise<{ balance: Nanos; held: Nanos } | null>;
  /** Releases every hold whose TTL passed; returns how many. */
  reclaimExpired(nowMs: number): Promise<number>;
  /** BYO trial limits: admits and counts a response iff within maxPlans plans and maxPerPlan per plan. */
  countTrialResponse(t: {
    orgId: string;
    planId: string;
    maxPlans: number;
    maxPerPlan: number;
  }): Promise<TrialVerdict>;
  /** New ledger entries for this consumer (blockMs 0: don't wait). */
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
  /** Unflushed entries and the age of the oldest. */
  ledgerLag(): Promise<{ length: number; oldestMs: number | null }>;
  /** Removes every key of an org (account deletion). */
  purgeOrg(orgId: string): Promise<void>;
  close(): Promise<void>;
}

export type ReserveOutcome =
  | { ok: true; balance: Nanos; held: Nanos }
  | { ok: false; reason: "insufficient_credits"; balance: Nanos; held: Nanos }
  | { ok: false; reason: "not_loaded" };

export type SettleOutcome =
  | { ok: true; balance: Nanos; duplicate: boolean }
  | { ok: false; reason: "not_loaded" };

export type CreditOutcome =
  | { ok: true; balance: Nanos; duplicate: boolean; amount: Nanos }
  | { ok: false; reason: "not_loaded" };

export type TrialVerdict =
  | { ok: true }
  | { ok: false; reason: "trial_plans_exceeded" | "trial_messages_exceeded" };

/** One ledger stream entry: the event, and the balance right after it (undefined when no money moved). */
export interface LedgerEntry {
  shard: number;
  id: string;
  event: string;
  balance: Nanos | undefined;
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

/** How long settled request ids and credit ids are remembered, so late repeats change nothing. */
export const DONE_TTL_SECONDS = 7 * 24 * 3600;
