import { parseConfig } from "../config.ts";
import { openDatabase } from "../db/client.ts";
import { describeDifference, reconcile } from "./reconcile.ts";
import { createRedisStore } from "./redis-store.ts";

/**
 * `npm run reconcile`: compares Redis balances with the Postgres ledger for every org and prints
 * each difference; exits 1 when there is one. Run it once traffic has stopped and the ledger
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
const { checked, differences } = await reconcile(store, database);
process.stdout.write(
  `ledger backlog: ${lag.length} events\nchecked ${checked} orgs, ${differences.length} differ\n`,
);
for (const d of differences) process.stdout.write(`${describeDifference(d)}\n`);
await store.close();
await database.close();
process.exit(differences.length ? 1 : 0);
