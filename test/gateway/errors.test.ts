import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startMockUpstream } from "../../tools/mock-upstream/mock-upstream.ts";
import { freePort } from "../../tools/servers/ports.ts";
import { steppingClock } from "../harness/clock.ts";
import type { ErrorBody } from "../harness/errors.ts";
import { startGateway, type TestGateway, type TestOrg } from "../harness/gateway.ts";

const messages = [{ role: "user", content: "hi" }];

/** Every error has Content-Type application/json exactly, and both envelopes. */
async function expectError(res: Response, status: number, code: string): Promise<ErrorBody> {
  expect(res.headers.get("content-type")).toBe("application/json");
  const body = (await res.json()) as ErrorBody;
  expect(res.status).toBe(status);
  expect(body.error.code).toBe(code);
  expect(body.type).toBe(code);
  expect(body.status).toBe(status);
  expect(body.msg).toBe(body.error.message);
  expect(typeof body.error.message).toBe("string");
  expect("param" in body.error).toBe(true);
  return body;
}

describe("errors in the contract's shape", () => {
  let gw: TestGateway;
  let org: TestOrg;
  const clock = steppingClock();
  const call = (body: unknown, key: string | null = org.key, headers: Record<string, string> = {}) =>
    gw.post("/v1/chat/completions", key, body, headers);

  beforeAll(async () => {
    gw = await startGateway({
      clock,
      env: { MAX_BODY_BYTES: "20000", KEY_CACHE_TTL_MS: "300", UPSTREAM_HEADERS_TIMEOUT_MS: "500" },
    });
    org = await gw.org({ credits: "1" });
  });
  afterAll(() => gw?.close());

  it("invalid_api_key: missing, unknown and revoked keys", async () => {
    await expectError(await call({ model: "gpt-4.1", messages }, null), 401, "invalid_api_key");
    await expectError(await call({ model: "gpt-4.1", messages }, "pk_nope"), 401, "invalid_api_key");
    const other = await gw.org({ credits: "1" });
    expect((await call({ model: "gpt-4.1", messages }, other.key)).status).toBe(200);
    expect((await gw.admin("DELETE", `/admin/api-keys/${other.keyId}`)).status).toBe(200);
    await expectError(await call({ model: "gpt-4.1", messages }, other.key), 401, "invalid_api_key");
  });

  it("invalid_request_error: malformed JSON, missing or mistyped fields, oversized bodies — before any upstream call", async () => {
    const before = gw.mock.requests.length;
    await expectError(await call("{not json"), 400, "invalid_request_error");
    await expectError(await call("[1,2]"), 400, "invalid_request_error");
    expect((await expectError(await call({ messages }), 400, "invalid_request_error")).error.param).toBe(
      "model",
    );
    expect(
      (await expectError(await call({ model: "gpt-4.1" }), 400, "invalid_request_error")).error.param,
    ).toBe("messages");
    await expectError(await call({ model: 42, messages }), 400, "invalid_request_error");
    await expectError(await call({ model: "gpt-4.1", messages: "hi" }), 400, "invalid_request_error");
    await expectError(
      await call({ model: "gpt-4.1", messages: [{ content: "x" }] }),
      400,
      "invalid_request_error",
    );
    await expectError(
      await call({ model: "gpt-4.1", messages, stream: "yes" }),
      400,
      "invalid_request_error",
    );
    await expectError(
      await call({ model: "gpt-4.1", messages, max_tokens: -1 }),
      400,
      "invalid_request_error",
    );
    const huge = { model: "gpt-4.1", messages: [{ role: "user", content: "x".repeat(30_000) }] };
    await expectError(await call(huge), 400, "invalid_request_error");
    expect(gw.mock.requests.length).toBe(before);
  });

  it("model_not_found", async () => {
    const body = await expectError(
      await call({ model: "acme/nonexistent", messages }),
      404,
      "model_not_found",
    );
    expect(body.error.param).toBe("model");
  });

  it("cloud_insufficient_credits, with billingError, before any upstream call", async () => {
    const poor = await gw.org({ credits: "0.000001" });
    const before = gw.mock.requests.length;
    const body = await expectError(
      await call({ model: "gpt-4.1", messages }, poor.key),
      402,
      "cloud_insufficient_credits",
    );
    expect(body.billingError).toEqual({ hasBillingPermission: true, isTrial: false });
    expect(gw.mock.requests.length).toBe(before);
  });

  it("cloud_subscription_paused and cloud_subscription_overdue", async () => {
    for (const status of ["paused", "overdue"] as const) {
      const o = await gw.org({ credits: "1" });
      expect(
        (await gw.admin("PATCH", `/admin/orgs/${o.id}/billing`, { subscriptionStatus: status })).status,
      ).toBe(200);
      // The org's billing state reaches the hot path within the key cache's TTL.
      clock.advance(301);
      await expectError(
        await call({ model: "gpt-4.1", messages }, o.key),
        402,
        `cloud_subscription_${status}`,
      );
    }
  });

  it("trial_plans_exceeded and trial_messages_exceeded for BYO trial orgs", async () => {
    const byo = await gw.org({ billingMode: "byo", isTrial: true });
    const headers = (plan: string) => ({ "x-planto-provider-key": "sk-user-own", "x-planto-plan-id": plan });
    for (let i = 0; i < gw.config.TRIAL_MAX_RESPONSES_PER_PLAN; i++) {
      expect((await call({ model: "gpt-4.1-nano", messages }, byo.key, headers("p0"))).status).toBe(200);
    }
    const messagesBody = await expectError(
      await call({ model: "gpt-4.1-nano", messages }, byo.key, headers("p0")),
      403,
      "trial_messages_exceeded",
    );
    expect(messagesBody.trialMessagesExceededError).toEqual({
      maxMessages: gw.config.TRIAL_MAX_RESPONSES_PER_PLAN,
    });
    for (let p = 1; p < gw.config.TRIAL_MAX_PLANS; p++) {
      expect((await call({ model: "gpt-4.1-nano", messages }, byo.key, headers(`p${p}`))).status).toBe(200);
    }
    const plansBody = await expectError(
      await call({ model: "gpt-4.1-nano", messages }, byo.key, headers("one-too-many")),
      403,
      "trial_plans_exceeded",
    );
    expect(plansBody.trialPlansExceededError).toEqual({ maxPlans: gw.config.TRIAL_MAX_PLANS });
  });

  it("upstream_error: the upstream's 4xx and 429 pass through, 5xx become 502", async () => {
    await expectError(
      await call({ model: "gpt-4.1", messages, mock: { status: 500 } }),
      502,
      "upstream_error",
    );
    await expectError(
      await call({ model: "gpt-4.1", messages, mock: { status: 503 } }),
      502,
      "upstream_error",
    );
    await expectError(
      await call({ model: "gpt-4.1", messages, mock: { status: 429 } }),
      429,
      "upstream_error",
    );
    await expectError(
      await call({ model: "gpt-4.1", messages, mock: { status: 400 } }),
      400,
      "upstream_error",
    );
    const streamed = await call({ model: "gpt-4.1", messages, stream: true, mock: { status: 500 } });
    await expectError(streamed, 502, "upstream_error");
  });

  it("upstream_error: a timeout and a refused connection", async () => {
    await expectError(
      await call({ model: "gpt-4.1", messages, mock: { hang: true } }),
      502,
      "upstream_error",
    );
    const port = await freePort();
    const dead = await startGateway({
      backend: "postgres+redis",
      env: { OPENAI_BASE_URL: `http://127.0.0.1:${port}/v1` },
      mock: await startMockUpstream(),
    });
    try {
      const o = await dead.org({ credits: "1" });
      const res = await fetch(`${dead.url}/v1/chat/completions`, {
        method: "POST",
        headers: { "content-type": "application/json", authorization: `Bearer ${o.key}` },
        body: JSON.stringify({ model: "gpt-4.1", messages }),
      });
      const body = await expectError(res, 502, "upstream_error");
      expect(body.error.message).toMatch(/refused/);
    } finally {
      await dead.close();
      await dead.mock.close();
    }
  }, 90_000); // a second gateway starts here: slow on a busy machine, not wrong

  it("an error after the stream started is a final data: {error} frame", async () => {
    const res = await call({
      model: "gpt-4.1",
      messages,
      stream: true,
      mock: { abortAfterChunks: 3, delayMs: 20 },
    });
    expect(res.status).toBe(200);
    const text = await res.text();
    const frames = text.trim().split("\n\n");
    // OpenRouter's shape: a Go client decodes `code` as an int.
    const last = JSON.parse((frames.at(-1) as string).replace(/^data: /, "")) as {
      error: { code: number; message: string; metadata: { type: string } };
    };
    expect(last.error).toEqual({
      code: 502,
      message: expect.stringMatching(/upstream/) as string,
      metadata: { type: "upstream_error" },
    });
    expect(text).not.toContain("[DONE]");
  });

  it("unknown routes and a disabled admin API", async () => {
    await expectError(await fetch(`${gw.url}/v1/nope`), 404, "not_found");
    const res = await fetch(`${gw.url}/admin/orgs/x`, { headers: { authorization: "Bearer wrong" } });
    await expectError(res, 401, "invalid_api_key");
  });
});

