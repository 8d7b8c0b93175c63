import { bigint, boolean, index, integer, pgTable, text, timestamp } from "drizzle-orm/pg-core";

/**
 * The money ledger: every credit and every debit, one row each, written by the flusher from the
 * metering store's stream. The id is the idempotency key (a debit's id is its request id), so a
 * replayed stream entry inserts nothing. Amounts are nanodollars (1e-9 USD), always positive; the
 * transaction type says which way the money went.
 */
export const creditTransactions = pgTable(
  "credit_transactions",
  {
    id: text("id").primaryKey(),
    orgId: text("org_id").notNull(),
    transactionType: text("transaction_type", { enum: ["credit", "debit"] }).notNull(),
    amount: bigint("amount", { mode: "number" }).notNull(),
    startBalance: bigint("start_balance", { mode: "number" }).notNull(),
    endBalance: bigint("end_balance", { mode: "number" }).notNull(),
    createdAt: timestamp("created_at", { withTimezone: true, mode: "date" }).notNull(),
    userId: text("user_id"),

    creditType: text("credit_type", { enum: ["trial", "grant", "admin_grant", "purchase", "switch"] }),
    creditIsAutoRebuy: boolean("credit_is_auto_rebuy"),
    creditAutoRebuyMinThreshold: bigint("credit_auto_rebuy_min_threshold", { mode: "number" }),
    creditAutoRebuyToBalance: bigint("credit_auto_rebuy_to_balance", { mode: "number" }),

    debitInputTokens: integer("debit_input_tokens"),
    debitCachedTokens: integer("debit_cached_tokens"),
    debitOutputTokens: integer("debit_output_tokens"),
    debitModelInputPricePerToken: text("debit_model_input_price_per_token"),
    debitModelOutputPricePerToken: text("debit_model_output_price_per_token"),
    debitBaseAmount: bigint("debit_base_amount", { mode: "number" }),
    debitSurcharge: bigint("debit_surcharge", { mode: "number" }),
    debitCacheDiscount: bigint("debit_cache_discount", { mode: "number" }),
    debitModelProvider: text("debit_model_provider"),
    debitModelName: text("debit_model_name"),
    debitModelPackName: text("debit_model_pack_name"),
    debitModelRole: text("debit_model_role"),
    debitPurpose: text("debit_purpose"),
    debitPlanId: text("debit_plan_id"),
    debitPlanName: text("debit_plan_name"),
    debitSessionId: text("debit_session_id"),
  },
  (t) => [
    index("credit_transactions_org_created_idx").on(t.orgId, t.createdAt),
    index("credit_transactions_org_plan_idx").on(t.orgId, t.debitPlanId),
    index("credit_transactions_org_session_idx").on(t.orgId, t.debitSessionId),
  ],
);
