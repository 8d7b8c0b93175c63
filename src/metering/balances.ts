import type { Config } from "../config.ts";
import type { Clock } from "../core/clock.ts";
import type { Logger } from "../core/log.ts";
import type { Database } from "../db/client.ts";
import { orgLedgerBalance } from "../db/ledger.ts";
import { getOrg } from "../db/orgs.ts";
import { orgSpendBetween } from "../db/spend.ts";
import { billingMonthStart, nextBillingMonthStart } from "./billing-month.ts";
import type { MeteringMetrics } from "./metrics.ts";
import type { MeteringStore } from "./store.ts";

/** What the meter's parts (admission, settlement) are built from. */
export interface MeterParts {
  config: Config;
  store: MeteringStore;
  database: Database;
  clock: Clock;
  log: Logger;
  metrics?: MeteringMetrics;
  loadBalance: BalanceLoader;
}

/**
 * Rebuilds what the store lost (Redis restarted empty) from the Postgres ledger: the balance, and
 * the spend of the billing month starting at `monthStart` (default: the current one), so that a
 * monthly budget cannot be overshot after the restart. The store sets them only if it has none.
 */
export type BalanceLoader = (orgId: string, monthStart?: number) => Promise<void>;

export function balanceLoader(deps: {
  store: MeteringStore;
  database: Database;
  clock: Clock;
}): BalanceLoader {
  const { store, database, clock } = deps;
  return async (orgId, monthStart) => {
    const [balance, org] = await Promise.all([
      orgLedgerBalance(database.db, orgId),
      getOrg(database.db, orgId),
    ]);
    let month: { start: number; spend: number } | undefined;
    if (org) {
      const from =
        monthStart !== undefined && monthStart > 0
          ? new Date(monthStart)
          : billingMonthStart(org.billingCycleStartedAt, new Date(clock.now()));
      const to = nextBillingMonthStart(org.billingCycleStartedAt, from);
      month = { start: from.getTime(), spend: await orgSpendBetween(database.db, orgId, from, to) };
    }
    await store.loadBalance({ orgId, balance, month });
  };
}