describe("key revocation", () => {
  it("stops a key on every instance within the cache TTL", async () => {
    const mock = await startMockUpstream();
    const env = { KEY_CACHE_TTL_MS: "500" };
    const a = await startGateway({ backend: "postgres+redis", env, mock });
    // A second instance on the same Postgres and Redis.
    const bClock = steppingClock();
    const b = await startGateway({
      mock,
      clock: bClock,
      env: {
        ...env,
        DATABASE_URL: a.config.DATABASE_URL as string,
        REDIS_URL: a.config.REDIS_URL as string,
        REDIS_KEY_PREFIX: a.config.REDIS_KEY_PREFIX,
      },
    });
    try {
      const org = await a.org({ credits: "1" });
      const ask = (gw: TestGateway) =>
        fetch(`${gw.url}/v1/chat/completions`, {
          method: "POST",
          headers: { authorization: `Bearer ${org.key}`, "content-type": "application/json" },
          body: JSON.stringify({ model: "gpt-4.1-nano", messages, mock: { tag: randomUUID() } }),
        });
      expect((await ask(b)).status).toBe(200); // cached on b now
      expect((await a.admin("DELETE", `/admin/api-keys/${org.keyId}`)).status).toBe(200);
      expect((await ask(a)).status).toBe(401);
      bClock.advance(501); // the TTL passes on b
      expect((await ask(b)).status).toBe(401);
    } finally {
      await b.close();
      await a.close();
      await mock.close();
    }
  });
});

describe("health", () => {
  it("healthz says the process is up; readyz checks the database and the metering store", async () => {
    const gw = await startGateway({ backend: "postgres+redis" });
    try {
      expect(await (await fetch(`${gw.url}/healthz`)).json()).toEqual({ ok: true });
      expect(await (await fetch(`${gw.url}/readyz`)).json()).toEqual({
        ok: true,
        checks: { postgres: true, redis: true },
      });
      await gw.services.database.close();
      const down = await fetch(`${gw.url}/readyz`);
      expect(down.status).toBe(503);
      expect(((await down.json()) as { checks: Record<string, boolean> }).checks.postgres).toBe(false);
    } finally {
      await gw.close().catch(() => undefined);
    }
  });
});
