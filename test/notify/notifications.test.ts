import { eq } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Outbox, postgresOutbox } from "../../src/db/notifications.ts";
import { notifications } from "../../src/db/schema/notifications.ts";
import { NotificationDispatcher } from "../../src/notify/dispatcher.ts";
import { resendNotifier } from "../../src/notify/notifier.ts";
import { waitUntil } from "../../tools/servers/ports.ts";
import { startGateway, type TestGateway, type TestOrg } from "../harness/gateway.ts";
import { type MockEmailProvider, startMockEmailProvider } from "../harness/mock-email.ts";

const FROM = "Planto <billing@planto.test>";
const emailEnv = (provider: MockEmailProvider, intervalMs: number) => ({
  EMAIL_API_KEY: provider.apiKey,
  EMAIL_FROM: FROM,
  EMAIL_API_URL: provider.url,
  NOTIFY_INTERVAL_MS: String(intervalMs),
});

/** Each call costs exactly $0.002 (1000 prompt tokens of gpt-4.1). */
const call = (gw: TestGateway, org: TestOrg) =>
  gw
    .post("/v1/chat/completions", org.key, {
      model: "gpt-4.1",
      messages: [{ role: "user", content: "x" }],
      max_tokens: 10,
      mock: { usage: { prompt_tokens: 1000, completion_tokens: 0 } },
    })
    .then(async (res) => {
      await res.arrayBuffer();
      return res.status;
    });

const outboxOf = (gw: TestGateway, orgId: string) =>
  gw.services.database.db
    .select()
    .from(notifications)
    .where(eq(notifications.orgId, orgId))
    .orderBy(notifications.createdAt);

/** An org with $10, a billing month from the 15th, and a $0.01 notification threshold. */
async function watchedOrg(gw: TestGateway, billingEmail: string | null): Promise<TestOrg> {
  const org = await gw.org({ credits: "10" });
  const patched = await gw.admin("PATCH", `/admin/orgs/${org.id}/billing`, {
    billingCycleStartedAt: "2026-10-15T00:00:00Z",
    notifyThreshold: "0.01",
    billingEmail,
  });
  expect(patched.status).toBe(200);
  return org;
}

