import type { Config } from "./config.ts";
import { type Clock, type Sleeper, systemSleeper, withinMs } from "./core/clock.ts";
import type { Logger } from "./core/log.ts";
import type { Database } from "./db/client.ts";
import { guardDatabase } from "./db/guard.ts";
import { findApiKeyByHash, hashApiKey } from "./db/orgs.ts";
import { cachedKeyResolver } from "./gateway/auth.ts";
import type { GatewayMetrics, MetricSources } from "./gateway/metrics-port.ts";
import { OpenCalls, type Services } from "./gateway/services.ts";
import type { UpstreamClient } from "./gateway/upstream.ts";
import { createLedgerMeter } from "./metering/ledger-meter.ts";
import type { LocalLedger } from "./metering/local-ledger.ts";
import type { Payments } from "./metering/payments.ts";
import type { MeteringStore } from "./metering/store.ts";
import type { Catalog } from "./pricing/catalog.ts";

export interface ServiceParts {
  database: Database;
  store: MeteringStore;
  upstream: UpstreamClient;
  catalog: Catalog;
  clock: Clock;
  /** Default: real time. */
  sleeper?: Sleeper;
  log: Logger;
  spoolDir?: string;
  /** BYO usage events for this instance's flusher to write itself (src/metering/local-ledger.ts). */
  localLedger?: LocalLedger;
  payments: Payments;
  /** Prometheus on Node (metrics.ts), off on Workers (metrics-port.ts). */
  metrics: (sources: MetricSources) => GatewayMetrics;
  /** Test-only faults (see createLedgerMeter). */
  faults?: { noReplay?: boolean };
}

/** Wires the parts every runtime shares; the entries choose the parts. */
export function buildServices(config: Config, parts: ServiceParts): Services & { store: MeteringStore } {
  const { database, store, upstream, catalog, clock, log } = parts;
  const calls = new OpenCalls();
  const metrics = parts.metrics({
    openCalls: () => calls.size,
    ledgerLag: () => store.ledgerLag(),
    now: () => clock.now(),
  });
  metrics.databaseAvailable.set(1);
  const dbGuard = guardDatabase(database, {
    timeoutMs: config.DB_TIMEOUT_MS,
    onChange(available) {
      metrics.databaseAvailable.set(available ? 1 : 0);
      if (available) log.info("postgres reachable again");
      else log.warn("postgres unreachable; request-path database work fails fast until it is back");
    },
  });
  const keys = cachedKeyResolver(
    async (key) => {
      const found = await dbGuard.run(() => findApiKeyByHash(database.db, hashApiKey(key)));
      if (!found || found.revokedAt || found.org.deletedAt) return null;
      const { org } = found;
      return {
        keyId: found.keyId,
        keyRateLimits: { requestsPerMinute: found.rateLimitRpm, tokensPerMinute: found.rateLimitTpm },
        org: {
          id: org.id,
          name: org.name,
          billingMode: org.billingMode,
          isTrial: org.isTrial,
          subscriptionStatus: org.subscriptionStatus,
          maxThresholdPerMonth: org.maxThresholdPerMonth,
          billingCycleStartedAt: org.billingCycleStartedAt,
          autoRebuy:
            org.autoRebuyEnabled && org.autoRebuyMinThreshold !== null && org.autoRebuyToBalance !== null
              ? { threshold: org.autoRebuyMinThreshold, toBalance: org.autoRebuyToBalance }
              : null,
          rateLimits: { requestsPerMinute: org.rateLimitRpm, tokensPerMinute: org.rateLimitTpm },
        },
      };
    },
    { ttlMs: config.KEY_CACHE_TTL_MS, staleMs: config.KEY_CACHE_STALE_MS, clock },
  );
  const meter = createLedgerMeter({
    config,
    store,
    database,
    catalog,
    clock,
    log,
    spoolDir: parts.spoolDir,
    localLedger: parts.localLedger,
    metrics,
    payments: parts.payments,
    faults: parts.faults,
  });
  return {
    config,
    catalog,
    database,
    dbGuard,
    store,
    keys,
    meter,
    upstream,
    clock,
    sleeper: parts.sleeper ?? systemSleeper,
    log,
    calls,
    metrics,
    async ready() {
      // Each check answers within DB_TIMEOUT_MS, so /readyz does too, whatever is down.
      const [db, metering] = await Promise.all([
        dbGuard.ping(),
        withinMs(
          store.getBalance("readyz").then(
            () => true,
            () => false,
          ),
          config.DB_TIMEOUT_MS,
          false,
        ),
      ]);
      // Named for what runs: "postgres" or "pglite", "redis", "cluster" or "memory".
      return { [database.kind]: db, [store.kind]: metering };
    },
    async close() {
      dbGuard.close();
      await upstream.close();
      await meter.close();
      await store.close();
      await database.close();
    },
  };
}
