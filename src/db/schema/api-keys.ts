import { index, integer, pgTable, text, timestamp } from "drizzle-orm/pg-core";
import { orgs } from "./orgs.ts";

/** An org's api keys. Only a SHA-256 of a key is stored; the key is shown once, at creation. */
export const apiKeys = pgTable(
  "api_keys",
  {
    id: text("id").primaryKey(),
    orgId: text("org_id")
      .notNull()
      .references(() => orgs.id, { onDelete: "cascade" }),
    keyHash: text("key_hash").notNull().unique(),
    /** The first characters of the key, to tell keys apart in a list. */
    prefix: text("prefix").notNull(),
    createdAt: timestamp("created_at", { withTimezone: true, mode: "date" }).notNull().defaultNow(),
    revokedAt: timestamp("revoked_at", { withTimezone: true, mode: "date" }),
    /** Rate limits of this key alone, per minute; null for none (the org's limits still apply). */
    rateLimitRpm: integer("rate_limit_rpm"),
    rateLimitTpm: integer("rate_limit_tpm"),
  },
  (t) => [index("api_keys_org_idx").on(t.orgId)],
);