describe("spend threshold notifications, with 3 gateway instances", () => {
  let now = Date.parse("2026-11-20T12:00:00Z");
  const clock = { now: () => now };
  const gateways: TestGateway[] = [];
  let provider: MockEmailProvider;

  beforeAll(async () => {
    provider = await startMockEmailProvider();
    const first = await startGateway({ backend: "postgres+redis", clock, env: emailEnv(provider, 50) });
    const shared = {
      DATABASE_URL: first.config.DATABASE_URL as string,
      REDIS_URL: first.config.REDIS_URL as string,
      REDIS_KEY_PREFIX: first.config.REDIS_KEY_PREFIX,
      ...emailEnv(provider, 50),
    };
    gateways.push(
      first,
      await startGateway({ env: shared, clock }),
      await startGateway({ env: shared, clock }),
    );
  });
  afterAll(async () => {
    for (const gw of gateways) await gw.close();
    await provider?.close();
  });
  const gw = () => gateways[0] as TestGateway;
  /** Calls spread over the 3 instances (so 3 flushers, 6 lanes, commit the org's debits). */
  const spend = (org: TestOrg, calls: number) =>
    Promise.all(Array.from({ length: calls }, (_, i) => call(gateways[i % 3] as TestGateway, org)));
  const flushAll = () => Promise.all(gateways.map((g) => g.services.flusher.drain()));
  /** One delivery pass on every instance: whatever is due goes out in it, so after it nothing more will. */
  const deliverAll = () => Promise.all(gateways.map((g) => g.services.notifications.runOnce()));

  it("spend crossing notifyThreshold under concurrency: exactly one outbox row and one email in the billing month", async () => {
    const org = await watchedOrg(gw(), "billing@acme.test");
    expect(await spend(org, 60)).toEqual(Array.from({ length: 60 }, () => 200)); // $0.12 against $0.01
    await waitUntil("the email", async () => provider.sentTo("billing@acme.test").length === 1);
    await flushAll();
    await deliverAll(); // a second delivery would go out in this pass
    const rows = await outboxOf(gw(), org.id);
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({
      kind: "spend_threshold",
      dedupeKey: "2026-11-15T00:00:00.000Z",
      status: "sent",
      recipient: "billing@acme.test",
      attempts: 1,
    });
    const [email] = provider.sentTo("billing@acme.test");
    expect(email).toMatchObject({ from: FROM, idempotencyKey: rows[0]?.id });
    expect(email?.subject).toContain("passed $0.01");
    expect(email?.text).toContain("2026-11-15");
    expect(provider.requests.filter((r) => r.idempotencyKey === rows[0]?.id)).toHaveLength(1);
    expect(rows[0]?.providerMessageId).toBe(email?.id);

    // More spend in the same month notifies no more.
    await spend(org, 10);
    await flushAll();
    await deliverAll();
    expect(await outboxOf(gw(), org.id)).toHaveLength(1);
    expect(provider.sentTo("billing@acme.test")).toHaveLength(1);

    // A new billing month notifies again, once.
    now = Date.parse("2026-12-15T00:00:01Z");
    await spend(org, 20);
    await waitUntil("the next month's email", async () => provider.sentTo("billing@acme.test").length === 2);
    await flushAll();
    await deliverAll();
    const both = await outboxOf(gw(), org.id);
    expect(both.map((r) => [r.dedupeKey, r.status])).toEqual([
      ["2026-11-15T00:00:00.000Z", "sent"],
      ["2026-12-15T00:00:00.000Z", "sent"],
    ]);
    expect(provider.sentTo("billing@acme.test")).toHaveLength(2);
  });

  it("spend below the threshold notifies nothing", async () => {
    const org = await watchedOrg(gw(), "quiet@acme.test");
    await spend(org, 4); // $0.008 of $0.01
    await flushAll();
    await deliverAll();
    expect(await outboxOf(gw(), org.id)).toEqual([]);
    expect(provider.sentTo("quiet@acme.test")).toEqual([]);
  });

  it("an org with no billing email gets no delivery: its row is kept as skipped, and the others still go out", async () => {
    const silent = await watchedOrg(gw(), null);
    const loud = await watchedOrg(gw(), "loud@acme.test");
    await Promise.all([spend(silent, 10), spend(loud, 10)]);
    await waitUntil("the other org's email", async () => provider.sentTo("loud@acme.test").length === 1);
    await waitUntil(
      "the skipped row",
      async () => (await outboxOf(gw(), silent.id))[0]?.status === "skipped",
    );
    const [row] = await outboxOf(gw(), silent.id);
    expect(row).toMatchObject({ status: "skipped", lastError: "no billing email", recipient: null });
    expect(provider.requests.filter((r) => r.idempotencyKey === row?.id)).toEqual([]);
  });
});

