import { trialResponsesByPlan } from "../db/served.ts";
import { estimateReservation, estimateTokens } from "../pricing/cost.ts";
import type { Nanos } from "../pricing/money.ts";
import type { MeterParts } from "./balances.ts";
import { billingMonthStart, nextBillingMonthStart } from "./billing-month.ts";
import type { HoldPool } from "./hold-pool.ts";
import type { Admission, AdmitResult, CallerOrg, CallStart, Refusal } from "./meter.ts";
import { type RateCheck, rateCheckFor, windowStart } from "./rate-limit.ts";

/** What settlement needs to know about how a call was admitted. */
export interface MeteredAdmission extends Admission {
  /** Nothing is debited: BYO orgs pay their provider directly. */
  readonly byo: boolean;
  readonly hold: Nanos;
  /** The pooled hold the call was admitted with (./hold-pool.ts); absent: its own, by request id. */
  readonly holdId?: string;
  /** Start of the billing month the call was admitted in (ms). */
  readonly monthStart: number;
  /** A BYO trial call: it holds a slot of the trial's limits until it is settled. */
  readonly trial: boolean;
  /** Rate-limited calls: the window they were counted in and the tokens counted, corrected at settle. */
  readonly rated?: { windowStart: number; tokens: number };
}

/**
 * Admission: a hold in the metering store before the upstream is called (a trial slot for BYO
 * trial orgs). A refusal is a value (the route maps it to its HTTP error), never a thrown error;
 * what the store lost is rebuilt from Postgres first. With a hold pool, a call without rate limits
 * takes a hold made ahead for it and goes upstream without waiting for the store.
 */
