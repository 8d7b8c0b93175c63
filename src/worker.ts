import { type BackgroundJobs, createBackgroundJobs } from "./background.ts";
import { parseConfig } from "./config.ts";
import { systemClock } from "./core/clock.ts";
import { createLogger, type Logger } from "./core/log.ts";
import { openDatabase } from "./db/client.ts";
import { createApp } from "./gateway/app.ts";
import { createFetchUpstream } from "./gateway/upstream.ts";
import { createMemoryStore } from "./metering/memory-store.ts";
import { noPayments, stripePayments } from "./metering/payments.ts";
import { createCatalog } from "./pricing/catalog.ts";
import { buildServices } from "./services.ts";

/**
 * The Cloudflare Workers entry: the same app as `npm start`. Providers are reached with fetch();
 * Postgres with postgres.js at DATABASE_URL (a Hyperdrive connection string). The metering store is
 * the in-process one, which is exact only within one isolate: a production Workers deployment
 * needs a shared store behind the same MeteringStore interface.
 *
 * A Worker has no timers between requests, so the background work runs around them: the ledger is
 * flushed to Postgres after every request and after every settle that outlives its response (a
 * stream's), and a cron trigger (wrangler.toml) also flushes and delivers notifications, purges
 * and grants. The isolate stays alive for them (waitUntil).
 */
type Bindings = Record<string, string | undefined>;
type ExecutionContext = { waitUntil(p: Promise<unknown>): void; passThroughOnException?(): void };

interface Instance {
  app: ReturnType<typeof createApp>;
  jobs: BackgroundJobs;
  log: Logger;
  /** Flushes the ledger now; a call while a flush runs makes it go round once more. */
  flush(): Promise<void>;
}

let instance: Promise<Instance> | undefined;

async function start(env: Bindings): Promise<Instance> {
  const config = parseConfig(env);
  if (!config.DATABASE_URL)
    throw new Error("DATABASE_URL must be set on Workers (no embedded database there)");
  const log = createLogger(config.LOG_LEVEL, (line) => console.log(line.trimEnd()));
  const database = await openDatabase({ databaseUrl: config.DATABASE_URL, dataDir: "" });
  const catalog = createCatalog();
  if ("error" in catalog) throw new Error(catalog.error);
  const services = buildServices(config, {
    catalog,
    database,
    store: createMemoryStore(),
    upstream: createFetchUpstream({
      headersTimeoutMs: config.UPSTREAM_HEADERS_TIMEOUT_MS,
      idleTimeoutMs: config.UPSTREAM_IDLE_TIMEOUT_MS,
    }),
    clock: systemClock,
    log,
    payments: config.STRIPE_SECRET_KEY ? stripePayments(config.STRIPE_SECRET_KEY) : noPayments,
  });
  const jobs = createBackgroundJobs(config, services, { consumer: config.FLUSHER_CONSUMER ?? "worker" });
  let running: Promise<void> | undefined;
  let again = false;
  const flush = (): Promise<void> => {
    if (running) {
      again = true;
      return running;
    }
    running = (async () => {
      do {
        again = false;
        await jobs.flusher.drain().catch((err) => log.error("flush failed", { err: String(err) }));
      } while (again);
    })().finally(() => {
      running = undefined;
    });
    return running;
  };
  return { app: createApp(services), jobs, log, flush };
}

function instanceFor(env: Bindings): Promise<Instance> {
  instance ??= start(env).catch((err: unknown) => {
    instance = undefined; // the next request tries again
    throw err;
  });
  return instance;
}

export default {
  async fetch(request: Request, env: Bindings, ctx: ExecutionContext): Promise<Response> {
    const { app, flush } = await instanceFor(env);
    // What the app leaves running after its response (a stream's settle) is flushed when it ends.
    const tracked: ExecutionContext = {
      waitUntil: (p) => ctx.waitUntil(p.finally(flush)),
      passThroughOnException: () => ctx.passThroughOnException?.(),
    };
    const res = await app.fetch(request, env, tracked as never);
    ctx.waitUntil(flush());
    return res;
  },

  async scheduled(_event: unknown, env: Bindings, ctx: ExecutionContext): Promise<void> {
    const { jobs, log, flush } = await instanceFor(env);
    const deliver = jobs.notifications
      .runOnce()
      .catch((err) => log.error("notifications failed", { err: String(err) }));
    ctx.waitUntil(Promise.all([flush(), deliver, jobs.purge(), jobs.grant()]));
  },
};
