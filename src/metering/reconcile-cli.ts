import { join } from "node:path";
import { parseConfig } from "../config.ts";
import { openDatabase } from "../db/client.ts";
import { describeDifference, describeMissing, reconcile } from "./reconcile.ts";
import { createRedisStore } from "./redis-store.ts";

/**
 * `npm run reconcile`: compares Redis balances with the Postgres ledger for every org, looks for
 * served calls without their debit (a usage record with a cost and no debit row; a settle still in
 * a journal under DATA_DIR/spool that the ledger lacks) and counts dead letters; prints each
 * finding and exits 1 when there is one. Run it once traffic has stopped and the ledger
 * stream is flushed (`ledger backlog` says how much is still to flush).
 */
const config = parseConfig(process.env);
if (!config.REDIS_URL && !config.REDIS_CLUSTER_NODES) {
  process.stderr.write(
    "reconcile needs REDIS_URL or REDIS_CLUSTER_NODES (the in-process store lives in the gateway)\n",
  );
  process.exit(2);
}
const store = createRedisStore({
  url: config.REDIS_URL,
  clusterNodes: config.REDIS_CLUSTER_NODES,
  keyPrefix: config.REDIS_KEY_PREFIX,
});
const database = await openDatabase({ databaseUrl: config.DATABASE_URL, dataDir: config.DATA_DIR });
const lag = await store.ledgerLag();
const { checked, differences, missing, deadLetters } = await reconcile(store, database, {
  journalDir: config.DATA_DIR === "memory://" ? undefined : join(config.DATA_DIR, "spool"),
});
process.stdout.write(
  `ledger backlog: ${lag.length} events\nchecked ${checked} orgs, ${differences.length} differ\n` +
    `served calls without their debit: ${missing.length}\ndead letters: ${deadLetters}\n`,
);
for (const d of differences) process.stdout.write(`${describeDifference(d)}\n`);
for (const m of missing) process.stdout.write(`${describeMissing(m)}\n`);
await store.close();
await database.close();
process.exit(differences.length || missing.length || deadLetters ? 1 : 0);
