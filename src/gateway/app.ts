import { timingSafeEqual } from "node:crypto";
import { Hono, type MiddlewareHandler } from "hono";
import { GatewayError, renderError } from "../core/errors.ts";
import { databaseUnavailable, isDatabaseUnreachable, rootMessage } from "../db/guard.ts";
import { requireApiKey } from "./auth.ts";
import { NAMESPACE_PARAM } from "./namespace.ts";
import { requestIds } from "./request-id.ts";
import { adminRoutes } from "./routes/admin.ts";
import { billingRoutes } from "./routes/billing.ts";
import { healthRoutes } from "./routes/health.ts";
import { inferenceRoutes } from "./routes/inference.ts";
import { modelRoutes } from "./routes/models.ts";
import { stripeRoutes } from "./routes/stripe.ts";
import type { Services } from "./services.ts";

/** The one app both entries serve (Node: src/server.ts, Workers: src/worker.ts). */
export function createApp(services: Services): Hono {
  const app = new Hono();
  app.use("*", requestIds());

  app.route("/", healthRoutes(services));
  // Billing and admin are Postgres reads and writes: during an outage they answer 503 at once.
  app.use("/admin/*", failFast(services));
  app.use("/billing/*", failFast(services));
  app.route("/admin", adminRoutes(services));

  const v1 = new Hono();
  v1.route("/", modelRoutes(services));
  v1.use("/chat/*", requireApiKey(services.keys));
  v1.use("/code/*", requireApiKey(services.keys));
  v1.route("/", inferenceRoutes(services));
  app.route("/v1", v1);
  // The providers' drop-in base URLs: the same routes, auth, metering and errors; the namespace
  // (see namespaceOf) only changes how a model name resolves.
  app.route(`/:${NAMESPACE_PARAM}{openai|openrouter|relace}/v1`, v1);

  // Stripe authenticates its webhook by signature, not by an org key.
  app.route("/billing/stripe", stripeRoutes(services));
  const billing = new Hono();
  billing.use("*", requireApiKey(services.keys));
  billing.route("/", billingRoutes(services));
  app.route("/billing", billing);

  app.notFound(() => renderError(new GatewayError("not_found", "no such route")));
  // Revenue and traffic per model are not for whoever can reach the public port.
  const metricsToken = services.config.METRICS_TOKEN ? Buffer.from(services.config.METRICS_TOKEN) : undefined;
  app.get("/metrics", async (c) => {
    if (!services.metrics.enabled) throw new GatewayError("not_found", "metrics are off on this runtime");
    if (!metricsToken) throw new GatewayError("not_found", "metrics are off (METRICS_TOKEN is not set)");
    const header = c.req.header("authorization") ?? "";
    const presented = Buffer.from(header.startsWith("Bearer ") ? header.slice(7).trim() : "");
    if (presented.length !== metricsToken.length || !timingSafeEqual(presented, metricsToken)) {
      throw new GatewayError("invalid_api_key", "invalid metrics token");
    }
    return c.body(await services.metrics.render(), 200, { "content-type": services.metrics.contentType });
  });

  app.onError((err) => {
    if (!(err instanceof GatewayError) && isDatabaseUnreachable(err)) {
      services.dbGuard.observe(err);
      services.log.warn("postgres unreachable", { err: rootMessage(err) });
      err = databaseUnavailable();
    }
    if (err instanceof GatewayError) services.metrics.refusals.inc({ code: err.code });
    if (!(err instanceof GatewayError)) {
      services.log.error("unhandled error", { err: err instanceof Error ? err.stack : String(err) });
    }
    return renderError(err);
  });
  return app;
}

/** Postgres work of a route within DB_TIMEOUT_MS, and none at all while the breaker is open. */
function failFast(services: Services): MiddlewareHandler {
  return async (_c, next) => {
    await services.dbGuard.run(() => next());
  };
}
