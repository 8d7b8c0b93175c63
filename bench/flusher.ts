import { randomUUID } from "node:crypto";
import { performance } from "node:perf_hooks";
import { createLogger } from "../src/core/log.ts";
import { openDatabase } from "../src/db/client.ts";
import { encodeCallEvent } from "../src/metering/events.ts";
import { Flusher } from "../src/metering/flusher.ts";
import { createRedisStore } from "../src/metering/redis-store.ts";
import { debitEvent } from "../test/harness/events.ts";
import { startPostgres } from "../tools/servers/postgres.ts";
import { startRedis } from "../tools/servers/redis.ts";

/**
 * `npm run bench:flusher`: how many ledger events per second one flusher moves from the Redis
 * streams into Postgres. Settles BENCH_EVENTS debits (default 100,000) over 200 orgs, then times
 * the drain.
 */
const total = Number(process.env.BENCH_EVENTS ?? 100_000);
const [redis, pg] = await Promise.all([startRedis(), startPostgres()]);
const store = createRedisStore({ url: redis.url });
const database = await openDatabase({ databaseUrl: pg.url, dataDir: "", poolSize: 4 });
await database.migrate();

const orgs = Array.from({ length: 200 }, () => `org_${randomUUID()}`);
for (const orgId of orgs) await store.loadBalance({ orgId, balance: 1_000_000_000_000 });
const now = Date.now();
const event = (id: string, orgId: string) =>
  encodeCallEvent(
    debitEvent(orgId, 1234, {
      id,
      base: 1175,
      surcharge: 59,
      inputTokens: 812,
      outputTokens: 20,
      model: "openai/gpt-4.1-mini",
      tags: { planId: "plan-1", purpose: "chat" },
      firstTokenAt: now + 100,
      endedAt: now + 900,
    }),
  );

let t = performance.now();
for (let i = 0; i < total; i += 1000) {
  await Promise.all(
    Array.from({ length: Math.min(1000, total - i) }, (_, j) => {
      const orgId = orgs[(i + j) % orgs.length] as string;
      const id = `req_${i + j}_${randomUUID()}`;
      return store.settle({ orgId, requestId: id, cost: 1234, event: event(id, orgId) });
    }),
  );
}
const settleS = (performance.now() - t) / 1000;

const flusher = new Flusher(store, database, createLogger("warn"), { consumer: "bench", batchSize: 8000 });
t = performance.now();
await flusher.drain();
const flushS = (performance.now() - t) / 1000;
process.stdout.write(
  `settled ${total} debits in ${settleS.toFixed(1)} s (${(total / settleS).toFixed(0)}/s through the settle script)\n` +
    `flushed ${flusher.flushed} events into Postgres in ${flushS.toFixed(1)} s: ${(flusher.flushed / flushS).toFixed(0)} events/s (target ≥ 20,000)\n`,
);
await store.close();
await database.close();
await Promise.all([redis.stop(), pg.destroy()]);
process.exit(0);
