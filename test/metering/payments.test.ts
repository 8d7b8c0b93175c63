import postgres from "postgres";
import Stripe from "stripe";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { ChargeRequest, ChargeResult, Payments } from "../../src/metering/payments.ts";
import { type MockUpstream, startMockUpstream } from "../../tools/mock-upstream/mock-upstream.ts";
import { waitUntil } from "../../tools/servers/ports.ts";
import { type RedisServer, startRedis } from "../../tools/servers/redis.ts";
import { freshDatabaseUrl } from "../harness/databases.ts";
import { AUTO_RECHARGE, startGateway, type TestGateway, type TestOrg } from "../harness/gateway.ts";

const SECRET = "whsec_test_secret";
const stripe = new Stripe("sk_test_unused");

/** A fake Stripe: each charge runs `during` (the test's fault) before it answers. */
class ScriptedPayments implements Payments {
  charges: ChargeRequest[] = [];
  during: (request: ChargeRequest, paymentId: string) => Promise<ChargeResult | undefined> = async () =>
    undefined;
  async charge(request: ChargeRequest): Promise<ChargeResult> {
    this.charges.push(request);
    const paymentId = `pi_${request.orgId}_${this.charges.length}`;
    return (await this.during(request, paymentId)) ?? { ok: true, paymentId };
  }
}

let mock: MockUpstream;
let redis: RedisServer;
let sql: postgres.Sql;
let payments: ScriptedPayments;
let gw: TestGateway;
let offset = 0;
const clock = { now: () => Date.now() + offset };
beforeEach(async () => {
  mock = await startMockUpstream();
  redis = await startRedis();
  payments = new ScriptedPayments();
  offset = 0;
  const databaseUrl = await freshDatabaseUrl();
  sql = postgres(databaseUrl, { max: 1, onnotice: () => {} });
  gw = await startGateway({
    mock,
    clock,
    payments,
    env: {
      DATABASE_URL: databaseUrl,
      REDIS_URL: redis.url,
      STRIPE_WEBHOOK_SECRET: SECRET,
      CREDIT_RETRY_INTERVAL_MS: "100",
      REBUY_LEASE_MS: "60000",
    },
  });
});
afterEach(async () => {
  await gw.close();
  await sql.end();
  await redis.stop();
  await mock.close();
});

const settings = AUTO_RECHARGE;
/** Each call costs exactly $0.002 (1000 prompt tokens of gpt-4.1). */
const call = (org: TestOrg) =>
  gw.post("/v1/chat/completions", org.key, {
    model: "gpt-4.1",
    messages: [{ role: "user", content: "x" }],
    max_tokens: 10,
    mock: { usage: { prompt_tokens: 1000, completion_tokens: 0 } },
  });
const rechargeOrg = async () => {
  const org = await gw.org({ credits: "0.5015" }); // the first call goes below $0.50
  expect((await gw.admin("PATCH", `/admin/orgs/${org.id}/billing`, settings)).status).toBe(200);
  return org;
};
/** Stripe's payment_intent.succeeded for an auto-recharge's PaymentIntent, signed. */
const webhook = (paymentId: string, orgId: string, cents: number) => {
  const payload = JSON.stringify({
    id: `evt_${paymentId}`,
    object: "event",
    type: "payment_intent.succeeded",
    data: {
      object: {
        id: paymentId,
        object: "payment_intent",
        amount_received: cents,
        metadata: { orgId, purpose: "auto-recharge" },
      },
    },
  });
  return fetch(`${gw.url}/billing/stripe/webhook`, {
    method: "POST",
    headers: {
      "content-type": "application/json",
      "stripe-signature": stripe.webhooks.generateTestHeaderString({ payload, secret: SECRET }),
    },
    body: payload,
  });
};
const purchases = async (orgId: string) =>
  sql`select id, amount from credit_transactions where org_id = ${orgId} and credit_type = 'purchase'`;

