import { hostname } from "node:os";
import { join } from "node:path";
import { createBackgroundJobs } from "./background.ts";
import type { Config } from "./config.ts";
import { type Clock, type Sleeper, systemClock } from "./core/clock.ts";
import { createLogger, type Logger } from "./core/log.ts";
import { openDatabase } from "./db/client.ts";
import { Metrics } from "./gateway/metrics.ts";
import type { Services } from "./gateway/services.ts";
import { createNodeUpstream } from "./gateway/upstream-node.ts";
import type { Flusher } from "./metering/flusher.ts";
import { LocalLedger } from "./metering/local-ledger.ts";
import { createMemoryStore } from "./metering/memory-store.ts";
import { noPayments, type Payments, stripePayments } from "./metering/payments.ts";
import { createRedisStore } from "./metering/redis-store.ts";
import type { MeteringStore } from "./metering/store.ts";
import type { NotificationDispatcher } from "./notify/dispatcher.ts";
import type { Notifier } from "./notify/notifier.ts";
import { loadPricesFile } from "./pricing/catalog.ts";
import {
  createLiveCatalog,
  fileModelListCache,
  type LiveCatalog,
  openRouterListFetcher,
} from "./pricing/live-catalog.ts";
import { buildServices } from "./services.ts";

export type NodeServices = Services & {
  store: MeteringStore;
  flusher: Flusher;
  notifications: NotificationDispatcher;
};

/** How long one load of OpenRouter's model list may take (at start too: the gateway waits for it). */
const MODEL_LIST_TIMEOUT_MS = 10_000;

/**
 * Loads the catalogue: built-in models, OpenRouter's list (fetched now, else the copy cached under
 * DATA_DIR) and PRICES_FILE on top; a bad PRICES_FILE stops the start with its reason.
 */
export async function loadCatalog(config: Config, log: Logger): Promise<LiveCatalog> {
  let overrides: unknown;
  if (config.PRICES_FILE) {
    const loaded = await loadPricesFile(config.PRICES_FILE);
    if ("error" in loaded) throw new Error(loaded.error);
    overrides = loaded.overrides;
  }
  const listed = config.OPENROUTER_MODELS_REFRESH_MS > 0;
  const catalog = await createLiveCatalog({
    overrides,
    fetchList: openRouterListFetcher(config.OPENROUTER_BASE_URL, MODEL_LIST_TIMEOUT_MS),
    cache:
      !listed || config.DATA_DIR === "memory://"
        ? undefined
        : fileModelListCache(join(config.DATA_DIR, "openrouter-models.json")),
    everyMs: config.OPENROUTER_MODELS_REFRESH_MS,
    log,
  });
  if (listed) {
    await catalog.refresh();
    catalog.start((fn, ms) => {
      const timer = setTimeout(fn, ms);
      // Node only: the refresh must not keep a stopping process alive.
      if (typeof timer === "object" && timer.unref) timer.unref();
      return () => clearTimeout(timer);
    });
  }
  return catalog;
}

/**
 * The services of a Node instance: Postgres at DATABASE_URL or embedded PGlite, Redis at REDIS_URL
 * (or a cluster) or the in-process store, undici to the providers, and this instance's flusher.
 */
export async function createNodeServices(
  config: Config,
  opts: {
    clock?: Clock;
    sleeper?: Sleeper;
    payments?: Payments;
    notifier?: Notifier;
    faults?: { noReplay?: boolean };
  } = {},
): Promise<NodeServices> {
  const log = createLogger(config.LOG_LEVEL);
  const catalog = await loadCatalog(config, log);
  const database = await openDatabase({ databaseUrl: config.DATABASE_URL, dataDir: config.DATA_DIR });
  await database.migrate();
  let store: MeteringStore;
  if (config.REDIS_URL || config.REDIS_CLUSTER_NODES) {
    store = createRedisStore({
      url: config.REDIS_URL,
      clusterNodes: config.REDIS_CLUSTER_NODES,
      keyPrefix: config.REDIS_KEY_PREFIX,
    });
  } else {
    store = createMemoryStore();
    log.warn("no REDIS_URL: metering in process; run one instance only", { database: database.kind });
  }
  const upstream = createNodeUpstream({
    headersTimeoutMs: config.UPSTREAM_HEADERS_TIMEOUT_MS,
    idleTimeoutMs: config.UPSTREAM_IDLE_TIMEOUT_MS,
  });
  // With Redis, BYO usage events skip the stream: this instance's flusher writes them (local-ledger.ts).
  // The in-process store's stream is in this process already.
  const localLedger = store.kind === "memory" ? undefined : new LocalLedger();
  const services = buildServices(config, {
    database,
    store,
    localLedger,
    upstream,
    catalog,
    clock: opts.clock ?? systemClock,
    sleeper: opts.sleeper,
    log,
    spoolDir: config.DATA_DIR === "memory://" ? undefined : join(config.DATA_DIR, "spool"),
    payments:
      opts.payments ?? (config.STRIPE_SECRET_KEY ? stripePayments(config.STRIPE_SECRET_KEY) : noPayments),
    metrics: (sources) => new Metrics(sources),
    faults: opts.faults,
  });
  const jobs = createBackgroundJobs(config, services, {
    consumer: config.FLUSHER_CONSUMER ?? `${hostname()}-${process.pid}`,
    notifier: opts.notifier,
    localLedger,
  });
  const { flusher, notifications } = jobs;
  flusher.start();
  notifications.start();
  const purger = setInterval(jobs.purge, config.PURGE_INTERVAL_MS);
  purger.unref();
  const granter = setInterval(jobs.grant, config.GRANT_INTERVAL_MS);
  granter.unref();
  const reclaimer = setInterval(jobs.reclaim, config.RECLAIM_INTERVAL_MS);
  reclaimer.unref();
  const owedCredits = setInterval(jobs.payOwedCredits, config.CREDIT_RETRY_INTERVAL_MS);
  owedCredits.unref();
  return {
    ...services,
    flusher,
    notifications,
    async close() {
      catalog.stop();
      clearInterval(purger);
      clearInterval(granter);
      clearInterval(reclaimer);
      clearInterval(owedCredits);
      await notifications.stop();
      await flusher.stop();
      await flusher.drain().catch((err) => log.error("last flush failed", { err: String(err) }));
      await services.close();
    },
  };
}
