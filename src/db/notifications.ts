import { randomUUID } from "node:crypto";
import { and, asc, eq, inArray, isNotNull, isNull, lte, or, sql } from "drizzle-orm";
import { billingMonthStart, nextBillingMonthStart } from "../metering/billing-month.ts";
import type { Db } from "./client.ts";
import { type NotificationKind, notifications } from "./schema/notifications.ts";
import { orgs } from "./schema/orgs.ts";
import { orgSpendBetween } from "./spend.ts";

export type NotificationRow = typeof notifications.$inferSelect;

/**
 * Records a notification in the outbox, once per (org, kind, dedupe key): call it inside the
 * transaction that writes the fact it tells of. Returns whether a row was added (false: it was
 * already recorded).
 */
export async function enqueueNotification(
  tx: Db,
  n: { orgId: string; kind: NotificationKind; dedupeKey: string; payload: Record<string, unknown>; at: Date },
): Promise<boolean> {
  const added = await tx
    .insert(notifications)
    .values({
      id: `ntf_${randomUUID()}`,
      orgId: n.orgId,
      kind: n.kind,
      dedupeKey: n.dedupeKey,
      payload: n.payload,
      nextAttemptAt: n.at,
      createdAt: n.at,
    })
    .onConflictDoNothing({ target: [notifications.orgId, notifications.kind, notifications.dedupeKey] })
    .returning({ id: notifications.id });
  return added.length > 0;
}

/** A debit the flusher is committing, as far as the spend threshold is concerned. */
export interface CommittedDebit {
  orgId: string;
  /** When the call was settled (ms): the billing month its spend counts in. */
  endedAt: number;
}

/**
 * Part of the flusher's transaction: for every org whose debits are in the batch and whose billing
 * month's spend (these debits included) has reached its notifyThreshold, records the month's one
 * spend_threshold notification. Orgs already notified this month cost one lookup and no lock. The
 * others' rows are locked first: two flushers committing debits of one org at once would otherwise
 * each sum without the other's uncommitted rows, and neither would see the month cross the line.
 * Locking waits for the other commit, after which the sum sees its rows. Returns how many were added.
 */
export async function enqueueSpendNotifications(tx: Db, debits: readonly CommittedDebit[]): Promise<number> {
  const orgIds = [...new Set(debits.map((d) => d.orgId))];
  if (orgIds.length === 0) return 0;
  const watched = await tx
    .select({ id: orgs.id, anchor: orgs.billingCycleStartedAt })
    .from(orgs)
    .where(and(inArray(orgs.id, orgIds), isNotNull(orgs.notifyThreshold), isNull(orgs.deletedAt)));
  if (watched.length === 0) return 0;
  // The (org, billing month) pairs the batch adds spend to, with the time of its last debit there.
  const months = new Map<string, { orgId: string; start: Date; anchor: Date; at: number }>();
  const anchors = new Map(watched.map((o) => [o.id, o.anchor]));
  for (const d of debits) {
    const anchor = anchors.get(d.orgId);
    if (!anchor) continue;
    const start = billingMonthStart(anchor, new Date(d.endedAt));
    const key = `${d.orgId}\n${start.toISOString()}`;
    const seen = months.get(key);
    if (!seen || seen.at < d.endedAt) months.set(key, { orgId: d.orgId, start, anchor, at: d.endedAt });
  }
  const notified = await tx
    .select({ orgId: notifications.orgId, dedupeKey: notifications.dedupeKey })
    .from(notifications)
    .where(
      and(
        inArray(notifications.orgId, [...anchors.keys()]),
        eq(notifications.kind, "spend_threshold"),
        inArray(
          notifications.dedupeKey,
          [...months.values()].map((m) => m.start.toISOString()),
        ),
      ),
    );
  for (const n of notified) months.delete(`${n.orgId}\n${n.dedupeKey}`);
  if (months.size === 0) return 0;
  // In id order, so two flushers locking the same orgs cannot deadlock.
  const locked = await tx
    .select({
      id: orgs.id,
      name: orgs.name,
      notifyThreshold: orgs.notifyThreshold,
      maxThresholdPerMonth: orgs.maxThresholdPerMonth,
    })
    .from(orgs)
    .where(inArray(orgs.id, [...new Set([...months.values()].map((m) => m.orgId))]))
    .orderBy(asc(orgs.id))
    .for("update");
  const byId = new Map(locked.map((o) => [o.id, o]));
  let added = 0;
  for (const month of months.values()) {
    const org = byId.get(month.orgId);
    if (!org || org.notifyThreshold === null) continue;
    const spend = await orgSpendBetween(
      tx,
      org.id,
      month.start,
      nextBillingMonthStart(month.anchor, month.start),
    );
    if (spend < org.notifyThreshold) continue;
    const recorded = await enqueueNotification(tx, {
      orgId: org.id,
      kind: "spend_threshold",
      dedupeKey: month.start.toISOString(),
      payload: {
        orgName: org.name,
        monthStart: month.start.toISOString(),
        spend,
        notifyThreshold: org.notifyThreshold,
        maxThresholdPerMonth: org.maxThresholdPerMonth,
      },
      at: new Date(month.at),
    });
    if (recorded) added += 1;
  }
  return added;
}

