import { randomUUID } from "node:crypto";
import { openDatabase } from "../src/db/client.ts";
import { writeLedgerBatch } from "../src/db/ledger.ts";
import { recordedCalls } from "../src/db/served.ts";
import { newRequestId } from "../src/gateway/request-id.ts";
import { encodeCallEvent } from "../src/metering/events.ts";
import { debitEvent } from "../test/harness/events.ts";
import { startPostgres } from "../tools/servers/postgres.ts";
import { findPid, treeCpuMs } from "./cpu.ts";

/**
 * `npx tsx bench/ledger-pg.ts`: Postgres's own CPU (its whole process tree, from /proc) per ledger
 * event the flusher writes, and per call the settle journal confirms, with batches the size the
 * flusher makes under load. BENCH_EVENTS (default 40,000), BENCH_BATCH (300), BENCH_BYO=1 for usage
 * events (no debit).
 */
const total = Number(process.env.BENCH_EVENTS ?? 40_000);
const batchSize = Number(process.env.BENCH_BATCH ?? 300);
const byo = process.env.BENCH_BYO === "1";
const pg = await startPostgres();
const pid = findPid(["bin/postgres", `-p ${pg.port}`]) as number;
const database = await openDatabase({ databaseUrl: pg.url, dataDir: "", poolSize: 4 });
await database.migrate();
const orgId = `org_${randomUUID()}`;
const now = Date.now();
const make = () => {
  // The gateway's own ids: time-ordered, as the ledger's primary keys get them.
  const id = newRequestId();
  return encodeCallEvent(
    debitEvent(orgId, byo ? 0 : 1234, {
      id,
      byo,
      base: 1175,
      surcharge: 59,
      inputTokens: 812,
      outputTokens: 20,
      model: "openai/gpt-4.1-mini",
      tags: {},
      firstTokenAt: now + 100,
      endedAt: now + 900,
    }),
  );
};
const ids: string[] = [];
// warm-up
for (let i = 0; i < 5; i++)
  await writeLedgerBatch(
    database.db,
    Array.from({ length: batchSize }, () => ({ event: make(), balanceAfter: 1 })),
  );
const batches = Array.from({ length: Math.ceil(total / batchSize) }, () =>
  Array.from({ length: batchSize }, () => {
    const event = make();
    ids.push(JSON.parse(event)[1] as string);
    return { event, balanceAfter: byo ? undefined : 1_000_000 };
  }),
);
let cpu = treeCpuMs(pid);
const t = performance.now();
for (const batch of batches) await writeLedgerBatch(database.db, batch);
const writeUs = ((treeCpuMs(pid) - cpu) * 1000) / ids.length;
const writeWall = (performance.now() - t) / 1000;
cpu = treeCpuMs(pid);
for (let i = 0; i < ids.length; i += 1000) await recordedCalls(database.db, ids.slice(i, i + 1000));
const confirmUs = ((treeCpuMs(pid) - cpu) * 1000) / ids.length;
// Let autovacuum/analyze have a go and count what it costs per event.
cpu = treeCpuMs(pid);
await new Promise((r) => setTimeout(r, 15_000));
const idleUs = ((treeCpuMs(pid) - cpu) * 1000) / ids.length;
process.stdout.write(
  `${ids.length} ${byo ? "usage" : "debit"} events in batches of ${batchSize}: write ${writeUs.toFixed(1)} µs/event (${(ids.length / writeWall).toFixed(0)}/s), confirm ${confirmUs.toFixed(1)} µs/call, background after ${idleUs.toFixed(1)} µs/event\n`,
);
await database.close();
await pg.destroy();
process.exit(0);
