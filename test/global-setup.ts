import type { TestProject } from "vitest/node";
import { startPostgres } from "../tools/servers/postgres.ts";
import { startRedis } from "../tools/servers/redis.ts";

/** One real Redis and one real Postgres for the whole run, on free loopback ports. */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const [redis, pg] = await Promise.all([startRedis(), startPostgres()]);
  project.provide("redisUrl", redis.url);
  project.provide("databaseUrl", pg.url);
  return async () => {
    await Promise.all([redis.stop(), pg.destroy()]);
  };
}

declare module "vitest" {
  export interface ProvidedContext {
    redisUrl: string;
    databaseUrl: string;
  }
}
