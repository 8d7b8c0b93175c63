import type { Database } from "./database.ts";
import { migrationsFolder, openPostgres } from "./postgres.ts";
import * as schema from "./schema/index.ts";

export type { Database, Db } from "./database.ts";

/**
 * postgres.js when a DATABASE_URL is given; otherwise embedded PGlite persisted under DATA_DIR
 * (`memory://` keeps it in memory). Node only: the Worker opens postgres.js itself (postgres.ts),
 * so its bundle never holds PGlite's WASM.
 */
export async function openDatabase(opts: {
  databaseUrl?: string;
  dataDir: string;
  poolSize?: number;
}): Promise<Database> {
  if (opts.databaseUrl) return openPostgres(opts.databaseUrl, { poolSize: opts.poolSize });
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
    db: db as unknown as Database["db"],
    kind: "pglite",
    ping: async () => (await client.query("select 1 as ok")).rows.length === 1,
    close: () => client.close(),
    migrate: () => migrate(db, { migrationsFolder: migrationsFolder() }),
  };
}
