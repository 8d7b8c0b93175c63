import type { PgDatabase, PgQueryResultHKT } from "drizzle-orm/pg-core";
import type * as schema from "./schema/index.ts";

/** The one query surface both drivers (postgres.js and PGlite) satisfy, so queries are written once. */
export type Db = PgDatabase<PgQueryResultHKT, typeof schema>;

export interface Database {
  db: Db;
  kind: "postgres" | "pglite";
  ping(): Promise<boolean>;
  close(): Promise<void>;
  /** Runs the committed migrations (see migrate.ts). */
  migrate(): Promise<void>;
}
