import { createHash, timingSafeEqual } from "node:crypto";
import { Hono } from "hono";
import { z } from "zod";
import { GatewayError } from "../../core/errors.ts";
import {
  createApiKey,
  createOrg,
  getOrg,
  markOrgDeleted,
  type Org,
  revokeApiKey,
  setApiKeyRateLimits,
  updateOrgBilling,
} from "../../db/orgs.ts";
import { billingMonthStart } from "../../metering/billing-month.ts";
import { monthlyGrantId } from "../../metering/grants.ts";
import { formatUsd, parseUsd } from "../../pricing/money.ts";
import { readBody } from "../client-io.ts";
import type { Services } from "../services.ts";
import { parseJsonObject } from "../validate.ts";
import { renderTransaction } from "./billing.ts";

const usd = z
  .string()
  .refine((s) => parseUsd(s) !== null && (parseUsd(s) as number) >= 0, "a USD decimal string");

const creditSchema = z.object({
  amount: usd.refine((s) => (parseUsd(s) as number) > 0, "a positive USD decimal string"),
  creditType: z.enum(["trial", "grant", "admin_grant", "purchase", "switch"]).default("admin_grant"),
});

/** Where the org's billing notifications go; null clears it (then none are sent). */
const billingEmail = z.email("an email address like billing@example.com").max(254).nullable();

const createOrgSchema = z.object({
  name: z.string().min(1).max(200),
  billingMode: z.enum(["integrated", "byo"]),
  isTrial: z.boolean(),
  billingEmail: billingEmail.optional(),
});

const billingPatchSchema = z
  .object({
    billingMode: z.enum(["integrated", "byo"]),
    isTrial: z.boolean(),
    subscriptionStatus: z.enum(["active", "paused", "overdue", "canceled"]),
    autoRebuyEnabled: z.boolean(),
    autoRebuyMinThreshold: usd.nullable(),
    autoRebuyToBalance: usd.nullable(),
    billingEmail,
    notifyThreshold: usd.nullable(),
    maxThresholdPerMonth: usd.nullable(),
    billingCycleStartedAt: z.iso.datetime({ offset: true }),
    stripeCustomerId: z.string().min(1).nullable(),
    stripePaymentMethodId: z.string().min(1).nullable(),
  })
  .partial()
  .strict();

/** Per minute, at least 1 (an int4 column); null removes the limit. To stop a key, revoke it. */
const perMinute = z.number().int().min(1).max(2_147_483_647).nullable();

const rateLimitsSchema = z
  .object({ requestsPerMinute: perMinute, tokensPerMinute: perMinute })
  .partial()
  .strict();

const rateLimitsPatch = (p: z.infer<typeof rateLimitsSchema>) => ({
  rateLimitRpm: p.requestsPerMinute,
  rateLimitTpm: p.tokensPerMinute,
});

const renderRateLimits = (row: { rateLimitRpm: number | null; rateLimitTpm: number | null }) => ({
  requestsPerMinute: row.rateLimitRpm,
  tokensPerMinute: row.rateLimitTpm,
});

function nanosOrNull(v: string | null | undefined): number | null | undefined {
  return v === undefined ? undefined : v === null ? null : (parseUsd(v) as number);
}

/** Parses an admin request body against a schema; bad input is a 400 naming the field. */
async function input<T extends z.ZodType>(raw: Promise<Uint8Array>, schema: T): Promise<z.infer<T>> {
  const body = parseJsonObject(await raw);
  const result = schema.safeParse(body);
  if (!result.success) {
    const issue = result.error.issues[0];
    const param = issue?.path.join(".") || null;
    throw new GatewayError("invalid_request_error", `${param ?? "body"}: ${issue?.message ?? "invalid"}`, {
      param,
    });
  }
  return result.data;
}

const usdOrNull = (n: number | null) => (n === null ? null : formatUsd(n));

