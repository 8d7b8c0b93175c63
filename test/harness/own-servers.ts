import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import postgres from "postgres";
import { afterEach, beforeEach } from "vitest";
import { type MockUpstream, startMockUpstream } from "../../tools/mock-upstream/mock-upstream.ts";
import { type RedisServer, startRedis } from "../../tools/servers/redis.ts";
import { freshDatabaseUrl } from "./databases.ts";

export interface OwnServers {
  mock: MockUpstream;
  /** A test that starts Redis again on its port puts the new server here, to be stopped after it. */
  redis: RedisServer;
  /** The gateways' DATA_DIR: their settle journal lives in `spool/` under it. */
  dataDir: string;
  /** One connection to the test's database, to read the ledger. */
  sql: postgres.Sql;
  /** A gateway's env on these servers (plus `opts.env`). */
  env: Record<string, string>;
}

/**
 * For each test of the file: the mock upstream, a Redis and a database of its own (the tests stop,
 * empty and restart them, which the run's shared ones must not see), and a DATA_DIR for the
 * gateways' spool; all of it gone after the test. The fields are filled before each test.
 */
export function ownServersEachTest(opts: { keyPrefix: string; env?: Record<string, string> }): OwnServers {
  const own = {} as OwnServers;
  beforeEach(async () => {
    own.mock = await startMockUpstream();
    own.redis = await startRedis();
    own.dataDir = mkdtempSync(join(tmpdir(), "planto-spool-"));
    const databaseUrl = await freshDatabaseUrl();
    own.env = {
      DATABASE_URL: databaseUrl,
      REDIS_URL: own.redis.url,
      DATA_DIR: own.dataDir,
      REDIS_KEY_PREFIX: opts.keyPrefix,
      ...opts.env,
    };
    own.sql = postgres(databaseUrl, { max: 1, onnotice: () => {} });
  });
  afterEach(async () => {
    await own.sql.end();
    await own.redis.stop();
    await own.mock.close();
    rmSync(own.dataDir, { recursive: true, force: true });
  });
  return own;
}
