import { parseConfig } from "./config.ts";
import { openDatabase } from "./db/client.ts";
import { createApp } from "./gateway/app.ts";
import { createLogger } from "./gateway/log.ts";
import { systemClock } from "./gateway/services.ts";
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
 */
type Bindings = Record<string, string | undefined>;

let app: ReturnType<typeof createApp> | undefined;

async function appFor(env: Bindings): Promise<ReturnType<typeof createApp>> {
  if (app) return app;
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
    upstream: createFetchUpstream({ headersTimeoutMs: config.UPSTREAM_HEADERS_TIMEOUT_MS }),
    clock: systemClock,
    log,
    payments: config.STRIPE_SECRET_KEY ? stripePayments(config.STRIPE_SECRET_KEY) : noPayments,
  });
  app = createApp(services);
  return app;
}

export default {
  async fetch(
    request: Request,
    env: Bindings,
    ctx: { waitUntil(p: Promise<unknown>): void },
  ): Promise<Response> {
    return (await appFor(env)).fetch(request, env, ctx as never);
  },
};
