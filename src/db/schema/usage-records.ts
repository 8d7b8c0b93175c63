import { bigint, boolean, index, integer, pgTable, text, timestamp } from "drizzle-orm/pg-core";

/**
 * One row per metered model call, integrated or BYO, charged or not: what was asked of which model,
 * the tokens, the cost parts at list price, the timings and how the call ended. The id is the
 * request id; a charged call also has a debit row in credit_transactions with the same id.
 */
export const usageRecords = pgTable(
  "usage_records",
  {
    id: text("id").primaryKey(),
    orgId: text("org_id").notNull(),
    keyId: text("key_id").notNull(),
    route: text("route").notNull(),
    provider: text("provider").notNull(),
    model: text("model").notNull(),
    byo: boolean("byo").notNull(),
    inputTokens: integer("input_tokens").notNull(),
    cachedTokens: integer("cached_tokens").notNull(),
    cacheWriteTokens: integer("cache_write_tokens").notNull(),
    outputTokens: integer("output_tokens").notNull(),
    reasoningTokens: integer("reasoning_tokens").notNull(),
    charged: bigint("charged", { mode: "number" }).notNull(),
    listPrice: bigint("list_price", { mode: "number" }).notNull(),
    base: bigint("base", { mode: "number" }).notNull(),
    surcharge: bigint("surcharge", { mode: "number" }).notNull(),
    cacheDiscount: bigint("cache_discount", { mode: "number" }).notNull(),
    planId: text("plan_id"),
    planName: text("plan_name"),
    sessionId: text("session_id"),
    userId: text("user_id"),
    purpose: text("purpose"),
    modelRole: text("model_role"),
    modelPack: text("model_pack"),
    startedAt: timestamp("started_at", { withTimezone: true, mode: "date" }).notNull(),
    firstTokenAt: timestamp("first_token_at", { withTimezone: true, mode: "date" }),
    endedAt: timestamp("ended_at", { withTimezone: true, mode: "date" }).notNull(),
    stoppedEarly: boolean("stopped_early").notNull(),
    clientCancelled: boolean("client_cancelled").notNull(),
    upstreamError: boolean("upstream_error").notNull(),
    noReportedUsage: boolean("no_reported_usage").notNull(),
    /** Upstream requests the call took (retries and fallbacks); `provider` is the one that served it. */
    attempts: integer("attempts").notNull().default(1),
  },
  (t) => [index("usage_records_org_started_idx").on(t.orgId, t.startedAt)],
);
