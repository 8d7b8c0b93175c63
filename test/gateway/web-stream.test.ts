import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createApp } from "../../src/gateway/app.ts";
import { startGateway, type TestGateway, type TestOrg } from "../harness/gateway.ts";
import { STREAMED_CALL, streamedUsage } from "../harness/usage-frame.ts";

/**
 * The web-stream path (Workers, and `app.request()` here): the Response is returned before its body
 * is pumped, so the settle must wait for the pump's end, kept alive by the runtime's waitUntil.
 * A settle in the handler's `finally` charged such a stream its prompt only.
 */
let gw: TestGateway;
let org: TestOrg;
const pending: Promise<unknown>[] = [];
const executionCtx = {
  waitUntil: (p: Promise<unknown>) => void pending.push(p),
  passThroughOnException: () => {},
  props: {},
};

beforeAll(async () => {
  gw = await startGateway();
  org = await gw.org({ credits: "5" });
});
afterAll(async () => {
  await gw?.close();
});

async function balance(): Promise<number> {
  const b = await gw.services.store.getBalance(org.id);
  if (!b) throw new Error("no balance");
  return b.balance;
}

function request(body: Record<string, unknown>) {
  return createApp(gw.services).request(
    "/v1/chat/completions",
    {
      method: "POST",
      headers: { authorization: `Bearer ${org.key}`, "content-type": "application/json" },
      body: JSON.stringify({ model: "gpt-4.1", messages: [{ role: "user", content: "hi" }], ...body }),
    },
    undefined,
    executionCtx,
  );
}

describe("the web-stream path through app.request()", () => {
  it("debits a stream what its usage frame says, once the pump has read it all", async () => {
    const before = await balance();
    const res = await request(STREAMED_CALL);
    expect(res.status).toBe(200);
    const text = await res.text();
    await Promise.all(pending.splice(0));
    const usage = streamedUsage(text);
    expect(usage?.completion_tokens).toBe(20);
    const cost = Math.round((usage?.cost ?? 0) * 1e9);
    expect(cost).toBeGreaterThan(0);
    expect(before - (await balance())).toBe(cost);
  });

  it("debits a plain call its x-planto-cost", async () => {
    const before = await balance();
    const res = await request({});
    expect(res.status).toBe(200);
    await res.text();
    await Promise.all(pending.splice(0));
    const cost = Math.round(Number(res.headers.get("x-planto-cost")) * 1e9);
    expect(cost).toBeGreaterThan(0);
    expect(before - (await balance())).toBe(cost);
  });
});
