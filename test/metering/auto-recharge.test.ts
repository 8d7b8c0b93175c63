import { eq } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { notifications } from "../../src/db/schema/notifications.ts";
import type { ChargeRequest, ChargeResult, Payments } from "../../src/metering/payments.ts";
import { waitUntil } from "../../tools/servers/ports.ts";
import { steppingClock } from "../harness/clock.ts";
import { AUTO_RECHARGE, startGateway, type TestGateway } from "../harness/gateway.ts";
import { type MockEmailProvider, startMockEmailProvider } from "../harness/mock-email.ts";

/** Records every charge; fails while `failing` is set. */
class RecordingPayments implements Payments {
  charges: ChargeRequest[] = [];
  failing = false;
  async charge(request: ChargeRequest): Promise<ChargeResult> {
    this.charges.push(request);
    // Stripe's own latency: settles go on crossing the threshold while a charge is in flight.
    await new Promise((r) => setTimeout(r, 20));
    return this.failing
      ? { ok: false, reason: "card declined" }
      : { ok: true, paymentId: `pi_${this.charges.length}` };
  }
}

describe("auto-recharge", () => {
  const payments = new RecordingPayments();
  const clock = steppingClock();
  let gw: TestGateway;
  let email: MockEmailProvider;
  beforeAll(async () => {
    email = await startMockEmailProvider();
    gw = await startGateway({
      backend: "postgres+redis",
      payments,
      clock,
      env: {
        EMAIL_API_KEY: email.apiKey,
        EMAIL_FROM: "Planto <billing@planto.test>",
        EMAIL_API_URL: email.url,
        NOTIFY_INTERVAL_MS: "50",
      },
    });
  });
  afterAll(async () => {
    await gw?.close();
    await email?.close();
  });

  const settings = AUTO_RECHARGE;
  // Each call costs exactly $0.002 (1000 prompt tokens of gpt-4.1).
  const call = (key: string) =>
    gw.post("/v1/chat/completions", key, {
      model: "gpt-4.1",
      messages: [{ role: "user", content: "x" }],
      max_tokens: 10,
      mock: { usage: { prompt_tokens: 1000, completion_tokens: 0 } },
    });
  const credits = async (key: string) =>
    (
      (await (await gw.post("/billing/credits_transactions", key, { transactionType: "credit" })).json()) as {
        transactions: Array<Record<string, unknown>>;
      }
    ).transactions;

  it("requests exactly one recharge when 50 concurrent settles cross the threshold, and credits it as an auto-rebuy", async () => {
    const org = await gw.org({ credits: "0.55" });
    expect((await gw.admin("PATCH", `/admin/orgs/${org.id}/billing`, settings)).status).toBe(200);
    // 50 calls take $0.55 to $0.45, below the $0.50 threshold.
    const results = await Promise.all(Array.from({ length: 50 }, () => call(org.key)));
    expect(results.every((r) => r.status === 200)).toBe(true);
    // Every settle has answered, so every recharge it could have requested has started.
    await gw.services.meter.idle();
    expect(await credits(org.key)).toHaveLength(2);
    const mine = payments.charges.filter((c) => c.orgId === org.id);
    expect(mine).toHaveLength(1);
    expect(mine[0]).toMatchObject({ customerId: "cus_1", paymentMethodId: "pm_1" });
    // It fills up to $2 from the balance it found; calls still settling after it went on.
    const cents = mine[0]?.amountCents as number;
    expect(cents).toBeGreaterThanOrEqual(150);
    expect(cents).toBeLessThanOrEqual(155);
    expect((await credits(org.key))[0]).toMatchObject({
      creditType: "purchase",
      creditIsAutoRebuy: true,
      creditAutoRebuyMinThreshold: "0.5",
      creditAutoRebuyToBalance: "2",
      amount: (cents / 100).toString(),
    });
    expect(await gw.services.meter.balance(org.id)).toBe(550_000_000 - 50 * 2_000_000 + cents * 10_000_000);
  });

  it("turns itself off after 3 consecutive failed payments, and the org is notified once", async () => {
    const org = await gw.org({ credits: "0.5015" }); // the first call goes below $0.50
    await gw.admin("PATCH", `/admin/orgs/${org.id}/billing`, {
      ...settings,
      billingEmail: "cards@acme.test",
    });
    const attempts = () => payments.charges.filter((c) => c.orgId === org.id).length;
    payments.failing = true;
    try {
      for (let i = 1; i <= 3; i++) {
        expect((await call(org.key)).status).toBe(200);
        await gw.services.meter.idle(); // the attempt has ended, and released its lease
        expect(attempts()).toBe(i);
      }
      const after = await gw.admin<{ autoRebuyEnabled: boolean; autoRebuyFailures: number }>(
        "GET",
        `/admin/orgs/${org.id}`,
      );
      expect(after.body).toMatchObject({ autoRebuyEnabled: false, autoRebuyFailures: 3 });
      clock.advance(gw.config.KEY_CACHE_TTL_MS + 1); // the call sees the settings turned off
      expect((await call(org.key)).status).toBe(200);
      await gw.services.meter.idle();
      expect(attempts()).toBe(3);

      const rows = () =>
        gw.services.database.db.select().from(notifications).where(eq(notifications.orgId, org.id));
      await waitUntil("the notification", async () => (await rows()).some((r) => r.status === "sent"), 5_000);
      // A whole pass after it was marked sent: a row still due would have been sent again by now.
      await gw.services.notifications.runOnce();
      const sent = email.sentTo("cards@acme.test");
      expect(sent).toHaveLength(1);
      expect(sent[0]?.subject).toContain("auto-recharge is turned off");
      expect(sent[0]?.text).toContain("card declined");
      expect((await rows()).map((r) => [r.kind, r.status])).toEqual([["auto_recharge_disabled", "sent"]]);
    } finally {
      payments.failing = false;
    }
  });
});
