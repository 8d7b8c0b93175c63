import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import postgres from "postgres";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { encodeCallEvent } from "../../src/metering/events.ts";
import type { PendingSettle } from "../../src/metering/spool.ts";
import { type MockUpstream, startMockUpstream } from "../../tools/mock-upstream/mock-upstream.ts";
import { waitUntil } from "../../tools/servers/ports.ts";
import { startRedis } from "../../tools/servers/redis.ts";
import { freshDatabaseUrl } from "../harness/databases.ts";
import { debitEvent } from "../harness/events.ts";
import { startGateway, type TestGateway, type TestOrg } from "../harness/gateway.ts";

let mock: MockUpstream;
let dataDir: string;
beforeEach(async () => {
  mock = await startMockUpstream();
  dataDir = mkdtempSync(join(tmpdir(), "planto-rebuilt-"));
});
afterEach(async () => {
  await mock.close();
  rmSync(dataDir, { recursive: true, force: true });
});

const limits = { TRIAL_MAX_PLANS: "2", TRIAL_MAX_RESPONSES_PER_PLAN: "3" };
const call = (gw: TestGateway, org: TestOrg, plan: string) =>
  gw.post(
    "/v1/chat/completions",
    org.key,
    { model: "gpt-4.1-nano", messages: [{ role: "user", content: "hi" }] },
    { "x-planto-provider-key": "sk-user-own", "x-planto-plan-id": plan },
  );
const code = async (res: Response) => ((await res.json()) as { error?: { code: string } }).error?.code;

/** Uses up plan p (3 responses) and one response of plan q; what is left: 2 in q, no third plan. */
async function useTrial(gw: TestGateway, org: TestOrg) {
  for (let i = 0; i < 3; i++) expect((await call(gw, org, "p")).status).toBe(200);
  expect((await call(gw, org, "q")).status).toBe(200);
  expect(await code(await call(gw, org, "p"))).toBe("trial_messages_exceeded");
}
/** What a store that kept its counters answers after useTrial. */
async function expectTrialUsed(gw: TestGateway, org: TestOrg) {
  expect(await code(await call(gw, org, "p"))).toBe("trial_messages_exceeded");
  expect(await code(await call(gw, org, "r"))).toBe("trial_plans_exceeded");
  expect((await call(gw, org, "q")).status).toBe(200);
  expect((await call(gw, org, "q")).status).toBe(200);
  expect(await code(await call(gw, org, "q"))).toBe("trial_messages_exceeded");
}

describe("BYO trial counters are rebuilt from usage_records when the store lost them", () => {
  it("Redis restarted empty", async () => {
    const redis = await startRedis();
    const gw = await startGateway({
      mock,
      env: { ...limits, DATABASE_URL: await freshDatabaseUrl(), REDIS_URL: redis.url, DATA_DIR: dataDir },
    });
    try {
      const org = await gw.org({ billingMode: "byo", isTrial: true });
      await useTrial(gw, org);
      await gw.services.flusher.drain();
      await redis.shutdownNosave();
      await expectTrialUsed(gw, org);
    } finally {
      await gw.close();
      await redis.stop();
    }
  }, 60_000);

  it("a gateway without Redis restarted (its in-process store starts empty)", async () => {
    // The in-process store is what embedded mode meters with; Postgres instead of PGlite only
    // because a PGlite on disk takes tens of seconds to create on a busy machine.
    const env = { ...limits, DATA_DIR: dataDir, DATABASE_URL: await freshDatabaseUrl() };
    const first = await startGateway({ mock, env });
    let org: TestOrg;
    try {
      org = await first.org({ billingMode: "byo", isTrial: true });
      await useTrial(first, org);
    } finally {
      await first.close();
    }
    const second = await startGateway({ mock, env });
    try {
      await expectTrialUsed(second, org);
    } finally {
      await second.close();
    }
  }, 60_000);
});

describe("dead letters", () => {
  it("a settle that can never be applied goes to dead_letters with its metric, and the settles behind it are applied", async () => {
    const redis = await startRedis();
    const databaseUrl = await freshDatabaseUrl();
    const sql = postgres(databaseUrl, { max: 1, onnotice: () => {} });
    const env = {
      DATABASE_URL: databaseUrl,
      REDIS_URL: redis.url,
      DATA_DIR: dataDir,
      METRICS_TOKEN: "scrape-token",
    };
    try {
      const setup = await startGateway({ mock, env });
      const org = await setup.org({ credits: "1" });
      await setup.close();
      // A journal an earlier run left: a settle whose cost is no whole number of nanodollars (no
      // store can take it: it was retried forever and blocked every settle behind it), then two good ones.
      const settle = (cost: number): PendingSettle => {
        const e = debitEvent(org.id, Math.round(cost));
        return {
          kind: "settle",
          orgId: org.id,
          requestId: e.id,
          cost,
          event: encodeCallEvent(e),
          monthStart: 0,
        };
      };
      const poison = settle(1.5);
      const good = [settle(1000), settle(2000)];
      mkdirSync(join(dataDir, "spool"), { recursive: true });
      writeFileSync(
        join(dataDir, "spool", "settles-1-1.jsonl"),
        `${[poison, ...good].map((p) => JSON.stringify(p)).join("\n")}\n`,
      );

      const gw = await startGateway({ mock, env });
      try {
        await waitUntil("the good settles to reach Postgres", async () => {
          await gw.services.flusher.drain();
          const rows = await sql`select id from credit_transactions where transaction_type = 'debit'`;
          return rows.length === 2;
        });
        const rows =
          await sql`select id from credit_transactions where transaction_type = 'debit' order by id`;
        expect(rows.map((r) => r.id)).toEqual(good.map((g) => g.requestId).sort());
        const letters = await sql`select id, source, org_id, payload from dead_letters`;
        expect(letters).toEqual([
          { id: poison.requestId, source: "spool", org_id: org.id, payload: JSON.stringify(poison) },
        ]);
        const metrics = await (
          await fetch(`${gw.url}/metrics`, {
            headers: { authorization: `Bearer ${gw.config.METRICS_TOKEN}` },
          })
        ).text();
        expect(metrics).toMatch(/planto_dead_letters_total\{source="spool"\} 1/);
        expect((await gw.services.store.getBalance(org.id))?.balance).toBe(1_000_000_000 - 3000);
      } finally {
        await gw.close();
      }
    } finally {
      await sql.end();
      await redis.stop();
    }
  }, 60_000);
});
