import type { ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import postgres from "postgres";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openDatabase } from "../src/db/client.ts";
import { type MockUpstream, startMockUpstream } from "../tools/mock-upstream/mock-upstream.ts";
import { spawnServer, stopChild } from "../tools/servers/children.ts";
import { freePort, waitUntil } from "../tools/servers/ports.ts";
import { freshDatabaseUrl } from "./harness/databases.ts";
import { STREAMED_CALL, streamedUsage } from "./harness/usage-frame.ts";

/**
 * The smoke test of a deploy: `wrangler dev --local` runs the Worker of wrangler.toml in workerd
 * from the npm packages, with its Durable Object and nothing remote. One streamed call through it
 * against the mock upstream; the debit must reach Postgres (through the org's object's alarm) at
 * exactly the cost the usage frame reported.
 */
const ADMIN = "dev-admin";
let mock: MockUpstream;
let sql: postgres.Sql;
let child: ChildProcess;
let url: string;
let persist: string;
let output = "";

beforeAll(async () => {
  mock = await startMockUpstream();
  const databaseUrl = await freshDatabaseUrl();
  const database = await openDatabase({ databaseUrl, dataDir: "" });
  await database.migrate(); // what `npm run db:migrate` does before a deploy
  await database.close();
  sql = postgres(databaseUrl, { max: 1, onnotice: () => {} });
  persist = mkdtempSync(join(tmpdir(), "wrangler-dev-"));
  const [port, inspector] = [await freePort(), await freePort()];
  url = `http://127.0.0.1:${port}`;
  const vars = {
    DATABASE_URL: databaseUrl,
    ADMIN_TOKEN: ADMIN,
    OPENAI_BASE_URL: mock.baseUrls.openai,
    OPENAI_API_KEY: "sk-openai-integrated",
    LOG_LEVEL: "warn",
  };
  child = spawnServer(
    "npx",
    [
      "wrangler",
      "dev",
      "--local",
      "--ip",
      "127.0.0.1",
      "--port",
      String(port),
      "--inspector-port",
      String(inspector),
      "--persist-to",
      persist,
      "--show-interactive-dev-session=false",
      ...Object.entries(vars).flatMap(([k, v]) => ["--var", `${k}:${v}`]),
    ],
    {
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, WRANGLER_SEND_METRICS: "false", CI: "true", NO_COLOR: "1" },
    },
  );
  child.stdout?.on("data", (d: Buffer) => {
    output += d.toString();
  });
  child.stderr?.on("data", (d: Buffer) => {
    output += d.toString();
  });
  await waitUntil(
    "wrangler dev to serve",
    async () => {
      if (child.exitCode !== null) throw new Error(`wrangler dev exited:\n${output}`);
      return (await fetch(`${url}/healthz`)).status < 500;
    },
    120_000,
  );
}, 150_000);

afterAll(async () => {
  if (child) await stopChild(child, "SIGINT");
  await sql?.end();
  await mock?.close();
  if (persist) rmSync(persist, { recursive: true, force: true });
});

async function post(path: string, auth: string, body: unknown, headers: Record<string, string> = {}) {
  return fetch(`${url}${path}`, {
    method: "POST",
    headers: { authorization: `Bearer ${auth}`, "content-type": "application/json", ...headers },
    body: JSON.stringify(body),
  });
}

describe("wrangler dev --local", () => {
  it("serves a streamed call and debits exactly its usage frame's cost", async () => {
    const created = await post("/admin/orgs", ADMIN, {
      name: "dev",
      billingMode: "integrated",
      isTrial: false,
    });
    expect(created.status).toBe(201);
    const org = (await created.json()) as { id: string };
    const credit = await post(
      `/admin/orgs/${org.id}/credits`,
      ADMIN,
      { amount: "1", creditType: "admin_grant" },
      { "idempotency-key": `dev-${org.id}` },
    );
    expect(credit.status).toBe(201);
    const { key } = (await (await post(`/admin/orgs/${org.id}/api-keys`, ADMIN, {})).json()) as {
      key: string;
    };

    const res = await post("/v1/chat/completions", key, STREAMED_CALL);
    expect(res.status).toBe(200);
    const text = await res.text();
    const usage = streamedUsage(text);
    expect(usage?.completion_tokens).toBe(20);
    const cost = Math.round((usage?.cost ?? 0) * 1e9);
    expect(cost).toBeGreaterThan(0);

    const requestId = res.headers.get("x-request-id") as string;
    // The org's Durable Object writes its outbox to Postgres on its alarm, a moment after the settle.
    let debits: postgres.Row[] = [];
    await waitUntil(
      "the debit in Postgres",
      async () => {
        debits = await sql`select amount, end_balance from credit_transactions where id = ${requestId}`;
        return debits.length === 1;
      },
      30_000,
    );
    expect(Number(debits[0]?.amount)).toBe(cost);
    expect(Number(debits[0]?.end_balance)).toBe(1e9 - cost);
    const balance = await fetch(`${url}/billing/balance`, { headers: { authorization: `Bearer ${key}` } });
    expect(((await balance.json()) as { balance: string }).balance).toBe(((1e9 - cost) / 1e9).toString());
  });
});
