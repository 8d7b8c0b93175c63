import { createHash, randomBytes } from "node:crypto";
import { and, eq, isNull } from "drizzle-orm";
import type { Db } from "./client.ts";
import { enqueueNotification } from "./notifications.ts";
import { apiKeys } from "./schema/api-keys.ts";
import { orgs } from "./schema/orgs.ts";

export type Org = typeof orgs.$inferSelect;
export type BillingPatch = Partial<Omit<typeof orgs.$inferInsert, "id" | "name" | "createdAt" | "deletedAt">>;

const BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/** Random base62 text from the CSPRNG (rejection sampling keeps it unbiased). */
export function randomId(length: number): string {
  let out = "";
  while (out.length < length) {
    for (const byte of randomBytes(length * 2)) {
      if (byte < 248 && out.length < length) out += BASE62[byte % 62];
    }
  }
  return out;
}

export function hashApiKey(key: string): string {
  return createHash("sha256").update(key).digest("hex");
}

export async function createOrg(
  db: Db,
  input: { name: string; billingMode: "integrated" | "byo"; isTrial: boolean; billingEmail?: string | null },
): Promise<Org> {
  const [org] = await db
    .insert(orgs)
    .values({ id: `org_${randomId(24)}`, ...input })
    .returning();
  return org as Org;
}

export async function getOrg(db: Db, id: string): Promise<Org | null> {
  const [org] = await db.select().from(orgs).where(eq(orgs.id, id)).limit(1);
  return org ?? null;
}

export async function updateOrgBilling(db: Db, id: string, patch: BillingPatch): Promise<Org | null> {
  const values = Object.fromEntries(Object.entries(patch).filter(([, v]) => v !== undefined));
  if (Object.keys(values).length === 0) return getOrg(db, id);
  const [org] = await db
    .update(orgs)
    .set(values)
    .where(and(eq(orgs.id, id), isNull(orgs.deletedAt)))
    .returning();
  return org ?? null;
}

/** Failed auto-recharge payments in a row after which auto-recharge turns itself off. */
export const MAX_RECHARGE_FAILURES = 3;

/**
 * Counts a failed auto-recharge payment. The one that makes MAX_RECHARGE_FAILURES in a row turns
 * auto-recharge off and records the org's auto_recharge_disabled notification in the same
 * transaction, so the org is told exactly once, whatever crashes. The row is locked: the count is
 * read and written as one step.
 */
export async function recordRechargeFailure(
  db: Db,
  f: { orgId: string; rechargeId: string; reason: string; at: Date },
): Promise<{ failures: number; turnedOff: boolean } | null> {
  return db.transaction(async (tx) => {
    const [org] = await tx.select().from(orgs).where(eq(orgs.id, f.orgId)).for("update");
    if (!org) return null;
    const failures = org.autoRebuyFailures + 1;
    const turnedOff = org.autoRebuyEnabled && failures >= MAX_RECHARGE_FAILURES;
    await tx
      .update(orgs)
      .set({ autoRebuyFailures: failures, ...(turnedOff ? { autoRebuyEnabled: false } : {}) })
      .where(eq(orgs.id, f.orgId));
    if (turnedOff) {
      await enqueueNotification(tx, {
        orgId: f.orgId,
        kind: "auto_recharge_disabled",
        dedupeKey: f.rechargeId,
        payload: {
          orgName: org.name,
          failures,
          reason: f.reason.slice(0, 500),
          autoRebuyMinThreshold: org.autoRebuyMinThreshold,
          autoRebuyToBalance: org.autoRebuyToBalance,
        },
        at: f.at,
      });
    }
    return { failures, turnedOff };
  });
}

/** Account deletion: the org is marked and every key revoked, in one transaction. */
export async function markOrgDeleted(db: Db, id: string, now: Date): Promise<boolean> {
  return db.transaction(async (tx) => {
    const marked = await tx
      .update(orgs)
      .set({ deletedAt: now })
      .where(and(eq(orgs.id, id), isNull(orgs.deletedAt)))
      .returning({ id: orgs.id });
    if (marked.length === 0) return false;
    await tx
      .update(apiKeys)
      .set({ revokedAt: now })
      .where(and(eq(apiKeys.orgId, id), isNull(apiKeys.revokedAt)));
    return true;
  });
}

/** A new key for a live org; the key itself is returned once and only its hash is stored. */
export async function createApiKey(
  db: Db,
  orgId: string,
): Promise<{ id: string; key: string; prefix: string } | null> {
  const org = await getOrg(db, orgId);
  if (!org || org.deletedAt) return null;
  const key = `pk_${randomId(40)}`;
  const id = `key_${randomId(20)}`;
  const prefix = key.slice(0, 12);
  await db.insert(apiKeys).values({ id, orgId, keyHash: hashApiKey(key), prefix });
  return { id, key, prefix };
}

export async function revokeApiKey(db: Db, id: string): Promise<boolean> {
  const revoked = await db
    .update(apiKeys)
    .set({ revokedAt: new Date() })
    .where(and(eq(apiKeys.id, id), isNull(apiKeys.revokedAt)))
    .returning({ id: apiKeys.id });
  if (revoked.length > 0) return true;
  // Revoking a revoked key is fine; an unknown id is not.
  const [known] = await db.select({ id: apiKeys.id }).from(apiKeys).where(eq(apiKeys.id, id)).limit(1);
  return known !== undefined;
}

/** The auth path's lookup on a cache miss: the key and its org in one query. */
export async function findApiKeyByHash(
  db: Db,
  hash: string,
): Promise<{
  keyId: string;
  orgId: string;
  revokedAt: Date | null;
  rateLimitRpm: number | null;
  rateLimitTpm: number | null;
  org: Org;
} | null> {
  const [row] = await db
    .select({
      keyId: apiKeys.id,
      orgId: apiKeys.orgId,
      revokedAt: apiKeys.revokedAt,
      rateLimitRpm: apiKeys.rateLimitRpm,
      rateLimitTpm: apiKeys.rateLimitTpm,
      org: orgs,
    })
    .from(apiKeys)
    .innerJoin(orgs, eq(orgs.id, apiKeys.orgId))
    .where(eq(apiKeys.keyHash, hash))
    .limit(1);
  return row ?? null;
}

/** Sets an api key's own rate limits (null: none); null when there is no such key. */
export async function setApiKeyRateLimits(
  db: Db,
  id: string,
  patch: { rateLimitRpm?: number | null; rateLimitTpm?: number | null },
): Promise<{ id: string; orgId: string; rateLimitRpm: number | null; rateLimitTpm: number | null } | null> {
  const values = Object.fromEntries(Object.entries(patch).filter(([, v]) => v !== undefined));
  const columns = {
    id: apiKeys.id,
    orgId: apiKeys.orgId,
    rateLimitRpm: apiKeys.rateLimitRpm,
    rateLimitTpm: apiKeys.rateLimitTpm,
  };
  const [row] =
    Object.keys(values).length === 0
      ? await db.select(columns).from(apiKeys).where(eq(apiKeys.id, id)).limit(1)
      : await db.update(apiKeys).set(values).where(eq(apiKeys.id, id)).returning(columns);
  return row ?? null;
}
