import { isNull } from "drizzle-orm";
import type { Database } from "../db/client.ts";
import { orgLedgerBalance } from "../db/ledger.ts";
import { orgs } from "../db/schema/orgs.ts";
import { formatUsd } from "../pricing/money.ts";
import type { MeteringStore } from "./store.ts";

export interface BalanceDifference {
  orgId: string;
  /** The live balance in the metering store; null when the store has none (not loaded yet). */
  store: number | null;
  /** Credits minus debits in the Postgres ledger. */
  ledger: number;
  /** Holds of calls still in flight. */
  held: number;
}

/**
 * Compares every live org's balance in the metering store with its Postgres ledger. Once traffic
 * has stopped and the flusher has caught up they are equal; each difference is returned (an org the
 * store has not loaded is not a difference: it will be loaded from the ledger).
 */
export async function reconcile(
  store: MeteringStore,
  database: Database,
): Promise<{ checked: number; differences: BalanceDifference[] }> {
  const live = await database.db.select({ id: orgs.id }).from(orgs).where(isNull(orgs.deletedAt));
  const differences: BalanceDifference[] = [];
  for (const { id } of live) {
    const [inStore, ledger] = await Promise.all([store.getBalance(id), orgLedgerBalance(database.db, id)]);
    if (inStore && inStore.balance !== ledger) {
      differences.push({ orgId: id, store: inStore.balance, ledger, held: inStore.held });
    }
  }
  return { checked: live.length, differences };
}

export function describeDifference(d: BalanceDifference): string {
  const store = d.store === null ? "not loaded" : formatUsd(d.store);
  const gap = d.store === null ? "" : ` (store − ledger = ${formatUsd(d.store - d.ledger)})`;
  return `${d.orgId}: store ${store}, ledger ${formatUsd(d.ledger)}${gap}, held ${formatUsd(d.held)}`;
}
