import { bigint, boolean, integer, pgTable, text, timestamp } from "drizzle-orm/pg-core";

/** An org: who pays, how, and its billing settings. Money columns are nanodollars (1e-9 USD). */
export const orgs = pgTable("orgs", {
  id: text("id").primaryKey(),
  name: text("name").notNull(),
  billingMode: text("billing_mode", { enum: ["integrated", "byo"] }).notNull(),
  isTrial: boolean("is_trial").notNull(),
  subscriptionStatus: text("subscription_status", { enum: ["active", "paused", "overdue", "canceled"] })
    .notNull()
    .default("active"),
  autoRebuyEnabled: boolean("auto_rebuy_enabled").notNull().default(false),
  autoRebuyMinThreshold: bigint("auto_rebuy_min_threshold", { mode: "number" }),
  autoRebuyToBalance: bigint("auto_rebuy_to_balance", { mode: "number" }),
  /** Consecutive failed auto-recharge payments; at 3 auto-recharge turns itself off. */
  autoRebuyFailures: integer("auto_rebuy_failures").notNull().default(0),
  /** Who Stripe charges off-session for auto-recharge. */
  stripeCustomerId: text("stripe_customer_id"),
  stripePaymentMethodId: text("stripe_payment_method_id"),
  /** Where billing notifications go (threshold reached, auto-recharge off); none are sent without it. */
  billingEmail: text("billing_email"),
  /** This billing month's spend passing it sends one notification per billing month. */
  notifyThreshold: bigint("notify_threshold", { mode: "number" }),
  maxThresholdPerMonth: bigint("max_threshold_per_month", { mode: "number" }),
  /** Rate limits of the whole org (every key together), per minute; null for none. */
  rateLimitRpm: integer("rate_limit_rpm"),
  rateLimitTpm: integer("rate_limit_tpm"),
  billingCycleStartedAt: timestamp("billing_cycle_started_at", { withTimezone: true, mode: "date" })
    .notNull()
    .defaultNow(),
  createdAt: timestamp("created_at", { withTimezone: true, mode: "date" }).notNull().defaultNow(),
  /** Set by account deletion; the org's data is purged after it. */
  deletedAt: timestamp("deleted_at", { withTimezone: true, mode: "date" }),
});
