import type { Config } from "../config.ts";
import type { Clock } from "../core/clock.ts";
import { GatewayError } from "../core/errors.ts";
import type { Logger } from "../core/log.ts";
import type { JsonObject, Usage } from "../core/usage.ts";
import type { Database } from "../db/client.ts";
import { callRecorded, creditRow, getTransaction, insertCredit, orgLedgerBalance } from "../db/ledger.ts";
import { getOrg, MAX_RECHARGE_FAILURES, recordRechargeFailure, updateOrgBilling } from "../db/orgs.ts";
import { orgSpendBetween } from "../db/spend.ts";
import { collectGeneratedText } from "../gateway/generated-text.ts";
import type { GatewayMetrics } from "../gateway/metrics-port.ts";
import type { Catalog } from "../pricing/catalog.ts";
import { computeCost, estimateReservation } from "../pricing/cost.ts";
import { type Nanos, parseUsd } from "../pricing/money.ts";
import { tokenCounter } from "../pricing/tokens.ts";
import { billingMonthStart, nextBillingMonthStart } from "./billing-month.ts";
import { type CallEvent, type CreditEvent, encodeCallEvent, encodeCreditEvent } from "./events.ts";
import type { Admission, CallEnd, CallerOrg, CallStart, CreditResult, Meter, Settlement } from "./meter.ts";
import type { Payments } from "./payments.ts";
import { type PendingSettle, SettleSpool } from "./spool.ts";
import type { MeteringStore } from "./store.ts";

interface MeteredAdmission extends Admission {
  /** Nothing is debited: BYO orgs pay their provider directly. */
  readonly byo: boolean;
  readonly hold: Nanos;
  /** Start of the billing month the call was admitted in (ms). */
  readonly monthStart: number;
  /** A BYO trial call: it holds a slot of the trial's limits until it is settled. */
  readonly trial: boolean;
}

/**
 * The meter of integrated and BYO calls: a hold in the metering store before the upstream is
 * called, exactly one settle after, and the ledger event appended to the store's stream in the
 * same atomic step as the debit, for the flusher to write to Postgres.
 */
