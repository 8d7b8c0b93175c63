import { join } from "node:path";
import { Redis } from "ioredis";
import { describe, expect, it } from "vitest";
import { reconcile } from "../../src/metering/reconcile.ts";
import { shardOf } from "../../src/metering/store.ts";
import { waitUntil } from "../../tools/servers/ports.ts";
import { startGateway, type TestGateway, type TestOrg } from "../harness/gateway.ts";
import { ownServersEachTest } from "../harness/own-servers.ts";

/**
 * Redis loses settles that no flusher wrote yet (issue 11.1): a burst of streamed calls settle, then
 * Redis is stopped with SHUTDOWN NOSAVE within 20 ms and starts again empty, and traffic goes on.
 * The flush interval is raised so that the settles are still only in Redis when it dies.
 */
const own = ownServersEachTest({ keyPrefix: "loss", env: { FLUSH_INTERVAL_MS: "3000" } });

const BURST = 10;

/** One streamed call read to its end; its request id. */
async function streamed(gw: TestGateway, org: TestOrg): Promise<string> {
  const res = await gw.post("/v1/chat/completions", org.key, {
    model: "gpt-4.1",
    messages: [{ role: "user", content: "hi" }],
    stream: true,
    stream_options: { include_usage: true },
    mock: { chunks: 5 },
  });
  expect(res.status).toBe(200);
  await res.text();
  return res.headers.get("x-request-id") as string;
}

/**
 * A burst of settles, then SHUTDOWN NOSAVE as soon as Redis has them all (a settle sets its done
 * marker in the same script that debits and appends to the stream; the poll is one EXISTS on a
 * connection opened beforehand), then an empty restart. Returns the burst's ids.
 */
async function burstThenLoss(gw: TestGateway, org: TestOrg): Promise<string[]> {
  const admin = new Redis(own.redis.url, { maxRetriesPerRequest: 0, retryStrategy: () => null });
  admin.on("error", () => {});
  try {
    await admin.ping();
    const ids = await Promise.all(Array.from({ length: BURST }, () => streamed(gw, org)));
    for (const id of ids) expect(id).toBeTruthy();
    const prefix = `loss:{loss:${shardOf(org.id)}}:done:`;
    while ((await admin.exists(...ids.map((id) => `${prefix}${id}`))) < ids.length) {
      await new Promise((r) => setImmediate(r));
    }
    await admin.call("SHUTDOWN", "NOSAVE").catch(() => undefined);
    await own.redis.shutdownNosave(); // waits for the exit, starts it again empty
    return ids;
  } finally {
    admin.disconnect();
  }
}

async function debits(orgId: string): Promise<Map<string, number>> {
  const rows =
    await own.sql`select id, amount from credit_transactions where org_id = ${orgId} and transaction_type = 'debit'`;
  return new Map(rows.map((r) => [r.id as string, Number(r.amount)]));
}

describe("Redis restarted empty a few ms after calls settle", () => {
  it("every served call still has exactly one debit, over several rounds, and reconcile is clean", async () => {
    const gw = await startGateway({ env: own.env, mock: own.mock });
    try {
      const org = await gw.org({ credits: "10" });
      const served: string[] = [];
      const rounds = 4;
      for (let round = 0; round < rounds; round++) {
        served.push(...(await burstThenLoss(gw, org)));
        // Traffic goes on after the restart: the balance is rebuilt, the lost settles replayed.
        served.push(await streamed(gw, org));
      }
      await waitUntil(
        "every served call to be debited in Postgres",
        async () => {
          await gw.services.flusher.drain();
          const found = await debits(org.id);
          return served.every((id) => found.has(id));
        },
        30_000,
      );
      const found = await debits(org.id);
      // Exactly the served calls, once each (ids are primary keys; no debit for a call not served).
      expect([...found.keys()].sort()).toEqual([...served].sort());
      const [usage] =
        await own.sql`select count(*)::int as n, sum(charged)::bigint as charged from usage_records where org_id = ${org.id}`;
      expect(usage?.n).toBe(served.length);
      expect(Number(usage?.charged)).toBe([...found.values()].reduce((a, b) => a + b, 0));

      // The live balance agrees with the ledger: the replays debited the rebuilt balance too.
      await waitUntil("the ledger stream to be flushed", async () => {
        await gw.services.flusher.drain();
        return (await gw.services.store.ledgerLag()).length === 0;
      });
      expect(await gw.services.store.getBalance(org.id)).not.toBeNull();
      const report = await reconcile(gw.services.store, gw.services.database, {
        journalDir: join(own.dataDir, "spool"),
      });
      expect(report.differences).toEqual([]);
      expect(report.missing).toEqual([]);
      expect(report.deadLetters).toBe(0);
    } finally {
      await gw.close();
    }
  }, 120_000);

  it("without the journal's replay the calls go free, and reconcile names each of them", async () => {
    const gw = await startGateway({ env: own.env, mock: own.mock, faults: { noReplay: true } });
    try {
      const org = await gw.org({ credits: "10" });
      const served = await burstThenLoss(gw, org);
      served.push(await streamed(gw, org));
      await waitUntil("the flusher to write what Redis still had", async () => {
        await gw.services.flusher.drain();
        return (await gw.services.store.ledgerLag()).length === 0;
      });
      const found = await debits(org.id);
      const lost = served.filter((id) => !found.has(id));
      // The fault this guards against: settled calls Redis lost before any flusher wrote them.
      expect(lost.length).toBeGreaterThan(0);
      // Each lost call is reported, from the journal the gateway still keeps on disk.
      await waitUntil("reconcile to name every lost call", async () => {
        const { missing } = await reconcile(gw.services.store, gw.services.database, {
          journalDir: join(own.dataDir, "spool"),
        });
        return missing.length === lost.length;
      });
      const { missing } = await reconcile(gw.services.store, gw.services.database, {
        journalDir: join(own.dataDir, "spool"),
      });
      expect(missing.map((m) => m.requestId).sort()).toEqual([...lost].sort());
      expect(missing.every((m) => m.found === "journal" && m.amount > 0 && m.orgId === org.id)).toBe(true);
    } finally {
      await gw.close();
    }
  }, 60_000);

  it("reconcile finds a usage record with a cost whose debit is missing", async () => {
    const gw = await startGateway({ env: own.env, mock: own.mock });
    try {
      const org = await gw.org({ credits: "10" });
      const id = await streamed(gw, org);
      await waitUntil("the call to reach Postgres", async () => {
        await gw.services.flusher.drain();
        return (await debits(org.id)).has(id);
      });
      const clean = await reconcile(gw.services.store, gw.services.database);
      expect(clean.missing).toEqual([]);
      await own.sql`delete from credit_transactions where id = ${id}`;
      const { missing } = await reconcile(gw.services.store, gw.services.database);
      expect(missing).toEqual([expect.objectContaining({ requestId: id, orgId: org.id, found: "usage" })]);
    } finally {
      await gw.close();
    }
  }, 60_000);
});
