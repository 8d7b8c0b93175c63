import { randomUUID } from "node:crypto";
import { hasLimits, RateCounters, type RateState } from "./rate-limit.ts";
import { assertNanos, DONE_TTL_SECONDS, type LedgerEntry, type MeteringStore } from "./store.ts";

interface OrgState {
  bal: number;
  held: number;
  holds: Map<string, { amount: number; expires: number }>;
}

interface TrialState {
  /** Counters set from Postgres since this store started (loadTrial): a new process starts empty. */
  loaded: boolean;
  plans: Map<string, { confirmed: number; inFlight: number }>;
  slots: Map<string, { planId: string; expires: number }>;
}

interface StreamEntry {
  id: string;
  event: string;
  balance: number | undefined;
  at: number;
}

/**
 * The metering store of a single embedded instance (no REDIS_URL): the same semantics as the Redis
 * scripts, each operation atomic because it runs to completion on the event loop. The state lives
 * in this process only; the ledger is flushed to the database like Redis's.
 */
export function createMemoryStore(): MeteringStore {
  /** Everything here dies with the process: each store is an epoch of its own. */
  const epoch = randomUUID();
  /** Orgs with an auto-recharge requested and not yet paid or failed → when its lease ends (ms). */
  const rebuyPending = new Map<string, number>();
  /** Spend per org and billing month ("orgId:monthStart"). */
  const monthSpend = new Map<string, number>();
  const orgs = new Map<string, OrgState>();
  // Settled request ids and applied credit ids → amount, in the order they were done, forgotten
  // after DONE_TTL_SECONDS as Redis's markers are, so a long-lived process does not grow forever.
  const done = new Map<string, { amount: number; at: number }>();
  const markDone = (id: string, amount: number) => {
    const now = Date.now();
    for (const [old, mark] of done) {
      if (now - mark.at < DONE_TTL_SECONDS * 1000) break;
      done.delete(old);
    }
    done.set(id, { amount, at: now });
  };
  /** BYO trial orgs: per plan its confirmed and in-flight responses, and the slots in flight. */
  const trial = new Map<string, TrialState>();
  const trialOf = (orgId: string): TrialState => {
    let state = trial.get(orgId);
    if (!state) {
      state = { loaded: false, plans: new Map(), slots: new Map() };
      trial.set(orgId, state);
    }
    return state;
  };
  /** Ends a slot: confirmed, or released (a plan left with nothing stops counting). */
  const endSlot = (state: TrialState, requestId: string, answered: boolean): boolean => {
    const slot = state.slots.get(requestId);
    if (!slot) return false;
    state.slots.delete(requestId);
    const plan = state.plans.get(slot.planId) ?? { confirmed: 0, inFlight: 1 };
    plan.inFlight -= 1;
    if (answered) plan.confirmed += 1;
    if (plan.confirmed === 0 && plan.inFlight <= 0) state.plans.delete(slot.planId);
    return true;
  };
  const rates = new RateCounters();
  const stream: StreamEntry[] = [];
  const pending = new Map<string, { entry: StreamEntry; consumer: string; since: number }>();
  let seq = 0;
  const waiters: Array<() => void> = [];

  const append = (event: string, balance: number | undefined) => {
    const at = Date.now();
    stream.push({ id: `${at}-${seq++}`, event, balance, at });
    for (const w of waiters.splice(0)) w();
  };
  const toEntry = (orgEntry: StreamEntry): LedgerEntry => ({
    shard: 0,
    id: orgEntry.id,
    event: orgEntry.event,
    balance: orgEntry.balance,
  });
  const take = (consumer: string, count: number): LedgerEntry[] => {
    const taken = stream.splice(0, count);
    const now = Date.now();
    for (const entry of taken) pending.set(entry.id, { entry, consumer, since: now });
    return taken.map(toEntry);
  };

  return {
    kind: "memory",

    async reserve({ orgId, requestId, amount, ttlMs, nowMs, budget, rate }) {
      assertNanos("reserve amount", amount, 0);
      const org = orgs.get(orgId);
      if (!org) return { ok: false, reason: "not_loaded" };
      if (done.has(requestId) || org.holds.has(requestId))
        return { ok: true, balance: org.bal, held: org.held };
      if (org.bal - org.held < amount) {
        return { ok: false, reason: "insufficient_credits", balance: org.bal, held: org.held };
      }
      if (budget && (monthSpend.get(`${orgId}:${budget.monthStart}`) ?? 0) + org.held + amount > budget.max) {
        return { ok: false, reason: "monthly_max_reached", balance: org.bal, held: org.held };
      }
      let state: RateState | undefined;
      if (rate && (hasLimits(rate.org) || hasLimits(rate.key))) {
        const admitted = rates.admit(orgId, rate, nowMs);
        if (!admitted.ok)
          return { ok: false, reason: "rate_limited", balance: org.bal, held: org.held, rate: admitted.rate };
        state = admitted.rate;
      }
      org.holds.set(requestId, { amount, expires: nowMs + ttlMs });
      org.held += amount;
      return state
        ? { ok: true, balance: org.bal, held: org.held, rate: state }
        : { ok: true, balance: org.bal, held: org.held };
    },

    async admitRate({ orgId, rate, nowMs }) {
      return rates.admit(orgId, rate, nowMs);
    },

    async settleRate(c) {
      rates.correct(c);
    },

    async settle({ orgId, requestId, cost, event, monthStart, rebuyBelow, rebuyLease, holdId = requestId }) {
      assertNanos("settle cost", cost, 0);
      const org = orgs.get(orgId);
      if (done.has(requestId)) return { ok: true, balance: org?.bal ?? 0, duplicate: true };
      if (!org) return { ok: false, reason: "not_loaded" };
      const hold = org.holds.get(holdId);
      if (hold) {
        org.holds.delete(holdId);
        org.held -= hold.amount;
      }
      if (cost > 0) {
        org.bal -= cost;
        const month = `${orgId}:${monthStart ?? 0}`;
        monthSpend.set(month, (monthSpend.get(month) ?? 0) + cost);
      }
      append(event, org.bal);
      markDone(requestId, cost);
      const leaseNow = rebuyLease?.nowMs ?? 0;
      const rebuy =
        rebuyBelow !== undefined && org.bal < rebuyBelow && (rebuyPending.get(orgId) ?? -1) < leaseNow;
      if (rebuy) rebuyPending.set(orgId, rebuyLease ? leaseNow + rebuyLease.ttlMs : Number.MAX_SAFE_INTEGER);
      return rebuy
        ? { ok: true, balance: org.bal, duplicate: false, rebuy }
        : { ok: true, balance: org.bal, duplicate: false };
    },

    async clearRebuy(orgId) {
      rebuyPending.delete(orgId);
    },

    async release({ orgId, requestId }) {
      const org = orgs.get(orgId);
      const hold = org?.holds.get(requestId);
      if (!org || !hold) return;
      org.holds.delete(requestId);
      org.held -= hold.amount;
    },

    async credit({ orgId, creditId, amount, event }) {
      assertNanos("credit amount", amount);
      const org = orgs.get(orgId);
      const first = done.get(creditId);
      if (first !== undefined) {
        return { ok: true, balance: org?.bal ?? 0, duplicate: true, amount: first.amount };
      }
      if (!org) return { ok: false, reason: "not_loaded" };
      org.bal += amount;
      append(event, org.bal);
      markDone(creditId, amount);
      return { ok: true, balance: org.bal, duplicate: false, amount };
    },

    async appendEvent({ event }) {
      append(event, undefined);
    },

    async loadBalance({ orgId, balance, month }) {
      assertNanos("balance", balance);
      if (month) assertNanos("month spend", month.spend, 0);
      if (orgs.has(orgId)) return false;
      orgs.set(orgId, { bal: balance, held: 0, holds: new Map() });
      if (month && !monthSpend.has(`${orgId}:${month.start}`))
        monthSpend.set(`${orgId}:${month.start}`, month.spend);
      return true;
    },

    async getBalance(orgId) {
      const org = orgs.get(orgId);
      return org ? { balance: org.bal, held: org.held } : null;
    },

    async reclaimExpired(nowMs) {
      let released = 0;
      for (const state of trial.values()) {
        for (const [requestId, slot] of state.slots) {
          if (slot.expires <= nowMs && endSlot(state, requestId, false)) released += 1;
        }
      }
      for (const org of orgs.values()) {
        for (const [requestId, hold] of org.holds) {
          if (hold.expires > nowMs) continue;
          org.holds.delete(requestId);
          org.held -= hold.amount;
          released += 1;
        }
      }
      return released;
    },

    async holdTrialResponse({ orgId, planId, requestId, maxPlans, maxPerPlan, ttlMs, nowMs }) {
      const state = trialOf(orgId);
      if (state.slots.has(requestId)) return { ok: true };
      if (!state.loaded) return { ok: false, reason: "not_loaded" };
      const plan = state.plans.get(planId);
      if (!plan && state.plans.size >= maxPlans) return { ok: false, reason: "trial_plans_exceeded" };
      if (plan && plan.confirmed + plan.inFlight >= maxPerPlan) {
        return { ok: false, reason: "trial_messages_exceeded" };
      }
      if (plan) plan.inFlight += 1;
      else state.plans.set(planId, { confirmed: 0, inFlight: 1 });
      state.slots.set(requestId, { planId, expires: nowMs + ttlMs });
      return { ok: true };
    },

    async loadTrial({ orgId, plans }) {
      const state = trialOf(orgId);
      for (const [planId, confirmed] of Object.entries(plans)) {
        const plan = state.plans.get(planId);
        if (!plan) state.plans.set(planId, { confirmed, inFlight: 0 });
        else plan.confirmed = Math.max(plan.confirmed, confirmed);
      }
      const was = state.loaded;
      state.loaded = true;
      return !was;
    },

    async epoch() {
      return epoch;
    },

    async endTrialResponse({ orgId, requestId, answered, event }) {
      const state = trial.get(orgId);
      const ended = state ? endSlot(state, requestId, answered) : false;
      append(event, undefined);
      return ended;
    },

    async readLedger({ consumer, count, blockMs }) {
      if (stream.length === 0 && blockMs > 0) {
        await new Promise<void>((resolve) => {
          const wake = () => {
            clearTimeout(timer);
            resolve();
          };
          // An idle flusher waits again and again: a waiter whose time ran out must not stay behind.
          const timer = setTimeout(() => {
            const i = waiters.indexOf(wake);
            if (i >= 0) waiters.splice(i, 1);
            resolve();
          }, blockMs);
          waiters.push(wake);
        });
      }
      return take(consumer, count);
    },

    async ackLedger(_group, entries) {
      for (const e of entries) pending.delete(e.id);
    },

    async claimStaleLedger({ consumer, minIdleMs, count }) {
      const now = Date.now();
      const claimed: LedgerEntry[] = [];
      for (const p of pending.values()) {
        if (claimed.length >= count) break;
        if (now - p.since < minIdleMs) continue;
        p.consumer = consumer;
        p.since = now;
        claimed.push(toEntry(p.entry));
      }
      return claimed;
    },

    async ledgerLag() {
      // A loop, not Math.min(...): a backlog can outgrow the argument limit while Postgres is down.
      let oldestMs: number | null = stream[0]?.at ?? null;
      for (const p of pending.values()) if (oldestMs === null || p.entry.at < oldestMs) oldestMs = p.entry.at;
      return { length: stream.length + pending.size, oldestMs };
    },

    async purgeOrg(orgId) {
      for (const key of monthSpend.keys()) if (key.startsWith(`${orgId}:`)) monthSpend.delete(key);
      orgs.delete(orgId);
      trial.delete(orgId);
    },

    async close() {},
  };
}
