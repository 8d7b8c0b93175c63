import { and, eq, inArray, isNotNull, lte } from "drizzle-orm";
import type { Db } from "./client.ts";
import { apiKeys } from "./schema/api-keys.ts";
import { creditTransactions } from "./schema/credit-transactions.ts";
import { notifications } from "./schema/notifications.ts";
import { orgs } from "./schema/orgs.ts";
import { usageRecords } from "./schema/usage-records.ts";

/** Orgs deleted at or before `cutoff`, whose data is due to be purged. */
export async function orgsDueForPurge(db: Db, cutoff: Date, limit = 100): Promise<string[]> {
  const rows = await db
    .select({ id: orgs.id })
    .from(orgs)
    .where(and(isNotNull(orgs.deletedAt), lte(orgs.deletedAt, cutoff)))
    .limit(limit);
  return rows.map((r) => r.id);
}

/** Removes every row of an org, in every table, in one transaction. */
export async function purgeOrgRows(db: Db, orgId: string): Promise<void> {
  await db.transaction(async (tx) => {
    await tx.delete(usageRecords).where(eq(usageRecords.orgId, orgId));
    await tx.delete(notifications).where(eq(notifications.orgId, orgId));
    await tx.delete(creditTransactions).where(eq(creditTransactions.orgId, orgId));
    await tx.delete(apiKeys).where(inArray(apiKeys.orgId, [orgId]));
    await tx.delete(orgs).where(eq(orgs.id, orgId));
  });
}
