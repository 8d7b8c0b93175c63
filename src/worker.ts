import type { DurableObjectNamespace, ExecutionContext } from "cloudflare:workers";
import { createBackgroundJobs } from "./background.ts";
import { type Config, parseConfig } from "./config.ts";
import { systemClock } from "./core/clock.ts";
import { createLogger } from "./core/log.ts";
import { openPostgres } from "./db/postgres.ts";
import { type ScopedDatabase, scopedDatabase } from "./db/scoped.ts";
import { createApp } from "./gateway/app.ts";
import { metricsOff } from "./gateway/metrics-port.ts";
import type { Services } from "./gateway/services.ts";
import { createFetchUpstream } from "./gateway/upstream.ts";
import { createDurableObjectStore } from "./metering/durable-object-store.ts";
import type { OrgMeterRpc } from "./metering/org-meter-object.ts";
import { noPayments, stripePayments } from "./metering/payments.ts";
import type { MeteringStore } from "./metering/store.ts";
import { createCatalog } from "./pricing/catalog.ts";
import { buildServices } from "./services.ts";

export { OrgMeter } from "./metering/org-meter-object.ts";

/**
 * The Cloudflare Workers entry: the same app as `npm start`, wired for workerd. Providers are
 * reached with fetch(); Postgres with postgres.js through Hyperdrive (or DATABASE_URL), a client per
 * request, cron run and alarm; the metering store is one Durable Object per org (OrgMeter), which
 * also writes its ledger events to Postgres on its alarm. Prometheus metrics are off (see README).
 *
 * The services are built once per isolate; what a request leaves running (a stream's pump and its
 * settle) is handed to waitUntil, and the request's database client is closed after it.
 */
export interface WorkerEnv {
  ORG_METER: DurableObjectNamespace<OrgMeterRpc>;
  HYPERDRIVE?: { connectionString: string };
  [name: string]: unknown;
}

interface Instance {
  app: ReturnType<typeof createApp>;
  config: Config;
  services: Services & { store: MeteringStore };
  scoped: ScopedDatabase;
}

let instance: Instance | undefined;

function start(env: WorkerEnv): Instance {
  const vars: Record<string, string | undefined> = {};
  for (const [name, value] of Object.entries(env)) if (typeof value === "string") vars[name] = value;
  const config = parseConfig(vars);
  const url = env.HYPERDRIVE?.connectionString ?? config.DATABASE_URL;
  if (!url) throw new Error("set a HYPERDRIVE binding or DATABASE_URL (no embedded database on Workers)");
  const log = createLogger(config.LOG_LEVEL, (line) => console.log(line.trimEnd()));
  const catalog = createCatalog();
  if ("error" in catalog) throw new Error(catalog.error);
  // A handful of connections per request at most: Hyperdrive pools them for real.
  const scoped = scopedDatabase(() => openPostgres(url, { poolSize: 5 }));
  const services = buildServices(config, {
    catalog,
    database: scoped.database,
    store: createDurableObjectStore(env.ORG_METER),
    upstream: createFetchUpstream({
      headersTimeoutMs: config.UPSTREAM_HEADERS_TIMEOUT_MS,
      idleTimeoutMs: config.UPSTREAM_IDLE_TIMEOUT_MS,
    }),
    clock: systemClock,
    log,
    payments: config.STRIPE_SECRET_KEY ? stripePayments(config.STRIPE_SECRET_KEY) : noPayments,
    metrics: () => metricsOff,
  });
  return { app: createApp(services), config, services, scoped };
}

/**
 * Runs `fn` with a database client of its own and a waitUntil that collects what it leaves running,
 * all of it kept alive by the runtime's waitUntil until it has ended.
 */
function inScope<T>(
  scoped: ScopedDatabase,
  ctx: ExecutionContext,
  fn: (ctx: ExecutionContext) => Promise<T>,
): Promise<T> {
  const scope = scoped.open();
  const work: Promise<unknown>[] = [];
  const tracked: ExecutionContext = {
    waitUntil: (p) => void work.push(p),
    passThroughOnException: () => ctx.passThroughOnException(),
    props: ctx.props,
  };
  const result = scope.run(() => fn(tracked));
  const ended = (async () => {
    await result.catch(() => undefined);
    while (work.length) await Promise.allSettled(work.splice(0));
  })();
  ctx.waitUntil(ended);
  return result;
}

export default {
  fetch(request: Request, env: WorkerEnv, ctx: ExecutionContext): Promise<Response> {
    instance ??= start(env);
    const { app, scoped } = instance;
    return inScope(scoped, ctx, async (tracked) => app.fetch(request, env, tracked));
  },

  /**
   * The cron trigger (wrangler.toml): billing notifications, purges of deleted orgs, monthly grants,
   * and the auto-recharge credits still owed.
   */
  scheduled(_event: unknown, env: WorkerEnv, ctx: ExecutionContext): Promise<void> {
    instance ??= start(env);
    const { config, services, scoped } = instance;
    return inScope(scoped, ctx, async () => {
      // Built per run: the notification outbox holds the run's database client.
      const jobs = createBackgroundJobs(config, services, { consumer: "worker" });
      const delivered = jobs.notifications
        .runOnce()
        .catch((err) => services.log.error("notifications failed", { err: String(err) }));
      await Promise.all([delivered, jobs.purge(), jobs.grant(), jobs.payOwedCredits()]);
    });
  },
};
