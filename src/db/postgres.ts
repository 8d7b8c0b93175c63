import { drizzle } from "drizzle-orm/postgres-js";
import postgres from "postgres";
import type { Database, Db } from "./database.ts";
import * as schema from "./schema/index.ts";

/**
 * The committed migrations, next to this file. Worked out when asked, not at load: a Worker's bundle
 * has no `import.meta.url` to resolve against (and never migrates; `npm run db:migrate` does).
 */
export function migrationsFolder(): string {
  return new URL("./migrations", import.meta.url).pathname;
}

/**
 * postgres.js at `url`. On Node one client serves the process; on Workers a client is opened per
 * request (or alarm) and closed after it, since workerd ties a socket to the request that opened it.
 */
export function openPostgres(url: string, opts: { poolSize?: number } = {}): Database {
  const client = postgres(url, {
    max: opts.poolSize ?? 10,
    prepare: true,
    onnotice: () => {},
    // bigint columns come back as strings otherwise; ours are nanodollars within 2^53.
    types: { bigint: postgres.BigInt },
  });
  const db = drizzle(client, { schema });
  return {
    db: db as unknown as Db,
    kind: "postgres",
    ping: async () => (await client`select 1 as ok`).length === 1,
    close: () => client.end({ timeout: 5 }),
    async migrate() {
      const { migrate } = await import("drizzle-orm/postgres-js/migrator");
      // Several instances may start at once against one database: one migrates, the rest wait.
      const lock = await client.reserve();
      try {
        await lock`select pg_advisory_lock(727274)`;
        await migrate(db, { migrationsFolder: migrationsFolder() });
      } finally {
        await lock`select pg_advisory_unlock(727274)`.catch(() => {});
        lock.release();
      }
    },
  };
}
