import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startGateway, type TestGateway, type TestOrg } from "../harness/gateway.ts";

const run = promisify(execFile);

describe("planto-gateway usage", () => {
  let gw: TestGateway;
  let org: TestOrg;
  const usage = (...args: string[]) =>
    run(process.execPath, ["bin/planto-gateway.js", "usage", "--org", org.id, ...args], {
      env: { ...process.env, PLANTO_API_KEY: org.key, PLANTO_GATEWAY_URL: gw.url },
    }).then((r) => r.stdout);

  beforeAll(async () => {
    gw = await startGateway();
    org = await gw.org({ credits: "2" });
    await gw.post(
      "/v1/chat/completions",
      org.key,
      {
        model: "gpt-4.1",
        messages: [{ role: "user", content: "x" }],
        mock: { usage: { prompt_tokens: 1000, completion_tokens: 500 } },
      },
      { "x-planto-plan-id": "p9", "x-planto-plan-name": "Refactor", "x-planto-purpose": "coding" },
    );
    await gw.services.flusher.drain();
  });
  afterAll(() => gw?.close());

  it("reports the balance and the spend by plan, purpose and model", async () => {
    const out = await usage("--month");
    expect(out).toContain("Balance:            $1.994");
    expect(out).toContain("Spend (this billing month):");
    expect(out).toMatch(/Refactor \(p9\)\s+\$0\.006/);
    expect(out).toMatch(/coding\s+\$0\.006/);
    expect(out).toMatch(/openai\/gpt-4\.1\s+\$0\.006/);
  });

  it("logs debits with model, tokens, prices and purpose, and purchases apart", async () => {
    const debits = await usage("--log", "--debits");
    expect(debits).toMatch(/debit\t-\$0\.006\t\$1\.994\tgpt-4\.1\t1000\/500\t\$2\.0000\/\$8\.0000\tcoding/);
    const purchases = await usage("--log", "--purchases");
    // The billing API shows an operator's grant as one of the CLI's four credit types.
    expect(purchases).toContain("credit (grant)\t+$2");
    expect(purchases).not.toContain("debit\t");
  });
});