/** A notification claimed for delivery, with where it goes. */
export interface ClaimedNotification {
  id: string;
  orgId: string;
  kind: NotificationKind;
  payload: Record<string, unknown>;
  /** The address fixed at the first attempt (the org's billing email then); null: it has none. */
  recipient: string | null;
  /** Attempts so far, this one included. */
  attempts: number;
  orgDeleted: boolean;
  /** The claim's lease: the row is this dispatcher's until then. */
  claimedUntil: Date;
}

/** The outbox as the dispatcher uses it. Postgres in production (postgresOutbox). */
export interface Outbox {
  /**
   * Takes up to `limit` pending rows that are due and not claimed by a live lease, leases them until
   * now + leaseMs and counts the attempt. Several dispatchers never take the same row (skip locked).
   */
  claim(c: { now: Date; leaseMs: number; limit: number }): Promise<ClaimedNotification[]>;
  markSent(id: string, m: { providerMessageId: string; at: Date }): Promise<void>;
  /** Gives the row back for another attempt at `at`. */
  retryLater(id: string, r: { at: Date; error: string }): Promise<void>;
  /** Ends the row without a delivery: skipped (nothing to send to) or failed (refused for good). */
  markDone(id: string, d: { status: "skipped" | "failed"; reason: string }): Promise<void>;
}

export function postgresOutbox(db: Db): Outbox {
  const n = notifications;
  // A mark only lands while the row is pending: a dispatcher whose lease ran out, and whose row was
  // delivered and marked by another meanwhile, changes nothing.
  const pendingRow = (id: string) => and(eq(n.id, id), eq(n.status, "pending"));
  return {
    async claim({ now, leaseMs, limit }) {
      const due = db
        .select({ id: n.id })
        .from(n)
        .where(
          and(
            eq(n.status, "pending"),
            lte(n.nextAttemptAt, now),
            or(isNull(n.claimedUntil), lte(n.claimedUntil, now)),
          ),
        )
        .orderBy(asc(n.nextAttemptAt))
        .limit(limit)
        .for("update", { skipLocked: true, of: n });
      const claimedUntil = new Date(now.getTime() + leaseMs);
      const rows = await db
        .update(n)
        .set({
          claimedUntil,
          attempts: sql`${n.attempts} + 1`,
          // The first attempt fixes the address, so every retry sends the very same request.
          recipient: sql`coalesce(${n.recipient}, ${orgs.billingEmail})`,
        })
        .from(orgs)
        .where(and(inArray(n.id, due), eq(orgs.id, n.orgId)))
        .returning({
          id: n.id,
          orgId: n.orgId,
          kind: n.kind,
          payload: n.payload,
          recipient: n.recipient,
          attempts: n.attempts,
          deletedAt: orgs.deletedAt,
        });
      return rows.map(({ deletedAt, ...row }) => ({ ...row, orgDeleted: deletedAt !== null, claimedUntil }));
    },
    async markSent(id, { providerMessageId, at }) {
      await db
        .update(n)
        .set({ status: "sent", providerMessageId, sentAt: at, claimedUntil: null, lastError: null })
        .where(pendingRow(id));
    },
    async retryLater(id, { at, error }) {
      await db
        .update(n)
        .set({ nextAttemptAt: at, claimedUntil: null, lastError: error })
        .where(pendingRow(id));
    },
    async markDone(id, { status, reason }) {
      await db.update(n).set({ status, lastError: reason, claimedUntil: null }).where(pendingRow(id));
    },
  };
}
