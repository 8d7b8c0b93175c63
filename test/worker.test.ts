import postgres from "postgres";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openDatabase } from "../src/db/client.ts";
import worker from "../src/worker.ts";
import { type MockUpstream, startMockUpstream } from "../tools/mock-upstream/mock-upstream.ts";
import { freshDatabaseUrl } from "./harness/databases.ts";

/**
 * The Workers entry, driven as the runtime drives it: a Request in, a Response out, and the work
 * it hands to waitUntil awaited afterwards (the isolate lives until that work is done).
 */
let mock: MockUpstream;
let env: Record<string, string>;
let sql: postgres.Sql;
const pending: Promise<unknown>[] = [];
const ctx = { waitUntil: (p: Promise<unknown>) => void pending.push(p) };

beforeAll(async () => {
  mock = await startMockUpstream();
  const databaseUrl = await freshDatabaseUrl();
  const database = await openDatabase({ databaseUrl, dataDir: "" });
  await database.migrate(); // on Workers, `npm run db:migrate` runs before a deploy
  await database.close();
  env = {
    DATABASE_URL: databaseUrl,
    ADMIN_TOKEN: "worker-admin",
    OPENAI_BASE_URL: mock.baseUrls.openai,
    OPENAI_API_KEY: "sk-openai-integrated",
    LOG_LEVEL: "silent",
  };
  sql = postgres(databaseUrl, { max: 1, onnotice: () => {} });
});
afterAll(async () => {
  await sql.end();
  await mock.close();
});

async function send(path: string, body: unknown, auth: string, headers: Record<string, string> = {}) {
  return worker.fetch(
    new Request(`http://worker${path}`, {
      method: "POST",
      headers: { authorization: `Bearer ${auth}`, "content-type": "application/json", ...headers },
      body: JSON.stringify(body),
    }),
    env,
    ctx,
  );
}

/** Everything the requests left to waitUntil, as the runtime would let it finish. */
async function settled(): Promise<void> {
  while (pending.length) await Promise.all(pending.splice(0));
}

describe("the Workers entry", () => {
  it("writes every debit to Postgres, plain and streamed, without a flusher loop of its own", async () => {
    const created = await send(
      "/admin/orgs",
      { name: "w", billingMode: "integrated", isTrial: false },
      "worker-admin",
    );
    expect(created.status).toBe(201);
    const org = (await created.json()) as { id: string };
    const credit = await send(
      `/admin/orgs/${org.id}/credits`,
      { amount: "1", creditType: "admin_grant" },
      "worker-admin",
      { "idempotency-key": `w-${org.id}` },
    );
    expect(credit.status).toBe(201);
    const { key } = (await (await send(`/admin/orgs/${org.id}/api-keys`, {}, "worker-admin")).json()) as {
      key: string;
    };

    const plain = await send(
      "/v1/chat/completions",
      { model: "gpt-4.1", messages: [{ role: "user", content: "hi" }] },
      key,
    );
    expect(plain.status).toBe(200);
    await plain.text();
    const streamed = await send(
      "/v1/chat/completions",
      {
        model: "gpt-4.1",
        messages: [{ role: "user", content: "hi" }],
        stream: true,
        mock: { chunks: 5, delayMs: 5 },
      },
      key,
    );
    expect(streamed.status).toBe(200);
    expect(await streamed.text()).toContain("data: [DONE]");
    await settled();

    const ids = [plain.headers.get("x-request-id"), streamed.headers.get("x-request-id")] as string[];
    const debits = await sql`select id, amount from credit_transactions where id in ${sql(ids)}`;
    expect(debits).toHaveLength(2);
    const usage = await sql`select id from usage_records where id in ${sql(ids)}`;
    expect(usage).toHaveLength(2);
    const spent = debits.reduce((sum, d) => sum + Number(d.amount), 0);
    expect(spent).toBeGreaterThan(0);
    const balance = await worker.fetch(
      new Request("http://worker/billing/balance", { headers: { authorization: `Bearer ${key}` } }),
      env,
      ctx,
    );
    expect(((await balance.json()) as { balance: string }).balance).toBe(((1e9 - spent) / 1e9).toString());
  });

  it("runs its background jobs on the cron trigger", async () => {
    await worker.scheduled({}, env, ctx);
    await settled();
  });
});
