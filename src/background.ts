import type { Config } from "./config.ts";
import { postgresOutbox } from "./db/notifications.ts";
import type { Services } from "./gateway/services.ts";
import { Flusher } from "./metering/flusher.ts";
import { grantMonthlyCredits } from "./metering/grants.ts";
import type { LocalLedger } from "./metering/local-ledger.ts";
import { purgeDeletedOrgs } from "./metering/purge.ts";
import type { MeteringStore } from "./metering/store.ts";
import { NotificationDispatcher } from "./notify/dispatcher.ts";
import { loggingNotifier, type Notifier, resendNotifier } from "./notify/notifier.ts";
import { parseUsd } from "./pricing/money.ts";

/**
 * What an instance does besides serving calls: the ledger flusher, the billing notifications, the
 * purge of deleted orgs and the monthly grants. Node runs them on timers (node-services.ts); a
 * Worker, which has no timers between requests, after its requests and on a cron trigger
 * (worker.ts). Every job is safe to run on several instances at once.
 */
export interface BackgroundJobs {
  flusher: Flusher;
  notifications: NotificationDispatcher;
  /** Purges the orgs deleted longer than PURGE_DELAY_MS ago; failures are logged. */
  purge(): Promise<void>;
  /** Grants the billing month's credits to the orgs due them; failures are logged. */
  grant(): Promise<void>;
  /**
   * Releases the holds and trial slots of calls whose gateway died (their TTL passed). Node runs it
   * on a timer against Redis; a Durable Object reclaims its own on its alarm.
   */
  reclaim(): Promise<void>;
  /** Retries the auto-recharge credits owed (paid, not yet credited); failures are logged. */
  payOwedCredits(): Promise<void>;
}

export function createBackgroundJobs(
  config: Config,
  services: Services & { store: MeteringStore },
  opts: { consumer: string; notifier?: Notifier; localLedger?: LocalLedger },
): BackgroundJobs {
  const { store, database, log, metrics, clock } = services;
  const flusher = new Flusher(store, database, log, {
    consumer: opts.consumer,
    claimIdleMs: config.FLUSH_CLAIM_IDLE_MS,
    intervalMs: config.FLUSH_INTERVAL_MS,
    onError: () => metrics.databaseErrors.inc(),
    onDeadLetter: () => metrics.deadLetters.inc({ source: "ledger" }),
    onCommitted: (ids) => services.meter.committed?.(ids),
    local: opts.localLedger,
  });
  const notifier =
    opts.notifier ??
    (config.EMAIL_API_KEY && config.EMAIL_FROM
      ? resendNotifier({ apiKey: config.EMAIL_API_KEY, from: config.EMAIL_FROM, url: config.EMAIL_API_URL })
      : loggingNotifier(log));
  if (notifier.kind === "log") log.info("no EMAIL_API_KEY: billing notifications are logged, not emailed");
  const notifications = new NotificationDispatcher({
    outbox: postgresOutbox(database.db),
    notifier,
    clock,
    log,
    intervalMs: config.NOTIFY_INTERVAL_MS,
    maxAttempts: config.NOTIFY_MAX_ATTEMPTS,
    onOutcome: (kind, outcome) => metrics.notifications.inc({ kind, outcome }),
  });
  const grantAmount = parseUsd(config.MONTHLY_GRANT) ?? 0;
  return {
    flusher,
    notifications,
    async purge() {
      await purgeDeletedOrgs({
        database,
        store,
        log,
        now: clock.now(),
        delayMs: config.PURGE_DELAY_MS,
      }).catch((err) => log.error("purge failed", { err: String(err) }));
    },
    async reclaim() {
      await store.reclaimExpired(clock.now()).then(
        (n) => n > 0 && log.warn("reclaimed expired holds", { holds: n }),
        (err) => log.error("reclaim failed", { err: String(err) }),
      );
    },
    async payOwedCredits() {
      await services.meter.payOwedCredits();
    },
    async grant() {
      await grantMonthlyCredits({
        database,
        meter: services.meter,
        log,
        now: clock.now(),
        amount: grantAmount,
      }).catch((err) => log.error("monthly grants failed", { err: String(err) }));
    },
  };
}
