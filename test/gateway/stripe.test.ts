import Stripe from "stripe";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startGateway, type TestGateway } from "../harness/gateway.ts";

const SECRET = "whsec_test_secret";
const stripe = new Stripe("sk_test_unused");

describe("purchases by Stripe webhook", () => {
  let gw: TestGateway;
  beforeAll(async () => {
    gw = await startGateway({ backend: "postgres+redis", env: { STRIPE_WEBHOOK_SECRET: SECRET } });
  });
  afterAll(() => gw?.close());

  const event = (id: string, orgId: string, cents: number) =>
    JSON.stringify({
      id,
      object: "event",
      type: "checkout.session.completed",
      data: {
        object: {
          id: `cs_${id}`,
          object: "checkout.session",
          payment_status: "paid",
          amount_total: cents,
          metadata: { orgId },
        },
      },
    });
  const deliver = (
    payload: string,
    signature = stripe.webhooks.generateTestHeaderString({ payload, secret: SECRET }),
  ) =>
    fetch(`${gw.url}/billing/stripe/webhook`, {
      method: "POST",
      headers: { "content-type": "application/json", "stripe-signature": signature },
      body: payload,
    });
  const balance = async (key: string) =>
    (
      (await (
        await fetch(`${gw.url}/billing/balance`, { headers: { authorization: `Bearer ${key}` } })
      ).json()) as { balance: string }
    ).balance;

  it("credits a verified purchase once, however often Stripe replays it", async () => {
    const org = await gw.org();
    const payload = event("evt_1", org.id, 2500);
    const first = await deliver(payload);
    expect(first.status).toBe(200);
    expect(await first.json()).toEqual({ received: true, credited: true });
    for (let i = 0; i < 3; i++)
      expect(await (await deliver(payload)).json()).toEqual({ received: true, credited: false });
    expect(await balance(org.key)).toBe("25");
    const log = (await (
      await gw.post("/billing/credits_transactions", org.key, { transactionType: "credit" })
    ).json()) as {
      transactions: Array<Record<string, unknown>>;
    };
    expect(log.transactions.map((t) => [t.creditType, t.amount])).toEqual([["purchase", "25"]]);
  });

  it("a forged or unsigned event gets 400 and credits nothing", async () => {
    const org = await gw.org();
    const payload = event("evt_forged", org.id, 100_000);
    const forged = await deliver(
      payload,
      stripe.webhooks.generateTestHeaderString({ payload, secret: "whsec_not_ours" }),
    );
    expect(forged.status).toBe(400);
    expect(forged.headers.get("content-type")).toBe("application/json");
    const tampered = await deliver(
      payload.replace("100000", "999999"),
      stripe.webhooks.generateTestHeaderString({ payload, secret: SECRET }),
    );
    expect(tampered.status).toBe(400);
    const unsigned = await fetch(`${gw.url}/billing/stripe/webhook`, { method: "POST", body: payload });
    expect(unsigned.status).toBe(400);
    expect(await balance(org.key)).toBe("0");
  });
});