export function renderOrg(org: Org, balance: number | undefined): Record<string, unknown> {
  return {
    id: org.id,
    name: org.name,
    billingMode: org.billingMode,
    isTrial: org.isTrial,
    subscriptionStatus: org.subscriptionStatus,
    autoRebuyEnabled: org.autoRebuyEnabled,
    autoRebuyMinThreshold: usdOrNull(org.autoRebuyMinThreshold),
    autoRebuyToBalance: usdOrNull(org.autoRebuyToBalance),
    autoRebuyFailures: org.autoRebuyFailures,
    stripeCustomerId: org.stripeCustomerId,
    billingEmail: org.billingEmail,
    notifyThreshold: usdOrNull(org.notifyThreshold),
    maxThresholdPerMonth: usdOrNull(org.maxThresholdPerMonth),
    billingCycleStartedAt: org.billingCycleStartedAt.toISOString(),
    createdAt: org.createdAt.toISOString(),
    deletedAt: org.deletedAt ? org.deletedAt.toISOString() : null,
    rateLimits: renderRateLimits(org),
    balance: balance === undefined ? null : formatUsd(balance),
  };
}

/** `Authorization: Bearer $ADMIN_TOKEN`; the admin API does not exist without the token. */
export function adminRoutes(services: Services): Hono {
  const app = new Hono();
  const { config, database, meter, clock } = services;
  const token = config.ADMIN_TOKEN ? Buffer.from(config.ADMIN_TOKEN) : undefined;

  app.use("*", async (c, next) => {
    if (!token) throw new GatewayError("not_found", "the admin API is disabled (ADMIN_TOKEN is not set)");
    const header = c.req.header("authorization") ?? "";
    const presented = Buffer.from(header.startsWith("Bearer ") ? header.slice(7).trim() : "");
    if (presented.length !== token.length || !timingSafeEqual(presented, token)) {
      throw new GatewayError("invalid_api_key", "invalid admin token");
    }
    await next();
  });

  const orgOr404 = async (id: string): Promise<Org> => {
    const org = await getOrg(database.db, id);
    if (!org || org.deletedAt) throw new GatewayError("not_found", `org '${id}' does not exist`);
    return org;
  };

  app.post("/orgs", async (c) => {
    const body = await input(readBody(c, 64 * 1024), createOrgSchema);
    const org = await createOrg(database.db, body);
    await meter.onOrgCreated(org);
    return c.json(renderOrg(org, await meter.balance(org.id)), 201);
  });

  app.get("/orgs/:id", async (c) => {
    const org = await orgOr404(c.req.param("id"));
    return c.json(renderOrg(org, await meter.balance(org.id)));
  });

  app.patch("/orgs/:id/billing", async (c) => {
    const id = c.req.param("id");
    const before = await orgOr404(id);
    const patch = await input(readBody(c, 64 * 1024), billingPatchSchema);
    const org = await updateOrgBilling(database.db, id, {
      billingMode: patch.billingMode,
      isTrial: patch.isTrial,
      subscriptionStatus: patch.subscriptionStatus,
      autoRebuyEnabled: patch.autoRebuyEnabled,
      autoRebuyMinThreshold: nanosOrNull(patch.autoRebuyMinThreshold),
      autoRebuyToBalance: nanosOrNull(patch.autoRebuyToBalance),
      billingEmail: patch.billingEmail,
      notifyThreshold: nanosOrNull(patch.notifyThreshold),
      maxThresholdPerMonth: nanosOrNull(patch.maxThresholdPerMonth),
      billingCycleStartedAt: patch.billingCycleStartedAt ? new Date(patch.billingCycleStartedAt) : undefined,
      stripeCustomerId: patch.stripeCustomerId,
      stripePaymentMethodId: patch.stripePaymentMethodId,
      // Turning auto-recharge back on starts its failure count afresh.
      ...(patch.autoRebuyEnabled ? { autoRebuyFailures: 0 } : {}),
    });
    if (!org) throw new GatewayError("not_found", `org '${id}' does not exist`);
    services.keys.invalidate(); // the hot path reads billing settings with the key
    if (before.billingMode === "byo" && org.billingMode === "integrated" && !org.isTrial) {
      // A paid org switching to integrated mode gets this month's grant now, as a `switch` credit
      // under the month's grant id, so the monthly job does not grant it again.
      const month = billingMonthStart(org.billingCycleStartedAt, new Date(clock.now()));
      await meter.credit({
        orgId: org.id,
        id: monthlyGrantId(org.id, month),
        amount: parseUsd(config.MONTHLY_GRANT) ?? 0,
        creditType: "switch",
      });
    }
    return c.json(renderOrg(org, await meter.balance(org.id)));
  });

  // Rate limits apply on every instance within KEY_CACHE_TTL_MS (they travel with the cached key).
  app.patch("/orgs/:id/rate-limits", async (c) => {
    const id = c.req.param("id");
    await orgOr404(id);
    const patch = await input(readBody(c, 64 * 1024), rateLimitsSchema);
    const org = await updateOrgBilling(database.db, id, rateLimitsPatch(patch));
    if (!org) throw new GatewayError("not_found", `org '${id}' does not exist`);
    services.keys.invalidate();
    return c.json({ orgId: id, rateLimits: renderRateLimits(org) });
  });

  app.patch("/api-keys/:id/rate-limits", async (c) => {
    const id = c.req.param("id");
    const patch = await input(readBody(c, 64 * 1024), rateLimitsSchema);
    const key = await setApiKeyRateLimits(database.db, id, rateLimitsPatch(patch));
    if (!key) throw new GatewayError("not_found", `api key '${id}' does not exist`);
    services.keys.invalidate();
    return c.json({ id, orgId: key.orgId, rateLimits: renderRateLimits(key) });
  });

  app.post("/orgs/:id/credits", async (c) => {
    const id = c.req.param("id");
    await orgOr404(id);
    const idempotencyKey = c.req.header("idempotency-key")?.trim();
    if (!idempotencyKey) {
      throw new GatewayError("invalid_request_error", "send an Idempotency-Key header with every credit", {
        param: "Idempotency-Key",
      });
    }
    const body = await input(readBody(c, 64 * 1024), creditSchema);
    const amount = parseUsd(body.amount) as number;
    const result = await meter.credit({
      orgId: id,
      id: `cr_${createHash("sha256").update(`${id}\n${idempotencyKey}`).digest("hex").slice(0, 32)}`,
      amount,
      creditType: body.creditType,
    });
    if (!result.ok) {
      throw new GatewayError(
        "invalid_request_error",
        `Idempotency-Key was already used for a credit of ${formatUsd(result.firstAmount)}`,
        { status: 409, param: "Idempotency-Key" },
      );
    }
    // A replay must be the same request: the same amount (checked above) and the same type.
    if (result.duplicate && result.transaction.creditType !== body.creditType) {
      throw new GatewayError(
        "invalid_request_error",
        `Idempotency-Key was already used for a ${result.transaction.creditType} credit`,
        { status: 409, param: "Idempotency-Key" },
      );
    }
    const org = await orgOr404(id);
    return c.json(renderTransaction(result.transaction, org.name), result.duplicate ? 200 : 201);
  });

  app.delete("/orgs/:id", async (c) => {
    const id = c.req.param("id");
    if (!(await markOrgDeleted(database.db, id, new Date(clock.now())))) {
      throw new GatewayError("not_found", `org '${id}' does not exist`);
    }
    services.keys.invalidate();
    return c.json({ id, deleted: true });
  });

  app.post("/orgs/:id/api-keys", async (c) => {
    const id = c.req.param("id");
    const created = await createApiKey(database.db, id);
    if (!created) throw new GatewayError("not_found", `org '${id}' does not exist`);
    return c.json({ id: created.id, key: created.key, prefix: created.prefix, orgId: id }, 201);
  });

  app.delete("/api-keys/:id", async (c) => {
    const id = c.req.param("id");
    if (!(await revokeApiKey(database.db, id)))
      throw new GatewayError("not_found", `api key '${id}' does not exist`);
    services.keys.invalidate();
    return c.json({ id, revoked: true });
  });

  return app;
}