export function createAdmission(
  deps: MeterParts & { pool?: HoldPool },
): (start: CallStart) => Promise<AdmitResult> {
  const { config, store, database, clock, log, loadBalance, pool } = deps;

  /** The store failed while admitting a call: counted, logged (the caller only learns it is down). */
  const storeDown = (err: unknown): { ok: false; refusal: Refusal } => {
    deps.metrics?.storeErrors.inc();
    log.warn("metering store unreachable; refusing calls", {
      err: err instanceof Error ? err.message : String(err),
    });
    return { ok: false, refusal: { code: "unavailable" } };
  };

  /** Each org's current billing month, worked out once a month rather than on every call. */
  const months = new WeakMap<CallerOrg, { start: number; next: number }>();
  const currentMonthStart = (org: CallerOrg, now: number): number => {
    const known = months.get(org);
    if (known && now >= known.start && now < known.next) return known.start;
    const start = billingMonthStart(org.billingCycleStartedAt, new Date(now));
    const next = nextBillingMonthStart(org.billingCycleStartedAt, start).getTime();
    months.set(org, { start: start.getTime(), next });
    return start.getTime();
  };

  const admitted = (admission: MeteredAdmission): AdmitResult => ({ ok: true, admission });

  /** A BYO trial call holds a slot now, confirmed at settle only if the upstream answered. */
  const admitTrial = async (start: CallStart, extra: Partial<MeteredAdmission>): Promise<AdmitResult> => {
    const { org } = start;
    const hold = () =>
      store.holdTrialResponse({
        orgId: org.id,
        planId: start.tags.planId ?? "",
        requestId: start.requestId,
        maxPlans: config.TRIAL_MAX_PLANS,
        maxPerPlan: config.TRIAL_MAX_RESPONSES_PER_PLAN,
        ttlMs: config.HOLD_TTL_MS,
        nowMs: clock.now(),
      });
    let verdict: Awaited<ReturnType<typeof hold>>;
    try {
      verdict = await hold();
      if (!verdict.ok && verdict.reason === "not_loaded") {
        // The store lost the counters (Redis restarted empty, or a new embedded process): they are
        // rebuilt from usage_records, as balances are from the ledger.
        await store.loadTrial({ orgId: org.id, plans: await trialResponsesByPlan(database.db, org.id) });
        verdict = await hold();
      }
    } catch (err) {
      return storeDown(err);
    }
    if (verdict.ok) return admitted({ start, byo: true, hold: 0, monthStart: 0, trial: true, ...extra });
    if (verdict.reason === "not_loaded") return storeDown(new Error("trial counters not loaded"));
    return {
      ok: false,
      refusal:
        verdict.reason === "trial_plans_exceeded"
          ? { code: "trial_plans_exceeded", maxPlans: config.TRIAL_MAX_PLANS }
          : { code: "trial_messages_exceeded", maxMessages: config.TRIAL_MAX_RESPONSES_PER_PLAN },
    };
  };

  /** The rate step of a call that reserves nothing (BYO), run only when a limit is set. */
  const admitRate = async (orgId: string, rate: RateCheck, nowMs: number) => {
    try {
      const verdict = await store.admitRate({ orgId, rate, nowMs });
      return verdict.ok
        ? { ok: true as const, rate: verdict.rate }
        : {
            ok: false as const,
            refusal: { code: "rate_limit_exceeded" as const, rate: verdict.rate, tokens: rate.tokens },
          };
    } catch (err) {
      return storeDown(err);
    }
  };

  return async (start) => {
    const { org } = start;
    const estimated = estimateTokens(start.model, {
      promptBytes: start.requestBytes,
      maxTokens: start.maxTokens,
      defaultMaxTokens: config.DEFAULT_MAX_TOKENS,
    });
    const rate = rateCheckFor(
      start.keyId,
      org.rateLimits,
      start.keyRateLimits,
      estimated.promptTokens + estimated.outputTokens,
    );
    const admittedAt = clock.now();
    const rated = rate ? { windowStart: windowStart(admittedAt), tokens: rate.tokens } : undefined;
    if (start.byoKey !== undefined || org.billingMode === "byo") {
      // BYO calls reserve nothing, so their rate step is a script of its own, run only when a limit
      // is set (and before the trial slot: a call refused for rate holds no slot).
      let extra: Partial<MeteredAdmission> = {};
      if (rate) {
        const verdict = await admitRate(org.id, rate, admittedAt);
        if (!verdict.ok) return verdict;
        extra = { rate: verdict.rate, rated };
      }
      if (org.isTrial) return admitTrial(start, extra);
      return admitted({ start, byo: true, hold: 0, monthStart: 0, trial: false, ...extra });
    }
    const isTrial = org.isTrial;
    if (org.subscriptionStatus === "paused") {
      return { ok: false, refusal: { code: "cloud_subscription_paused", isTrial } };
    }
    if (org.subscriptionStatus === "overdue") {
      return { ok: false, refusal: { code: "cloud_subscription_overdue", isTrial } };
    }
    // One hold covers every route the call may take: it is sized for the dearest.
    let hold = 0;
    for (const route of [start.model, ...start.model.fallbacks]) {
      const estimate = estimateReservation(route, {
        promptBytes: start.requestBytes,
        maxTokens: start.maxTokens,
        defaultMaxTokens: config.DEFAULT_MAX_TOKENS,
        markupBps: config.MARKUP_BPS,
      });
      if (estimate > hold) hold = estimate;
    }
    const monthStart = currentMonthStart(org, clock.now());
    const budget =
      org.maxThresholdPerMonth === null ? undefined : { monthStart, max: org.maxThresholdPerMonth };
    // Rate limits count each call in the step that holds its credit: those calls reserve one by one.
    const pooling = rate ? undefined : pool;
    const pooled = pooling?.take(org.id, hold);
    if (pooled) {
      pooling?.refill(org.id, hold, budget);
      return admitted({ start, byo: false, hold, holdId: pooled, monthStart, trial: false });
    }
    const reserve = () =>
      store.reserve({
        budget,
        orgId: org.id,
        requestId: start.requestId,
        amount: hold,
        ttlMs: config.HOLD_TTL_MS,
        nowMs: clock.now(),
        rate,
      });
    let outcome: Awaited<ReturnType<typeof reserve>>;
    try {
      outcome = await reserve();
      if (!outcome.ok && outcome.reason === "not_loaded") {
        await loadBalance(org.id, monthStart);
        outcome = await reserve();
      }
      // This instance's unused pooled holds may be what stands in the way: given back, asked again.
      const refused = !outcome.ok && outcome.reason !== "not_loaded" && outcome.reason !== "rate_limited";
      if (refused && pooling && (await pooling.release(org.id))) outcome = await reserve();
    } catch (err) {
      return storeDown(err);
    }
    if (outcome.ok) {
      pooling?.refill(org.id, hold, budget);
      return admitted({
        start,
        byo: false,
        hold,
        monthStart,
        trial: false,
        ...(outcome.rate ? { rate: outcome.rate } : {}),
        ...(rated ? { rated } : {}),
      });
    }
    if (outcome.reason === "not_loaded") return storeDown(new Error("balance not loaded after a reload"));
    if (outcome.reason === "rate_limited") {
      return {
        ok: false,
        refusal: { code: "rate_limit_exceeded", rate: outcome.rate, tokens: rate?.tokens ?? 0 },
      };
    }
    return {
      ok: false,
      refusal: {
        code:
          outcome.reason === "monthly_max_reached"
            ? "cloud_monthly_max_reached"
            : "cloud_insufficient_credits",
        isTrial,
      },
    };
  };
}
