import type { Logger } from "../core/log.ts";
import type { Database } from "../db/client.ts";
import { orgsDueForPurge, purgeOrgRows } from "../db/purge.ts";
import type { MeteringStore } from "./store.ts";

/**
 * Account deletion's second half: `delayMs` after an org was deleted (its keys were revoked at
 * once), every Redis key and every row of it goes. Redis first: a crash in between leaves rows that
 * the next run finds again, never keys without their org.
 */
export async function purgeDeletedOrgs(deps: {
  database: Database;
  store: MeteringStore;
  log: Logger;
  now: number;
  delayMs: number;
}): Promise<string[]> {
  const due = await orgsDueForPurge(deps.database.db, new Date(deps.now - deps.delayMs));
  for (const orgId of due) {
    await deps.store.purgeOrg(orgId);
    await purgeOrgRows(deps.database.db, orgId);
    deps.log.info("purged deleted org", { orgId });
  }
  return due;
}
