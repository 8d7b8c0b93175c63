import postgres from "postgres";
import { describe, expect, inject, it } from "vitest";
import { startMockUpstream } from "../../tools/mock-upstream/mock-upstream.ts";
import { waitUntil } from "../../tools/servers/ports.ts";
import { freshDatabaseUrl } from "../harness/databases.ts";
import { ADMIN_TOKEN } from "../harness/gateway.ts";
import { createOrgOn, spawnGateway } from "../harness/process.ts";

describe("SIGTERM", () => {
  it("stops accepting, lets the open stream finish, settles it, and exits 0", async () => {
    const mock = await startMockUpstream();
    const databaseUrl = await freshDatabaseUrl();
    const gw = await spawnGateway({
      DATABASE_URL: databaseUrl,
      REDIS_URL: inject("redisUrl"),
      REDIS_KEY_PREFIX: "sigterm",
      ADMIN_TOKEN,
      OPENAI_BASE_URL: mock.baseUrls.openai,
      SHUTDOWN_GRACE_MS: "10000",
    });
    const { id: orgId, key } = await createOrgOn(gw.url, { isTrial: true });

    const res = await fetch(`${gw.url}/v1/chat/completions`, {
      method: "POST",
      headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
      body: JSON.stringify({
        model: "gpt-4.1-mini",
        messages: [{ role: "user", content: "hi" }],
        stream: true,
        mock: { tag: "sigterm", chunks: 30, delayMs: 50 },
      }),
    });
    const reader = res.body!.getReader();
    await reader.read();
    gw.child.kill("SIGTERM");
    // The gateway logs this line once it has stopped accepting (server.close() runs in the same tick).
    await waitUntil("the shutdown to begin", async () => gw.logs.some((l) => l.msg === "shutting down"));
    await expect(fetch(`${gw.url}/healthz`)).rejects.toThrow();

    let text = "";
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      text += new TextDecoder().decode(value);
    }
    expect(text).toContain("data: [DONE]");
    expect(await gw.exited).toBe(0);

    const sql = postgres(databaseUrl, { max: 1, onnotice: () => {} });
    try {
      const debits =
        await sql`select amount from credit_transactions where org_id = ${orgId} and transaction_type = 'debit'`;
      expect(debits).toHaveLength(1);
    } finally {
      await sql.end();
      await mock.close();
    }
  });
});
