import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { isNull } from "drizzle-orm";
import type { Database } from "../db/client.ts";
import { orgLedgerBalance } from "../db/ledger.ts";
import { orgs } from "../db/schema/orgs.ts";
import { chargedWithoutDebit, countDeadLetters, debitedCalls, recordedCalls } from "../db/served.ts";
import { formatUsd } from "../pricing/money.ts";
import type { PendingSettle } from "./spool.ts";
import type { MeteringStore } from "./store.ts";

/** A served call the Postgres ledger does not have as it should. */
export interface MissingDebit {
  requestId: string;
  orgId: string;
  /** What it should have been debited (nanodollars). */
  amount: number;
  /** usage: a usage record with a cost and no debit; journal: a journaled settle not in the ledger. */
  found: "usage" | "journal";
}

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
  opts: { journalDir?: string } = {},
): Promise<{
  checked: number;
  differences: BalanceDifference[];
  missing: MissingDebit[];
  deadLetters: number;
}> {
  const live = await database.db.select({ id: orgs.id }).from(orgs).where(isNull(orgs.deletedAt));
  const differences: BalanceDifference[] = [];
  for (const { id } of live) {
    const [inStore, ledger] = await Promise.all([store.getBalance(id), orgLedgerBalance(database.db, id)]);
    if (inStore && inStore.balance !== ledger) {
      differences.push({ orgId: id, store: inStore.balance, ledger, held: inStore.held });
    }
  }
  const missing: MissingDebit[] = (await chargedWithoutDebit(database.db)).map((r) => ({
    requestId: r.id,
    orgId: r.orgId,
    amount: r.charged,
    found: "usage",
  }));
  if (opts.journalDir) missing.push(...(await journalGaps(database, opts.journalDir)));
  return { checked: live.length, differences, missing, deadLetters: await countDeadLetters(database.db) };
}

/**
 * The settles kept in the gateways' journals (DATA_DIR/spool) that the ledger does not have: a
 * gateway keeps a settle only until it sees it in Postgres, so once traffic stopped and the ledger
 * is flushed, any left is a served call not (yet) debited — its gateway has not replayed it.
 */
async function journalGaps(database: Database, dir: string): Promise<MissingDebit[]> {
  const kept = new Map<string, PendingSettle>();
  for (const file of await readdir(dir).catch(() => [] as string[])) {
    if (!file.endsWith(".jsonl")) continue;
    for (const line of (await readFile(join(dir, file), "utf8").catch(() => "")).split("\n")) {
      try {
        const p = JSON.parse(line) as PendingSettle;
        if (typeof p.requestId === "string") kept.set(p.requestId, p);
      } catch {
        // a line cut by a kill mid-write: it was never kept
      }
    }
  }
  const ids = [...kept.keys()];
  const gaps: MissingDebit[] = [];
  for (let i = 0; i < ids.length; i += 1000) {
    const some = ids.slice(i, i + 1000);
    const [recorded, debited] = await Promise.all([
      recordedCalls(database.db, some),
      debitedCalls(database.db, some),
    ]);
    for (const id of some) {
      const p = kept.get(id) as PendingSettle;
      const owes = p.kind === "settle" && p.cost > 0;
      if (!recorded.has(id) || (owes && !debited.has(id))) {
        gaps.push({ requestId: id, orgId: p.orgId, amount: owes ? p.cost : 0, found: "journal" });
      }
    }
  }
  return gaps;
}

export function describeMissing(m: MissingDebit): string {
  const where = m.found === "usage" ? "usage record with no debit" : "journaled settle not in the ledger";
  return `${m.orgId}: call ${m.requestId} served and not debited ${formatUsd(m.amount)} (${where})`;
}

export function describeDifference(d: BalanceDifference): string {
  const store = d.store === null ? "not loaded" : formatUsd(d.store);
  const gap = d.store === null ? "" : ` (store − ledger = ${formatUsd(d.store - d.ledger)})`;
  return `${d.orgId}: store ${store}, ledger ${formatUsd(d.ledger)}${gap}, held ${formatUsd(d.held)}`;
}
