import { index, pgTable, text, timestamp } from "drizzle-orm/pg-core";

/**
 * Ledger work that can never succeed, set aside so what follows it goes on: a settle the metering
 * store can never take (source "spool"), or a ledger stream entry Postgres rejects for a reason no
 * retry cures (source "ledger"). Each row keeps the entry whole (ids and amounts, never keys or
 * prompts) for an operator to fix and replay by hand; `reconcile` counts them. The id is the entry's
 * own (request id, or stream entry id), so setting one aside twice keeps one row.
 */
export const deadLetters = pgTable(
  "dead_letters",
  {
    id: text("id").primaryKey(),
    source: text("source", { enum: ["spool", "ledger"] }).notNull(),
    orgId: text("org_id"),
    /** The settle (JSON) or the stream entry's encoded event, as it was. */
    payload: text("payload").notNull(),
    error: text("error").notNull(),
    createdAt: timestamp("created_at", { withTimezone: true, mode: "date" }).notNull(),
  },
  (t) => [index("dead_letters_created_idx").on(t.createdAt)],
);