describe("auto-recharge payments", () => {
  it("a recharge and its payment_intent.succeeded webhook give one credit, in either order", async () => {
    // Order 1: the recharge credits, then the webhook arrives.
    const a = await rechargeOrg();
    expect((await call(a)).status).toBe(200);
    await waitUntil("the recharge credit", async () => (await purchases(a.id)).length === 1);
    const [charge] = payments.charges;
    const [credited] = await purchases(a.id);
    expect(credited?.id).toBe(`pi_${a.id}_1`);
    const late = await webhook(credited?.id as string, a.id, charge?.amountCents as number);
    expect(await late.json()).toEqual({ received: true, credited: false });
    expect(await purchases(a.id)).toHaveLength(1);

    // Order 2: Stripe's webhook lands while the PaymentIntent call is still answering.
    payments.during = async (request, paymentId) => {
      const early = await webhook(paymentId, request.orgId, request.amountCents);
      expect(await early.json()).toEqual({ received: true, credited: true });
      return undefined;
    };
    const b = await rechargeOrg();
    expect((await call(b)).status).toBe(200);
    await waitUntil(
      "the recharge to end",
      async () => (await sql`select id from credit_outbox`).length === 0 && payments.charges.length === 2,
    );
    await gw.services.flusher.drain();
    const rows = await purchases(b.id);
    expect(rows.map((r) => r.id)).toEqual([`pi_${b.id}_2`]);
    expect(Number(rows[0]?.amount)).toBe((payments.charges[1]?.amountCents as number) * 10_000_000);
    expect(await gw.services.meter.balance(b.id)).toBe(501_500_000 - 2_000_000 + Number(rows[0]?.amount));
  }, 60_000);

  // It found a lost debit once: a call settled before the gateway's first look at the store's epoch,
  // then Redis restarted empty, and the journal took the new epoch for its first and replayed nothing.
  it("a credit that fails after the charge succeeded is owed, and credited once Redis is back", async () => {
    // Redis dies while Stripe is answering: the charge went through, the credit cannot land now.
    payments.during = async () => {
      await redis.stop();
      return undefined;
    };
    const org = await rechargeOrg();
    expect((await call(org)).status).toBe(200);
    await waitUntil("the charge", async () => payments.charges.length === 1);
    await waitUntil(
      "the credit to be owed",
      async () => (await sql`select id from credit_outbox`).length === 1,
    );
    expect(await purchases(org.id)).toHaveLength(0);

    redis = await startRedis({ port: redis.port }); // back, and empty
    await waitUntil("the owed credit to land", async () => (await purchases(org.id)).length === 1, 20_000);
    await waitUntil(
      "the outbox row to go",
      async () => (await sql`select id from credit_outbox`).length === 0,
    );
    const [credit] = await purchases(org.id);
    expect(credit?.id).toBe(`pi_${org.id}_1`);
    const cents = payments.charges[0]?.amountCents as number;
    expect(Number(credit?.amount)).toBe(cents * 10_000_000);
    // The balance rebuilt from Postgres has the credit, once (and the call's debit, replayed if Redis
    // took it down with it).
    const expected = 501_500_000 - 2_000_000 + cents * 10_000_000;
    // Bounded by the test's own timeout, not a speed: on a busy machine the journal's epoch poll, the
    // replay and the outbox retry each wait their turn.
    await waitUntil(
      "the balance to settle",
      async () => (await gw.services.meter.balance(org.id)) === expected,
      40_000,
    );
    expect(payments.charges).toHaveLength(1);
  }, 60_000);

  it("a gateway that never heard back from Stripe holds the lease only until it expires, then recharges again", async () => {
    // The first PaymentIntent call never answers (as if its gateway died during it): nothing clears
    // the pending recharge, which used to turn auto-recharge off for good.
    let release: (r: ChargeResult) => void = () => undefined;
    const hung = new Promise<ChargeResult>((resolve) => {
      release = resolve;
    });
    payments.during = async () => (payments.charges.length === 1 ? hung : undefined);
    const org = await rechargeOrg();
    try {
      expect((await call(org)).status).toBe(200);
      await waitUntil("the first charge", async () => payments.charges.length === 1);
      // Still within the lease: crossing settles request nothing.
      for (let i = 0; i < 3; i++) expect((await call(org)).status).toBe(200);
      offset += 60_001; // the lease ends
      expect((await call(org)).status).toBe(200);
      await waitUntil("the recharge after the lease", async () => (await purchases(org.id)).length === 1);
      expect(payments.charges).toHaveLength(2);
      const [credit] = await purchases(org.id);
      expect(credit?.id).toBe(`pi_${org.id}_2`);
    } finally {
      release({ ok: false, reason: "the gateway died" });
    }
  }, 60_000);
});
