import type { Database, Db } from "./database.ts";
import { migrationsFolder } from "./postgres.ts";
import * as schema from "./schema/index.ts";

export type { Database, Db } from "./database.ts";

type FaultListener = () => void;
const faultListeners = new Set<FaultListener>();

/** Called when the process caught a postgres.js internal fault: each open pool replaces itself. */
export function driverFaulted(): void {
  for (const listener of faultListeners) listener();
}

function onDriverFault(listener: FaultListener): () => void {
  faultListeners.add(listener);
  return () => faultListeners.delete(listener);
}

/**
 * postgres.js when a DATABASE_URL is given; otherwise embedded PGlite persisted under DATA_DIR
 * (`memory://` keeps it in memory). The drivers are imported lazily so a Workers bundle, which
 * always has a DATABASE_URL, never pulls in PGlite's WASM.
 */
export async function openDatabase(opts: {
  databaseUrl?: string;
  dataDir: string;
  poolSize?: number;
}): Promise<Database> {
  if (opts.databaseUrl) {
    const { default: postgres } = await import("postgres");
    const { drizzle } = await import("drizzle-orm/postgres-js");
    const { migrate } = await import("drizzle-orm/postgres-js/migrator");
    const open = () =>
      postgres(opts.databaseUrl as string, {
        max: opts.poolSize ?? 10,
        prepare: true,
        onnotice: () => {},
        // bigint columns come back as strings otherwise; ours are nanodollars within 2^53.
        types: { bigint: postgres.BigInt },
        // postgres.js reads the array types on every new connection, from a promise nobody awaits: a
        // connection dropped in that instant was an unhandled rejection (it ended the process). No
        // column or parameter of ours is an array, so the lookup is not needed.
        fetch_types: false,
        // A Postgres that does not answer a new connection fails the query within this, not 30 s.
        connect_timeout: 2,
        // postgres.js waits up to 20 s (3^retries / 100) before reconnecting after failures, and a
        // query queued behind that wait stalls as long: capped, an outage fails queries within
        // half a second and recovery is seen as soon.
        backoff: (retries: number) => Math.min(0.05 * 2 ** retries, 0.5),
      });
    let client = open();
    let db = drizzle(client, { schema });
    // After a driver fault (see src/process-guard.ts) a connection of the pool can be left unable
    // to send; a fresh pool replaces it and the old one ends once its queries are done.
    const unsubscribe = onDriverFault(() => {
      const old = client;
      client = open();
      db = drizzle(client, { schema });
      old.end({ timeout: 5 }).catch(() => {});
    });
    return {
      get db() {
        return db as unknown as Db;
      },
      kind: "postgres",
      ping: async () => (await client`select 1 as ok`).length === 1,
      close: () => {
        unsubscribe();
        return client.end({ timeout: 5 });
      },
      async migrate() {
        // Several instances may start at once against one database: one migrates, the rest wait.
        // The lock is held by a connection of its own (`reserve()` never resolves with fetch_types off).
        const lock = postgres(opts.databaseUrl as string, { max: 1, onnotice: () => {}, fetch_types: false });
        try {
          await lock`select pg_advisory_lock(727274)`;
          await migrate(db, { migrationsFolder: migrationsFolder() });
        } finally {
          await lock`select pg_advisory_unlock(727274)`.catch(() => {});
          await lock.end({ timeout: 5 });
        }
      },
    };
  }
  const { PGlite } = await import("@electric-sql/pglite");
  const { drizzle } = await import("drizzle-orm/pglite");
  const { migrate } = await import("drizzle-orm/pglite/migrator");
  const dataDir = opts.dataDir === "memory://" ? undefined : `${opts.dataDir.replace(/\/$/, "")}/pglite`;
  if (dataDir) {
    const { mkdir } = await import("node:fs/promises");
    await mkdir(dataDir, { recursive: true });
  }
  const client = dataDir ? new PGlite(dataDir) : new PGlite();
  await client.waitReady;
  const db = drizzle(client, { schema });
  return {
    db: db as unknown as Db,
    kind: "pglite",
    ping: async () => (await client.query("select 1 as ok")).rows.length === 1,
    close: () => client.close(),
    migrate: () => migrate(db, { migrationsFolder: migrationsFolder() }),
  };
}
