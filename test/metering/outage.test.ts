import { mkdirSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { encodeCallEvent } from "../../src/metering/events.ts";
import { reconcile } from "../../src/metering/reconcile.ts";
import type { PendingSettle } from "../../src/metering/spool.ts";
import { waitUntil } from "../../tools/servers/ports.ts";
import { startRedis } from "../../tools/servers/redis.ts";
import { debitEvent } from "../harness/events.ts";
import { startGateway } from "../harness/gateway.ts";
import { ownServersEachTest } from "../harness/own-servers.ts";

/** Each test: the mock, its own Redis and database, and a DATA_DIR for the gateways' spool. */
const own = ownServersEachTest({ keyPrefix: "outage" });

describe("Redis unreachable when a call ends", () => {
  it("keeps the debit, spools it over a gateway restart, and applies it once when Redis is back", async () => {
    const first = await startGateway({ env: own.env, mock: own.mock });
    const org = await first.org({ credits: "1" });
    const res = await first.post("/v1/chat/completions", org.key, {
      model: "gpt-4.1",
      messages: [{ role: "user", content: "hi" }],
      stream: true,
      stream_options: { include_usage: true },
      mock: { chunks: 30, delayMs: 25 },
    });
    const id = res.headers.get("x-request-id") as string;
    const reader = res.body!.getReader();
    await reader.read();
    await own.redis.stop();
    let text = "";
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      text += new TextDecoder().decode(value);
    }
    expect(text).toContain("data: [DONE]"); // the caller got the whole answer
    const cost = JSON.parse((text.match(/data: (\{[^\n]*"usage":\{[^\n]*)/) as RegExpMatchArray)[1] as string)
      .usage.cost as number;
    expect(cost).toBeGreaterThan(0);

    // While Redis is away nothing new is admitted: it could not be paid for.
    const refused = await first.post("/v1/chat/completions", org.key, {
      model: "gpt-4.1",
      messages: [{ role: "user", content: "x" }],
    });
    expect(refused.status).toBe(503);
    expect(refused.headers.get("content-type")).toBe("application/json");

    await first.close(); // shutdown with the settle still pending: it goes to the spool
    expect(readdirSync(join(own.dataDir, "spool")).length).toBe(1);

    own.redis = await startRedis({ port: own.redis.port }); // back, and empty
    const second = await startGateway({ env: own.env, mock: own.mock });
    try {
      await waitUntil("the spooled debit to reach Postgres", async () => {
        await second.services.flusher.drain();
        const rows = await own.sql`select amount from credit_transactions where id = ${id}`;
        return rows.length === 1;
      });
      const [debit] = await own.sql`select amount from credit_transactions where id = ${id}`;
      expect(Number(debit?.amount)).toBe(Math.round(cost * 1e9));
      // The journal keeps a settle until it sees it in Postgres, then lets the file go.
      await waitUntil(
        "the journal to let go of the settle",
        async () => readdirSync(join(own.dataDir, "spool")).length === 0,
      );
      expect((await second.services.store.getBalance(org.id))?.balance).toBe(
        1_000_000_000 - Number(debit?.amount),
      );
      expect((await reconcile(second.services.store, second.services.database)).differences).toEqual([]);
    } finally {
      await second.close();
    }
  }, 60_000);

  // A spooled settle may have been applied after all (its answer was what got lost), and the
  // store's memory of it goes when Redis restarts empty or its done marker expires. The ledger
  // then decides: the call is there, so the replay charges nothing.
  it("a spooled settle whose call is already in the ledger is not charged again", async () => {
    const first = await startGateway({ env: own.env, mock: own.mock });
    const org = await first.org({ credits: "1" });
    const res = await first.post("/v1/chat/completions", org.key, {
      model: "gpt-4.1",
      messages: [{ role: "user", content: "hi" }],
    });
    expect(res.status).toBe(200);
    const id = res.headers.get("x-request-id") as string;
    await first.services.flusher.drain();
    const [debit] = await own.sql`select amount from credit_transactions where id = ${id}`;
    const charged = Number(debit?.amount);
    expect(charged).toBeGreaterThan(0);
    await first.close();

    await own.redis.restart(); // empty: the done marker of the call is gone
    const spooled: PendingSettle = {
      kind: "settle",
      orgId: org.id,
      requestId: id,
      cost: charged,
      event: encodeCallEvent(debitEvent(org.id, charged, { id })),
      monthStart: 0,
    };
    mkdirSync(join(own.dataDir, "spool"), { recursive: true });
    writeFileSync(join(own.dataDir, "spool", "settles-1-1.jsonl"), `${JSON.stringify(spooled)}\n`);

    const second = await startGateway({ env: own.env, mock: own.mock });
    try {
      await waitUntil(
        "the spool to be replayed",
        async () => readdirSync(join(own.dataDir, "spool")).length === 0,
      );
      await second.services.flusher.drain();
      expect(await second.services.meter.balance(org.id)).toBe(1_000_000_000 - charged);
      const rows = await own.sql`select id from credit_transactions where id = ${id}`;
      expect(rows).toHaveLength(1);
      expect((await reconcile(second.services.store, second.services.database)).differences).toEqual([]);
    } finally {
      await second.close();
    }
  }, 60_000);
});