export function createLedgerMeter(deps: {
  config: Config;
  store: MeteringStore;
  database: Database;
  catalog: Catalog;
  clock: Clock;
  log: Logger;
  /** Where settles the store refused are kept over a restart (DATA_DIR/spool). */
  spoolDir?: string;
  metrics?: GatewayMetrics;
  payments: Payments;
}): Meter {
  const { config, store, database, clock, log } = deps;
  const markupBps = config.MARKUP_BPS;

  /**
   * Rebuilds what the store lost (Redis restarted empty) from the Postgres ledger: the balance, and
   * the spend of the billing month starting at `monthStart` (default: the current one), so that a
   * monthly budget cannot be overshot after the restart. Runs once per org and store lifetime.
   */
  const loadBalance = async (orgId: string, monthStart?: number) => {
    const [balance, org] = await Promise.all([
      orgLedgerBalance(database.db, orgId),
      getOrg(database.db, orgId),
    ]);
    let month: { start: number; spend: number } | undefined;
    if (org) {
      const from =
        monthStart !== undefined && monthStart > 0
          ? new Date(monthStart)
          : billingMonthStart(org.billingCycleStartedAt, new Date(clock.now()));
      const to = nextBillingMonthStart(org.billingCycleStartedAt, from);
      month = { start: from.getTime(), spend: await orgSpendBetween(database.db, orgId, from, to) };
    }
    await store.loadBalance({ orgId, balance, month });
  };

  /** The store failed while admitting a call: counted, logged (the caller only learns it is down). */
  const storeDown = (err: unknown): GatewayError => {
    deps.metrics?.storeErrors.inc();
    log.warn("metering store unreachable; refusing calls", {
      err: err instanceof Error ? err.message : String(err),
    });
    return unavailable();
  };

  /** Applies a settle (or a BYO usage event); returns the balance after it. */
  const applySettle = async (p: PendingSettle): Promise<Nanos | undefined> => {
    if (p.kind === "append") {
      await store.appendEvent({ orgId: p.orgId, event: p.event });
      return undefined;
    }
    if (p.kind === "trial") {
      await store.endTrialResponse({
        orgId: p.orgId,
        requestId: p.requestId,
        answered: p.answered === true,
        event: p.event,
      });
      return undefined;
    }
    const settle = () =>
      store.settle({
        orgId: p.orgId,
        requestId: p.requestId,
        cost: p.cost,
        event: p.event,
        monthStart: p.monthStart,
        rebuyBelow: p.rebuyBelow,
      });
    let result = await settle();
    if (!result.ok) {
      // Redis lost the balance mid-call (restarted empty): rebuild it, then charge.
      await loadBalance(p.orgId, p.monthStart);
      result = await settle();
    }
    if (!result.ok) throw new Error(`settle of ${p.requestId} found no balance after a reload`);
    if (result.rebuy) recharges.add(recharge(p.orgId, p.requestId));
    return result.balance;
  };
  // A settle reaches the spool when the store failed to answer, which does not prove it was not
  // applied; and the store's own memory of it (the done marker) lives DONE_TTL_SECONDS, or less if
  // Redis restarted empty. A replay therefore first asks the ledger: a call already recorded there
  // was charged, and is not charged again. Postgres unreachable: the replay waits (the spool retries).
  const spool = new SettleSpool(
    async (p) => {
      if (await callRecorded(database.db, p.requestId)) return;
      await applySettle(p);
    },
    log,
    deps.spoolDir,
  );
  spool.recover().catch((err) => log.error("spool recovery failed", { err: String(err) }));

  /** Auto-recharges in flight; shutdown waits for them. */
  const recharges = new Set<Promise<void>>();

  /**
   * The one recharge a crossing settle requested: charge the difference to the target through the
   * payments interface, credit it as an auto-rebuy purchase, and end the pending flag either way.
   * Three failed payments in a row turn auto-recharge off, and the org is notified (outbox).
   */
  const recharge = (orgId: string, requestId: string): Promise<void> => {
    const run = async () => {
      try {
        const org = await getOrg(database.db, orgId); // fresh settings: the key cache may be behind
        if (!org?.autoRebuyEnabled || org.autoRebuyMinThreshold === null || org.autoRebuyToBalance === null)
          return;
        const live = await store.getBalance(orgId);
        const missing = org.autoRebuyToBalance - (live?.balance ?? org.autoRebuyToBalance);
        if (missing <= 0) return;
        const cents = Math.ceil(missing / NANOS_PER_CENT);
        const id = `rebuy_${requestId}`;
        const paid = await deps.payments.charge({
          orgId,
          customerId: org.stripeCustomerId,
          paymentMethodId: org.stripePaymentMethodId,
          amountCents: cents,
          idempotencyKey: id,
        });
        if (paid.ok) {
          await updateOrgBilling(database.db, orgId, { autoRebuyFailures: 0 });
          await meter.credit({
            orgId,
            id,
            amount: cents * NANOS_PER_CENT,
            creditType: "purchase",
            isAutoRebuy: true,
            autoRebuyMinThreshold: org.autoRebuyMinThreshold,
            autoRebuyToBalance: org.autoRebuyToBalance,
          });
          return;
        }
        const counted = await recordRechargeFailure(database.db, {
          orgId,
          rechargeId: id,
          reason: paid.reason,
          at: new Date(clock.now()),
        });
        log.warn(
          counted?.turnedOff
            ? `auto-recharge turned off after ${MAX_RECHARGE_FAILURES} failed payments; the org is notified`
            : "auto-recharge payment failed",
          { orgId, failures: counted?.failures, reason: paid.reason },
        );
      } catch (err) {
        log.error("auto-recharge failed", { orgId, err: String(err) });
      } finally {
        await store.clearRebuy(orgId).catch(() => undefined);
      }
    };
    const done = run().finally(() => recharges.delete(done));
    return done;
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

  const billingError = (start: CallStart) => ({
    billingError: { hasBillingPermission: true, isTrial: start.org.isTrial },
  });

  const meter: Meter = {
    async admit(start) {
      const { org } = start;
      if (start.byoKey !== undefined || org.billingMode === "byo") {
        if (org.isTrial) {
          // A slot is held now and confirmed at settle only if the upstream answered: the trial
          // counts model responses, not attempts.
          const verdict = await store
            .holdTrialResponse({
              orgId: org.id,
              planId: start.tags.planId ?? "",
              requestId: start.requestId,
              maxPlans: config.TRIAL_MAX_PLANS,
              maxPerPlan: config.TRIAL_MAX_RESPONSES_PER_PLAN,
              ttlMs: config.HOLD_TTL_MS,
              nowMs: clock.now(),
            })
            .catch((err: unknown) => {
              throw storeDown(err);
            });
          if (!verdict.ok) {
            throw verdict.reason === "trial_plans_exceeded"
              ? new GatewayError(
                  "trial_plans_exceeded",
                  `trial orgs may use ${config.TRIAL_MAX_PLANS} plans`,
                  {
                    extras: { trialPlansExceededError: { maxPlans: config.TRIAL_MAX_PLANS } },
                  },
                )
              : new GatewayError(
                  "trial_messages_exceeded",
                  `trial orgs may have ${config.TRIAL_MAX_RESPONSES_PER_PLAN} model responses per plan`,
                  {
                    extras: {
                      trialMessagesExceededError: { maxMessages: config.TRIAL_MAX_RESPONSES_PER_PLAN },
                    },
                  },
                );
          }
        }
        return { start, byo: true, hold: 0, monthStart: 0, trial: org.isTrial } satisfies MeteredAdmission;
      }
      if (org.subscriptionStatus === "paused") {
        throw new GatewayError("cloud_subscription_paused", "the subscription is paused", {
          extras: billingError(start),
        });
      }
      if (org.subscriptionStatus === "overdue") {
        throw new GatewayError("cloud_subscription_overdue", "the subscription is overdue", {
          extras: billingError(start),
        });
      }
      const hold = estimateReservation(start.model, {
        promptBytes: start.requestBytes,
        maxTokens: start.maxTokens,
        defaultMaxTokens: config.DEFAULT_MAX_TOKENS,
        markupBps,
      });
      const monthStart = currentMonthStart(org, clock.now());
      const budget =
        org.maxThresholdPerMonth === null ? undefined : { monthStart, max: org.maxThresholdPerMonth };
      const reserve = () =>
        store.reserve({
          budget,
          orgId: org.id,
          requestId: start.requestId,
          amount: hold,
          ttlMs: config.HOLD_TTL_MS,
          nowMs: clock.now(),
        });
      let outcome: Awaited<ReturnType<typeof reserve>>;
      try {
        outcome = await reserve();
        if (!outcome.ok && outcome.reason === "not_loaded") {
          await loadBalance(org.id, monthStart);
          outcome = await reserve();
        }
      } catch (err) {
        throw storeDown(err);
      }
      if (!outcome.ok && outcome.reason === "monthly_max_reached") {
        throw new GatewayError("cloud_monthly_max_reached", "this call would pass the org's monthly budget", {
          extras: billingError(start),
        });
      }
      if (!outcome.ok) {
        throw new GatewayError("cloud_insufficient_credits", "not enough credits for this call", {
          extras: billingError(start),
        });
      }
      return { start, byo: false, hold, monthStart, trial: false } satisfies MeteredAdmission;
    },

    price(admission, usage) {
      return computeCost(admission.start.model, usage, { markupBps, upstreamCostUsd: usage.upstreamCostUsd })
        .total;
    },

    async settle(admission, end): Promise<Settlement> {
      const { start, byo, monthStart, trial } = admission as MeteredAdmission;
      // A provider charges nothing for a call it refused or never answered; a call it answered
      // without a usage report is counted from what it sent.
      const answered = end.upstreamStatus !== undefined && end.upstreamStatus < 400;
      const usage = end.usage ?? (answered ? await countUsage(start, end) : NO_USAGE);
      const cost = computeCost(start.model, usage, { markupBps, upstreamCostUsd: usage.upstreamCostUsd });
      const event: CallEvent = {
        id: start.requestId,
        orgId: start.org.id,
        keyId: start.keyId,
        amount: byo ? 0 : cost.total,
        base: cost.base,
        surcharge: cost.surcharge,
        cacheDiscount: cost.cacheDiscount,
        listPrice: cost.total,
        inputTokens: cost.inputTokens,
        cachedTokens: cost.cachedTokens,
        cacheWriteTokens: usage.cacheWriteTokens,
        outputTokens: cost.outputTokens,
        reasoningTokens: usage.reasoningTokens,
        inputPricePerToken: cost.inputPricePerToken,
        outputPricePerToken: cost.outputPricePerToken,
        provider: start.model.provider,
        model: start.model.id,
        route: start.route,
        byo,
        tags: start.tags,
        startedAt: start.startedAt,
        firstTokenAt: end.firstTokenAt ?? null,
        endedAt: end.endedAt,
        stoppedEarly: end.stoppedEarly,
        clientCancelled: end.clientCancelled,
        upstreamError: end.upstreamError,
        noReportedUsage: end.usage === undefined,
      };
      const pending: PendingSettle = {
        kind: trial ? "trial" : byo ? "append" : "settle",
        orgId: start.org.id,
        requestId: start.requestId,
        cost: byo ? 0 : cost.total,
        event: encodeCallEvent(event),
        monthStart,
        rebuyBelow: start.org.autoRebuy?.threshold,
        ...(trial ? { answered } : {}),
      };
      try {
        const balance = await applySettle(pending);
        return { cost: pending.cost, balance };
      } catch (err) {
        // The store is unreachable: the charge is kept and applied when it is back, never dropped.
        deps.metrics?.storeErrors.inc();
        spool.hold(pending, err);
        return { cost: pending.cost, balance: undefined };
      }
    },

    async balance(orgId) {
      const live = await store.getBalance(orgId);
      if (live) return live.balance;
      return orgLedgerBalance(database.db, orgId);
    },

    async onOrgCreated(org) {
      if (org.billingMode !== "integrated" || !org.isTrial) return;
      const amount = parseUsd(config.TRIAL_CREDITS) ?? 0;
      if (amount > 0)
        await this.credit({ orgId: org.id, id: `trial_${org.id}`, amount, creditType: "trial" });
    },

    async credit(input): Promise<CreditResult> {
      const existing = await getTransaction(database.db, input.id);
      if (existing) {
        if (existing.orgId !== input.orgId || existing.amount !== input.amount) {
          return { ok: false, reason: "amount_mismatch", firstAmount: existing.amount };
        }
        return { ok: true, transaction: existing, duplicate: true };
      }
      const event: CreditEvent = {
        id: input.id,
        orgId: input.orgId,
        amount: input.amount,
        creditType: input.creditType,
        isAutoRebuy: input.isAutoRebuy ?? false,
        autoRebuyMinThreshold: input.autoRebuyMinThreshold ?? null,
        autoRebuyToBalance: input.autoRebuyToBalance ?? null,
        createdAt: clock.now(),
      };
      const apply = () =>
        store.credit({
          orgId: input.orgId,
          creditId: input.id,
          amount: input.amount,
          event: encodeCreditEvent(event),
        });
      let result = await apply();
      if (!result.ok) {
        await loadBalance(input.orgId);
        result = await apply();
      }
      if (!result.ok) throw new Error(`credit ${input.id} found no balance after a reload`);
      if (result.duplicate && result.amount !== input.amount) {
        return { ok: false, reason: "amount_mismatch", firstAmount: result.amount };
      }
      // The flusher writes the same row from the stream; writing it now lets the caller see it at once.
      const transaction = await insertCredit(database.db, creditRow(event, result.balance));
      if (!result.duplicate) deps.metrics?.credits.inc({ type: input.creditType });
      return { ok: true, transaction, duplicate: result.duplicate };
    },

    async close() {
      await Promise.all(recharges);
      await spool.close();
    },
  };
  return meter;
}

const NO_USAGE: Usage = {
  promptTokens: 0,
  cachedTokens: 0,
  cacheWriteTokens: 0,
  completionTokens: 0,
  reasoningTokens: 0,
};

/** Stripe amounts are integer cents; a cent is 10^7 nanodollars. */
const NANOS_PER_CENT = 10_000_000;

/** No call is admitted while the metering store cannot be reached: it could not be paid for. */
function unavailable(): GatewayError {
  return new GatewayError("unavailable", "metering is unavailable; try again shortly");
}

/** Counts what the upstream did not report: the prompt as sent and the text actually delivered. */
export async function countUsage(start: CallStart, end: CallEnd): Promise<Usage> {
  const counter = await tokenCounter(start.model.encoding);
  const request = start.request;
  const promptTokens =
    start.route === "chat"
      ? counter.chat(request.messages as JsonObject[])
      : counter.text(`${String(request.initialCode ?? "")}${String(request.editSnippet ?? "")}`);
  let text = "";
  if (end.streamedText) {
    text = end.streamedText();
  } else if (end.responseText) {
    const texts: string[] = [];
    collectGeneratedText(end.responseText, texts);
    text = texts.join("");
  }
  const completionTokens = text ? counter.text(text) : 0;
  return { promptTokens, cachedTokens: 0, cacheWriteTokens: 0, completionTokens, reasoningTokens: 0 };
}
