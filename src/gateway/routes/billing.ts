import { type Context, Hono } from "hono";
import { z } from "zod";
import { GatewayError } from "../../core/errors.ts";
import { type CreditTransactionRow, listTransactions, summarizeDebits } from "../../db/ledger.ts";
import { getOrg } from "../../db/orgs.ts";
import { billingMonthStart } from "../../metering/billing-month.ts";
import { formatUsd } from "../../pricing/money.ts";
import type { AuthVariables } from "../auth.ts";
import { readBody } from "../client-io.ts";
import type { Services } from "../services.ts";
import { parseJsonObject } from "../validate.ts";

type Env = { Variables: AuthVariables };

/** The Planto CLI's CreditsLogRequest. */
export const creditsLogRequest = z
  .object({
    transactionType: z.enum(["debit", "credit"]).optional(),
    planId: z.string().min(1).optional(),
    sessionId: z.string().min(1).optional(),
    dayStart: z.iso.datetime({ offset: true }).optional(),
    month: z.boolean().optional(),
  })
  .strip();

const MAX_PAGE_SIZE = 500;

/** `{key: "usd"}` from rows of amounts. */
const usdBy = <T extends { amount: number }>(rows: T[], key: (row: T) => string): Record<string, string> =>
  Object.fromEntries(rows.map((row) => [key(row), formatUsd(row.amount)]));

const usdOrNull = (n: number | null) => (n === null ? null : formatUsd(n));

/** Renders a ledger row as the CLI's CreditsTransaction (money as USD decimal strings). */
export function renderTransaction(row: CreditTransactionRow, orgName: string): Record<string, unknown> {
  const base = {
    id: row.id,
    orgId: row.orgId,
    orgName,
    userId: row.userId ?? undefined,
    transactionType: row.transactionType,
    amount: formatUsd(row.amount),
    startBalance: formatUsd(row.startBalance),
    endBalance: formatUsd(row.endBalance),
    createdAt: row.createdAt.toISOString(),
  };
  if (row.transactionType === "credit") {
    return {
      ...base,
      creditType: row.creditType,
      creditIsAutoRebuy: row.creditIsAutoRebuy ?? false,
      creditAutoRebuyMinThreshold: usdOrNull(row.creditAutoRebuyMinThreshold) ?? undefined,
      creditAutoRebuyToBalance: usdOrNull(row.creditAutoRebuyToBalance) ?? undefined,
    };
  }
  return {
    ...base,
    debitInputTokens: row.debitInputTokens ?? 0,
    debitOutputTokens: row.debitOutputTokens ?? 0,
    // Of debitInputTokens, how many were read from the prompt cache (billed at the cached rate).
    debitCachedTokens: row.debitCachedTokens ?? 0,
    debitModelInputPricePerToken: row.debitModelInputPricePerToken ?? "0",
    debitModelOutputPricePerToken: row.debitModelOutputPricePerToken ?? "0",
    debitBaseAmount: formatUsd(row.debitBaseAmount ?? row.amount),
    debitSurcharge: formatUsd(row.debitSurcharge ?? 0),
    debitModelProvider: row.debitModelProvider,
    debitModelName: row.debitModelName,
    debitModelPackName: row.debitModelPackName ?? undefined,
    debitModelRole: row.debitModelRole ?? undefined,
    debitPurpose: row.debitPurpose ?? "chat",
    debitPlanId: row.debitPlanId ?? undefined,
    debitPlanName: row.debitPlanName ?? undefined,
    debitId: row.id,
    debitCacheDiscount: usdOrNull(row.debitCacheDiscount) ?? undefined,
    debitSessionId: row.debitSessionId ?? undefined,
  };
}

export function billingRoutes(services: Services): Hono<Env> {
  const app = new Hono<Env>();
  const { meter, database, clock } = services;

  // `orgId`/`orgName` tell a client whose key it holds (`planto-gateway usage` needs no --org); the
  // Planto CLI decodes `balance` only and ignores the rest.
  app.get("/balance", async (c) => {
    const { org } = c.get("auth");
    const balance = await meter.balance(org.id);
    return c.json({ balance: formatUsd(balance ?? 0), orgId: org.id, orgName: org.name });
  });

  /** Reads the CLI's CreditsLogRequest and the scope it names. */
  const scope = async (c: Context<Env>) => {
    const raw = await readBody(c, 64 * 1024);
    const parsed = creditsLogRequest.safeParse(raw.byteLength ? parseJsonObject(raw) : {});
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      throw new GatewayError("invalid_request_error", `${issue?.path.join(".")}: ${issue?.message}`, {
        param: issue?.path.join(".") ?? null,
      });
    }
    const req = parsed.data;
    const { org } = c.get("auth");
    const anchor = (await getOrg(database.db, org.id))?.billingCycleStartedAt ?? new Date(0);
    const monthStart = billingMonthStart(anchor, new Date(clock.now()));
    const since = req.dayStart ? new Date(req.dayStart) : req.month ? monthStart : undefined;
    return { req, org, monthStart, since };
  };

  app.post("/credits_summary", async (c) => {
    const { req, org, monthStart, since } = await scope(c);
    const [summary, balance] = await Promise.all([
      summarizeDebits(database.db, { orgId: org.id, planId: req.planId, sessionId: req.sessionId, since }),
      meter.balance(org.id),
    ]);
    return c.json({
      balance: formatUsd(balance ?? 0),
      totalSpend: formatUsd(summary.total),
      monthStart: monthStart.toISOString(),
      byPlanId: usdBy(summary.byPlan, (r) => r.planId),
      planNamesById: Object.fromEntries(
        summary.byPlan.filter((p) => p.planName).map((p) => [p.planId, p.planName]),
      ),
      byModelName: usdBy(summary.byModel, (r) => r.model),
      byPurpose: usdBy(summary.byPurpose, (r) => r.purpose),
      cacheSavings: formatUsd(summary.cacheSavings),
    });
  });

  app.post("/credits_transactions", async (c) => {
    const size = Number(c.req.query("size") ?? 50);
    const page = Number(c.req.query("page") ?? 1);
    if (!Number.isInteger(size) || size < 1 || size > MAX_PAGE_SIZE) {
      throw new GatewayError("invalid_request_error", `size must be an integer from 1 to ${MAX_PAGE_SIZE}`, {
        param: "size",
      });
    }
    if (!Number.isInteger(page) || page < 1) {
      throw new GatewayError("invalid_request_error", "page must be a positive integer", { param: "page" });
    }
    const { req, org, monthStart, since } = await scope(c);
    const { rows, total } = await listTransactions(
      database.db,
      {
        orgId: org.id,
        transactionType: req.transactionType,
        planId: req.planId,
        sessionId: req.sessionId,
        since,
      },
      { size, page },
    );
    const planNamesById: Record<string, string> = {};
    for (const row of rows)
      if (row.debitPlanId && row.debitPlanName) planNamesById[row.debitPlanId] = row.debitPlanName;
    const numPages = Math.max(1, Math.ceil(total / size));
    return c.json({
      transactions: rows.map((row) => renderTransaction(row, org.name)),
      numPages,
      numPagesMax: numPages,
      monthStart: monthStart.toISOString(),
      planNamesById,
    });
  });

  return app;
}