describe("the notification dispatcher", () => {
  let now = Date.parse("2026-11-20T12:00:00Z");
  const clock = { now: () => now };
  let gw: TestGateway;
  let provider: MockEmailProvider;
  beforeAll(async () => {
    provider = await startMockEmailProvider();
    // The gateway's own loop is off (an hour apart): these tests drive dispatchers themselves.
    gw = await startGateway({ backend: "postgres+redis", clock, env: emailEnv(provider, 3_600_000) });
  });
  afterAll(async () => {
    await gw?.close();
    await provider?.close();
  });

  const dispatcher = (outbox: Outbox) =>
    new NotificationDispatcher({
      outbox,
      notifier: resendNotifier({ apiKey: provider.apiKey, from: FROM, url: provider.url }),
      clock,
      log: gw.services.log,
      intervalMs: 3_600_000,
      maxAttempts: 3,
      leaseMs: 60_000,
    });
  /** An org whose spend crossed its threshold, with its notification pending in the outbox. */
  const pending = async (email: string) => {
    const org = await watchedOrg(gw, email);
    for (let i = 0; i < 6; i++) expect(await call(gw, org)).toBe(200);
    await gw.services.flusher.drain();
    const [row] = await outboxOf(gw, org.id);
    expect(row).toMatchObject({ status: "pending", attempts: 0 });
    return row as typeof notifications.$inferSelect;
  };

  it("crashing after the delivery, before marking it sent: the next delivery has the same idempotency key and the provider sends once", async () => {
    const row = await pending("crash@acme.test");
    const outbox = postgresOutbox(gw.services.database.db);
    const dying = dispatcher({
      ...outbox,
      markSent: async () => {
        throw new Error("killed after delivery");
      },
    });
    expect(await dying.runOnce()).toEqual({ sent: 0, skipped: 0, failed: 0, retry: 0 });
    expect(provider.sentTo("crash@acme.test")).toHaveLength(1);
    expect((await outboxOf(gw, row.orgId))[0]).toMatchObject({ status: "pending", attempts: 1 });

    // While the dead dispatcher's lease runs, nobody takes the row; after it, another does.
    const next = dispatcher(outbox);
    expect((await next.runOnce()).sent).toBe(0);
    now += 60_001;
    expect((await next.runOnce()).sent).toBe(1);
    const deliveries = provider.requests.filter((r) => r.idempotencyKey === row.id);
    expect(deliveries.map((d) => d.status)).toEqual([200, 200]);
    expect(deliveries[0]?.body).toEqual(deliveries[1]?.body);
    expect(provider.sentTo("crash@acme.test")).toHaveLength(1);
    const [after] = await outboxOf(gw, row.orgId);
    expect(after).toMatchObject({ status: "sent", attempts: 2 });
    expect(after?.providerMessageId).toBe(provider.sentTo("crash@acme.test")[0]?.id);
  });

  it("a failed delivery is retried with backoff and the same idempotency key; a refused one is given up", async () => {
    const row = await pending("flaky@acme.test");
    const d = dispatcher(postgresOutbox(gw.services.database.db));
    provider.failNext(1, 503);
    expect(await d.runOnce()).toMatchObject({ retry: 1 });
    const [waiting] = await outboxOf(gw, row.orgId);
    expect(waiting).toMatchObject({ status: "pending", attempts: 1 });
    expect(waiting?.lastError).toContain("503");
    expect(waiting?.nextAttemptAt.getTime()).toBe(now + 30_000);
    expect(await d.runOnce()).toMatchObject({ sent: 0, retry: 0 }); // not due yet
    now += 30_000;
    expect(await d.runOnce()).toMatchObject({ sent: 1 });
    expect(provider.requests.filter((r) => r.idempotencyKey === row.id).map((r) => r.status)).toEqual([
      503, 200,
    ]);
    expect(provider.sentTo("flaky@acme.test")).toHaveLength(1);

    const refused = await pending("refused@acme.test");
    provider.failNext(1, 422);
    expect(await d.runOnce()).toMatchObject({ failed: 1 });
    now += 3_600_000;
    expect(await d.runOnce()).toMatchObject({ sent: 0 });
    expect((await outboxOf(gw, refused.orgId))[0]).toMatchObject({ status: "failed", attempts: 1 });
    expect(provider.sentTo("refused@acme.test")).toEqual([]);
  });

  it("gives up after NOTIFY_MAX_ATTEMPTS failed attempts", async () => {
    const row = await pending("down@acme.test");
    const d = dispatcher(postgresOutbox(gw.services.database.db));
    provider.failNext(3, 500);
    for (const outcome of ["retry", "retry", "failed"]) {
      expect(await d.runOnce()).toMatchObject({ [outcome]: 1 });
      now += 3_600_000;
    }
    expect((await outboxOf(gw, row.orgId))[0]).toMatchObject({ status: "failed", attempts: 3 });
    expect(provider.sentTo("down@acme.test")).toEqual([]);
  });
});

describe("embedded defaults (PGlite, no EMAIL_API_KEY)", () => {
  let gw: TestGateway;
  beforeAll(async () => {
    gw = await startGateway({ backend: "embedded", env: { NOTIFY_INTERVAL_MS: "50" } });
  });
  afterAll(() => gw?.close());

  it("records the notification and delivers it to the log", async () => {
    const org = await gw.org({ credits: "1" });
    await gw.admin("PATCH", `/admin/orgs/${org.id}/billing`, {
      notifyThreshold: "0.004",
      billingEmail: "solo@acme.test",
    });
    for (let i = 0; i < 3; i++) expect(await call(gw, org)).toBe(200);
    await waitUntil(
      "the logged notification",
      async () => (await outboxOf(gw, org.id))[0]?.status === "sent",
    );
    const [row] = await outboxOf(gw, org.id);
    expect(row).toMatchObject({ kind: "spend_threshold", recipient: "solo@acme.test" });
    expect(row?.providerMessageId).toBe(`logged:${row?.id}`);
  });
});
