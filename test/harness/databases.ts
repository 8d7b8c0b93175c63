import { randomBytes } from "node:crypto";
import postgres from "postgres";
import { inject } from "vitest";

/** A new, empty database on the shared Postgres, so a test file has a schema of its own. */
export async function freshDatabaseUrl(): Promise<string> {
  const base = inject("databaseUrl");
  const name = `t_${randomBytes(6).toString("hex")}`;
  const sql = postgres(base, { max: 1, onnotice: () => {} });
  try {
    await sql.unsafe(`create database ${name}`);
  } finally {
    await sql.end({ timeout: 1 });
  }
  return base.replace(/\/[^/]*$/, `/${name}`);
}
