import { parseConfig } from "../config.ts";
import { openDatabase } from "./client.ts";

/** `npm run db:migrate`: applies the committed migrations to DATABASE_URL (or the embedded database). */
const config = parseConfig(process.env);
const database = await openDatabase({ databaseUrl: config.DATABASE_URL, dataDir: config.DATA_DIR });
await database.migrate();
process.stdout.write(
  `migrated the ${database.kind === "postgres" ? "Postgres at DATABASE_URL" : `embedded database in ${config.DATA_DIR}`}\n`,
);
await database.close();
