import { index, integer, jsonb, pgTable, text, timestamp } from "drizzle-orm/pg-core";

/**
 * Credits owed for money already taken: an auto-recharge whose payment succeeded. The row is written
 * as soon as the payment is known to have succeeded, before the credit is tried, and deleted once
 * the credit landed; every instance retries the rows still here (the credit is idempotent by its id,
 * the PaymentIntent's), so a credit that failed after the charge (Redis or Postgres down, the
 * gateway killed) is credited later, exactly once.
 */
export const creditOutbox = pgTable(
  "credit_outbox",
  {
    /** The credit id: the PaymentIntent id, the same one its webhook credits under. */
    id: text("id").primaryKey(),
    orgId: text("org_id").notNull(),
    /** The credit as the meter takes it (amounts in nanodollars). */
    credit: jsonb("credit").$type<Record<string, unknown>>().notNull(),
    attempts: integer("attempts").notNull().default(0),
    nextAttemptAt: timestamp("next_attempt_at", { withTimezone: true, mode: "date" }).notNull(),
    lastError: text("last_error"),
    createdAt: timestamp("created_at", { withTimezone: true, mode: "date" }).notNull(),
  },
  (t) => [index("credit_outbox_due_idx").on(t.nextAttemptAt)],
);
