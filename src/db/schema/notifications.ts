import { index, integer, jsonb, pgTable, text, timestamp, uniqueIndex } from "drizzle-orm/pg-core";

/** What a notification is about; each kind has its message in src/notify/messages.ts. */
export const NOTIFICATION_KINDS = ["spend_threshold", "auto_recharge_disabled"] as const;
export type NotificationKind = (typeof NOTIFICATION_KINDS)[number];

/**
 * The notifications outbox. A row is inserted in the same transaction as the fact it tells of (the
 * flusher's commit of the debits that take a billing month's spend past the org's threshold; the
 * org update that turns auto-recharge off), so a crash can neither lose it nor, thanks to the
 * unique (org, kind, dedupe key), record it twice. The dispatcher delivers pending rows and marks
 * them; the row id is the idempotency key the email provider gets, so a delivery repeated after a
 * crash (delivered, not yet marked) is not sent twice.
 *
 * status: pending (to deliver, from next_attempt_at on), sent, skipped (the org has no billing
 * email, or was deleted: nothing to send to), failed (the provider refused it for good, or every
 * attempt failed).
 */
export const notifications = pgTable(
  "notifications",
  {
    id: text("id").primaryKey(),
    orgId: text("org_id").notNull(),
    kind: text("kind", { enum: NOTIFICATION_KINDS }).notNull(),
    /** Once per this key and kind: the billing month's start for spend_threshold, the recharge id for auto_recharge_disabled. */
    dedupeKey: text("dedupe_key").notNull(),
    /** What the message says, fixed when the fact happened (amounts in nanodollars). */
    payload: jsonb("payload").$type<Record<string, unknown>>().notNull(),
    status: text("status", { enum: ["pending", "sent", "skipped", "failed"] })
      .notNull()
      .default("pending"),
    /** The address it was (or is being) delivered to, fixed at the first attempt, so retries send the same request. */
    recipient: text("recipient"),
    attempts: integer("attempts").notNull().default(0),
    nextAttemptAt: timestamp("next_attempt_at", { withTimezone: true, mode: "date" }).notNull(),
    /** A dispatcher working on the row owns it until then (a lease: a dead dispatcher's rows are taken over). */
    claimedUntil: timestamp("claimed_until", { withTimezone: true, mode: "date" }),
    lastError: text("last_error"),
    /** The provider's id of the delivered message. */
    providerMessageId: text("provider_message_id"),
    createdAt: timestamp("created_at", { withTimezone: true, mode: "date" }).notNull(),
    sentAt: timestamp("sent_at", { withTimezone: true, mode: "date" }),
  },
  (t) => [
    uniqueIndex("notifications_org_kind_key_idx").on(t.orgId, t.kind, t.dedupeKey),
    index("notifications_pending_idx").on(t.status, t.nextAttemptAt),
  ],
);
