import type { Config } from "../config.ts";
import type { Clock } from "../core/clock.ts";
import type { Logger } from "../core/log.ts";
import type { Database } from "../db/client.ts";
import { creditRow, getTransaction, insertCredit, orgLedgerBalance } from "../db/ledger.ts";
import type { Catalog } from "../pricing/catalog.ts";
import { parseUsd } from "../pricing/money.ts";
import { createAdmission } from "./admission.ts";
import { balanceLoader } from "./balances.ts";
import { type CreditEvent, encodeCreditEvent } from "./events.ts";
import { HoldPool, type PoolStore } from "./hold-pool.ts";
import type { LocalLedger } from "./local-ledger.ts";
import type { CreditResult, Meter } from "./meter.ts";
import type { MeteringMetrics } from "./metrics.ts";
import type { Payments } from "./payments.ts";
import { createRecharger } from "./recharge.ts";
import { createSettlement } from "./settlement.ts";
import type { MeteringStore } from "./store.ts";

/**
 * The meter of integrated and BYO calls, composed of admission (./admission.ts: a hold in the
 * metering store before the upstream is called), settlement (./settlement.ts: exactly one settle
 * after, journaled until Postgres has it) and auto-recharge (./recharge.ts); credits and balances
 * are here.
 */
export function createLedgerMeter(deps: {
  config: Config;
  store: MeteringStore;
  database: Database;
  catalog: Catalog;
  clock: Clock;
  log: Logger;
  /** Where settles are journaled over a restart (DATA_DIR/spool). */
  spoolDir?: string;
  /** BYO usage events for this instance's flusher to write itself (Node with Redis; local-ledger.ts). */
  localLedger?: LocalLedger;
  metrics?: MeteringMetrics;
  payments: Payments;
  /** Test-only faults: `noReplay` turns the journal's replay after a store data loss off. */
  faults?: { noReplay?: boolean };
}): Meter {
  const { config, store, database, clock } = deps;
  const loadBalance = balanceLoader({ store, database, clock });
  // Only where the store is a round trip away (Redis): in process, a reserve costs no wait.
  const pool =
    store.reserveMany && config.HOLD_POOL_SIZE > 0
      ? new HoldPool(store as PoolStore, clock, deps.log, {
          size: config.HOLD_POOL_SIZE,
          share: 10,
          ttlMs: config.HOLD_TTL_MS,
          maxAgeMs: Math.min(5_000, config.HOLD_TTL_MS / 4),
          idleMs: 1_000,
        })
      : undefined;
  const admit = createAdmission({ ...deps, loadBalance, ...(pool ? { pool } : {}) });
  const recharger = createRecharger({ ...deps, credit: (input) => meter.credit(input) });
  const settlement = createSettlement({
    ...deps,
    ...(pool ? { pool } : {}),
    loadBalance,
    onRebuy: (orgId, requestId) => recharger.request(orgId, requestId),
  });

  const meter: Meter = {
    admit,
    price: settlement.price,
    settle: settlement.settle,

    async balance(orgId) {
      const live = await store.getBalance(orgId);
      if (live) return live.balance;
      return orgLedgerBalance(database.db, orgId);
    },

    async onOrgCreated(org) {
      if (org.billingMode !== "integrated" || !org.isTrial) return;
      const amount = parseUsd(config.TRIAL_CREDITS) ?? 0;
      if (amount > 0)
        await this.credit({ orgId: org.id, id: `trial_${org.id}`, amount, creditType: "trial" });
    },

    async credit(input): Promise<CreditResult> {
      const existing = await getTransaction(database.db, input.id);
      if (existing) {
        if (existing.orgId !== input.orgId || existing.amount !== input.amount) {
          return { ok: false, reason: "amount_mismatch", firstAmount: existing.amount };
        }
        return { ok: true, transaction: existing, duplicate: true };
      }
      const event: CreditEvent = {
        id: input.id,
        orgId: input.orgId,
        amount: input.amount,
        creditType: input.creditType,
        isAutoRebuy: input.isAutoRebuy ?? false,
        autoRebuyMinThreshold: input.autoRebuyMinThreshold ?? null,
        autoRebuyToBalance: input.autoRebuyToBalance ?? null,
        createdAt: clock.now(),
      };
      const apply = () =>
        store.credit({
          orgId: input.orgId,
          creditId: input.id,
          amount: input.amount,
          event: encodeCreditEvent(event),
        });
      let result = await apply();
      if (!result.ok) {
        await loadBalance(input.orgId);
        result = await apply();
      }
      if (!result.ok) throw new Error(`credit ${input.id} found no balance after a reload`);
      if (result.duplicate && result.amount !== input.amount) {
        return { ok: false, reason: "amount_mismatch", firstAmount: result.amount };
      }
      // The flusher writes the same row from the stream; writing it now lets the caller see it at once.
      const transaction = await insertCredit(database.db, creditRow(event, result.balance));
      if (!result.duplicate) deps.metrics?.credits.inc({ type: input.creditType });
      return { ok: true, transaction, duplicate: result.duplicate };
    },

    payOwedCredits: () => recharger.payOwed(),
    idle: async () => {
      await Promise.all([recharger.idle(), pool?.idle()]);
    },
    committed: settlement.committed,

    async close() {
      await pool?.close();
      await recharger.close();
      await settlement.close();
    },
  };
  return meter;
}
