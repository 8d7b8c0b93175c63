import type { Clock } from "../core/clock.ts";
import type { Logger } from "../core/log.ts";
import type { Database } from "../db/client.ts";
import { getOrg, MAX_RECHARGE_FAILURES, recordRechargeFailure, updateOrgBilling } from "../db/orgs.ts";
import { creditPaid, creditRetryAt, dueCredits, oweCredit } from "../db/served.ts";
import type { CreditResult, Meter } from "./meter.ts";
import type { Payments } from "./payments.ts";
import type { MeteringStore } from "./store.ts";

type CreditInput = Parameters<Meter["credit"]>[0];

/** Stripe amounts are integer cents; a cent is 10^7 nanodollars. */
export const NANOS_PER_CENT = 10_000_000;

export interface Recharger {
  /** Starts the recharge a crossing settle requested (it holds the org's recharge lease). */
  request(orgId: string, requestId: string): void;
  /**
   * One round of retrying the credits owed (credit_outbox). Not on a timer of its own: Node runs it
   * from its background jobs, a Worker from its cron, where a database client is in scope.
   */
  payOwed(): Promise<void>;
  /** Resolves once no recharge is in flight, counting those requested while it waits. */
  idle(): Promise<void>;
  /** Waits for the recharges in flight. */
  close(): Promise<void>;
}

/**
 * Auto-recharge: the off-session payment a crossing settle requested, its credit (keyed by the
 * PaymentIntent id, as its webhook is), and the credits owed for payments whose credit failed.
 */
export function createRecharger(deps: {
  store: MeteringStore;
  database: Database;
  clock: Clock;
  log: Logger;
  payments: Payments;
  /** The meter's credit (idempotent by id). */
  credit(input: CreditInput): Promise<CreditResult>;
}): Recharger {
  const { store, database, clock, log } = deps;

  /**
   * Credits owed for payments that succeeded but whose credit failed (credit_outbox). Every
   * instance retries the due ones (a credit is idempotent by its PaymentIntent id), with jittered
   * backoff up to an hour apart, until each lands.
   */
  const payOwedCredits = async () => {
    for (const row of await dueCredits(database.db, new Date(clock.now()))) {
      try {
        const result = await deps.credit(row.credit as unknown as CreditInput);
        if (!result.ok) throw new Error(`credit refused: ${result.reason}`);
        await creditPaid(database.db, row.id);
        log.info("an owed auto-recharge credit landed", { orgId: row.orgId, creditId: row.id });
      } catch (err) {
        const wait = Math.min(3_600_000, 1_000 * 2 ** Math.min(row.attempts, 12));
        await creditRetryAt(
          database.db,
          row.id,
          new Date(clock.now() + wait / 2 + Math.random() * wait),
          String(err),
        ).catch(() => undefined);
      }
    }
  };

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
        // The lease (REBUY_LEASE_MS) outlives this call: a gateway that dies here, or a clearRebuy
        // that fails, leaves no org without auto-recharge for longer than that.
        const paid = await deps.payments.charge({
          orgId,
          customerId: org.stripeCustomerId,
          paymentMethodId: org.stripePaymentMethodId,
          amountCents: cents,
          idempotencyKey: id,
        });
        if (paid.ok) {
          // Keyed by the PaymentIntent: its payment_intent.succeeded webhook credits the same id.
          const credit = {
            orgId,
            id: paid.paymentId,
            amount: cents * NANOS_PER_CENT,
            creditType: "purchase" as const,
            isAutoRebuy: true,
            autoRebuyMinThreshold: org.autoRebuyMinThreshold,
            autoRebuyToBalance: org.autoRebuyToBalance,
          };
          // Owed first, then paid: a credit that fails now (or a gateway killed now) is retried
          // from the outbox until it lands.
          await oweCredit(database.db, { id: credit.id, orgId, credit, at: new Date(clock.now()) }).catch(
            (err: unknown) =>
              log.error("could not record an owed credit; its webhook will credit it", {
                orgId,
                paymentId: paid.paymentId,
                err: String(err),
              }),
          );
          await updateOrgBilling(database.db, orgId, { autoRebuyFailures: 0 }).catch(() => undefined);
          const result = await deps.credit(credit);
          if (result.ok) await creditPaid(database.db, credit.id);
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

  return {
    request(orgId, requestId) {
      recharges.add(recharge(orgId, requestId));
    },
    async payOwed() {
      await payOwedCredits().catch((err) => log.warn("owed credits not paid yet", { err: String(err) }));
    },
    async idle() {
      while (recharges.size > 0) await Promise.all(recharges);
    },
    async close() {
      await Promise.all(recharges);
    },
  };
}
