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

/**
 * A field the CLI may leave empty: it is Go, marshals every field of its struct (none is
 * `omitempty`), and so sends `""`, `null` or `false` for "not given".
 */
const given = <T extends z.ZodType>(schema: T) =>
  z.preprocess((v) => (v === "" || v === null || v === false ? undefined : v), schema.optional());

/** The Planto CLI's CreditsLogRequest. */
export const creditsLogRequest = z
  .object({
    transactionType: given(z.enum(["debit", "credit"])),
    planId: given(z.string()),
    sessionId: given(z.string()),
    dayStart: given(z.iso.datetime({ offset: true })),
    month: given(z.boolean()),
  })
  .strip();

/** The CLI's declared maximum page size (it never checks it: a larger `size` is clamped). */
const MAX_PAGE_SIZE = 500;
/** The CLI's default page size. */
const DEFAULT_PAGE_SIZE = 100;
/**
 * Rows counted for `numPages`; past it the count stops and `numPagesMax` says "more pages than
 * counted" (the CLI shows `+` and lets the user page on), so a long ledger costs a bounded count.
 */
const MAX_COUNTED_ROWS = 100_000;

/** `{key: "usd"}` from rows of amounts. */
const usdBy = <T extends { amount: number }>(rows: T[], key: (row: T) => string): Record<string, string> =>
  Object.fromEntries(rows.map((row) => [key(row), formatUsd(row.amount)]));

const usdOrNull = (n: number | null) => (n === null ? null : formatUsd(n));

/** The CLI renders four credit types; the admin API's finer ones show as the one they belong to. */
const CLI_CREDIT_TYPE: Record<string, string> = {
  trial: "trial",
  grant: "grant",
  admin_grant: "grant",
  purchase: "purchase",
  switch: "switch",
};

/** The model as the CLI names it: the provider's own name (`gpt-4.1`, not Planto's `openai/gpt-4.1`). */
function providerModelName(provider: string | null, name: string | null): string | undefined {
  if (name === null) return undefined;
  return provider === "openai" && name.startsWith("openai/") ? name.slice("openai/".length) : name;
}

/**
 * The debit's base and surcharge as the CLI reads them: it shows the markup as surcharge / base, so
 * the base is never zero. A debit row exists only when the call cost something (amount > 0), and
 * the base of a call that used tokens rounds up to at least one nanodollar; a row from before the
 * base was recorded (or with a zero base) shows its whole amount as the base and no surcharge.
 */
function debitSplit(row: CreditTransactionRow): { base: number; surcharge: number } {
  const base = row.debitBaseAmount ?? 0;
  if (base > 0) return { base, surcharge: row.debitSurcharge ?? 0 };
  return { base: Math.max(row.amount, 1), surcharge: 0 };
}

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
      creditType: CLI_CREDIT_TYPE[row.creditType ?? ""] ?? "grant",
      creditIsAutoRebuy: row.creditIsAutoRebuy ?? false,
      creditAutoRebuyMinThreshold: usdOrNull(row.creditAutoRebuyMinThreshold) ?? undefined,
      creditAutoRebuyToBalance: usdOrNull(row.creditAutoRebuyToBalance) ?? undefined,
    };
  }
  const split = debitSplit(row);
  return {
    ...base,
    // The whole prompt, as OpenAI's prompt_tokens counts it: the ledger keeps cached tokens apart.
    debitInputTokens: (row.debitInputTokens ?? 0) + (row.debitCachedTokens ?? 0),
    debitOutputTokens: row.debitOutputTokens ?? 0,
    // Of debitInputTokens, how many were read from the prompt cache (billed at the cached rate).
    debitCachedTokens: row.debitCachedTokens ?? 0,
    debitModelInputPricePerToken: row.debitModelInputPricePerToken ?? "0",
    debitModelOutputPricePerToken: row.debitModelOutputPricePerToken ?? "0",
    debitBaseAmount: formatUsd(split.base),
    debitSurcharge: formatUsd(split.surcharge),
    debitModelProvider: row.debitModelProvider ?? undefined,
    debitModelName: providerModelName(row.debitModelProvider, row.debitModelName),
    debitModelPackName: row.debitModelPackName ?? undefined,
    debitModelRole: row.debitModelRole ?? undefined,
    debitPurpose: row.debitPurpose ?? "chat",
    debitPlanId: row.debitPlanId ?? undefined,
    debitPlanName: row.debitPlanName ?? undefined,
    debitId: row.id,
    // Absent without a discount: the CLI prints a "cache discount" line for any value, zero too.
    debitCacheDiscount: row.debitCacheDiscount ? formatUsd(row.debitCacheDiscount) : undefined,
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
    const asked = Number(c.req.query("size") || DEFAULT_PAGE_SIZE);
    const page = Number(c.req.query("page") || 1);
    if (!Number.isInteger(asked) || asked < 1) {
      throw new GatewayError("invalid_request_error", "size must be a positive integer", { param: "size" });
    }
    const size = Math.min(asked, MAX_PAGE_SIZE);
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
      { size, page, countAtMost: MAX_COUNTED_ROWS },
    );
    const planNamesById: Record<string, string> = {};
    for (const row of rows)
      if (row.debitPlanId && row.debitPlanName) planNamesById[row.debitPlanId] = row.debitPlanName;
    const numPages = Math.max(1, Math.ceil(total / size));
    return c.json({
      transactions: rows.map((row) => renderTransaction(row, org.name)),
      numPages,
      numPagesMax: total >= MAX_COUNTED_ROWS,
      monthStart: monthStart.toISOString(),
      planNamesById,
    });
  });

  return app;
}
