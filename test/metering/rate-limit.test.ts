import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  formatReset,
  NO_LIMITS,
  RATE_WINDOW_MS,
  type RateCheck,
  rateHeaders,
  rateLimitedError,
} from "../../src/metering/rate-limit.ts";
import type { MeteringStore } from "../../src/metering/store.ts";
import { startStore } from "../harness/stores.ts";

const kinds = ["memory", "redis", "cluster"] as const;
const org = () => `org_${randomUUID()}`;
const rid = () => `req_${randomUUID()}`;
/** 10 s into a window, so a test's calls stay in one window unless it moves the clock on. */
const NOW = 1_800_000_000_000 - (1_800_000_000_000 % RATE_WINDOW_MS) + 10_000;
const TTL = 60_000;
const BIG = 1_000_000_000_000;

const check = (
  keyId: string,
  limits: { org?: Partial<RateCheck["org"]>; key?: Partial<RateCheck["key"]>; tokens?: number },
): RateCheck => ({
  keyId,
  org: { ...NO_LIMITS, ...limits.org },
  key: { ...NO_LIMITS, ...limits.key },
  tokens: limits.tokens ?? 100,
});

describe.each(kinds)("rate limits in the metering store (%s)", (kind) => {
  let store: MeteringStore;
  let stop: (() => Promise<void>) | undefined;

  beforeAll(async () => {
    ({ store, stop } = await startStore(kind));
  }, 60_000);
  afterAll(() => stop?.());

  const loaded = async (balance = BIG) => {
    const id = org();
    await store.loadBalance({ orgId: id, balance });
    return id;
  };
  const reserve = (
    orgId: string,
    rate: RateCheck | undefined,
    amount = 1000,
    nowMs = NOW,
    requestId = rid(),
  ) => store.reserve({ orgId, requestId, amount, ttlMs: TTL, nowMs, rate });

  it("admits requests up to the org's limit per window, refuses the next with the state, and admits again in the next window", async () => {
    const id = await loaded();
    const rate = check("key_a", { org: { requestsPerMinute: 3 } });
    const outcomes = [];
    for (let i = 0; i < 4; i++) outcomes.push(await reserve(id, rate, 1000, NOW + i));
    expect(outcomes.map((o) => o.ok)).toEqual([true, true, true, false]);
    expect(outcomes[0]).toMatchObject({ ok: true, rate: { requests: { limit: 3, remaining: 2 } } });
    expect(outcomes[3]).toMatchObject({
      ok: false,
      reason: "rate_limited",
      rate: { requests: { limit: 3, remaining: 0, resetMs: RATE_WINDOW_MS - 10_003 } },
    });
    // The refused call held nothing.
    expect(await store.getBalance(id)).toEqual({ balance: BIG, held: 3000 });
    const next = await reserve(id, rate, 1000, NOW + RATE_WINDOW_MS);
    expect(next).toMatchObject({ ok: true, rate: { requests: { limit: 3, remaining: 2 } } });
  });

  it("applies the key's and the org's limits together: a key at its limit is refused, another key of the org is not until the org's", async () => {
    const id = await loaded();
    const a = check("key_a1", { org: { requestsPerMinute: 3 }, key: { requestsPerMinute: 1 } });
    const b = check("key_b1", { org: { requestsPerMinute: 3 } });
    expect((await reserve(id, a)).ok).toBe(true);
    expect(await reserve(id, a)).toMatchObject({
      ok: false,
      reason: "rate_limited",
      rate: { requests: { limit: 1, remaining: 0 } },
    });
    // The refusal of key a counted nothing for the org: b has the org's other two.
    expect(await reserve(id, b)).toMatchObject({ ok: true, rate: { requests: { limit: 3, remaining: 1 } } });
    expect((await reserve(id, b)).ok).toBe(true);
    expect((await reserve(id, b)).ok).toBe(false);
  });

  it("counts each call's token estimate against tokens per minute, and settleRate corrects the window to what was used", async () => {
    const id = await loaded();
    const rate = check("key_t", { key: { tokensPerMinute: 1000 }, tokens: 400 });
    expect(await reserve(id, rate)).toMatchObject({
      ok: true,
      rate: { tokens: { limit: 1000, remaining: 600 } },
    });
    expect(await reserve(id, rate)).toMatchObject({ ok: true, rate: { tokens: { remaining: 200 } } });
    expect(await reserve(id, rate)).toMatchObject({ ok: false, rate: { tokens: { remaining: 200 } } });
    // Both calls used 150 tokens, not 400: the window gets 2 × 250 back.
    for (let i = 0; i < 2; i++)
      await store.settleRate({ orgId: id, keyId: "key_t", windowStart: NOW - 10_000, tokens: -250 });
    expect(await reserve(id, rate)).toMatchObject({ ok: true, rate: { tokens: { remaining: 300 } } });
    // A correction for a window that has ended changes nothing.
    await store.settleRate({
      orgId: id,
      keyId: "key_t",
      windowStart: NOW - 10_000 - RATE_WINDOW_MS,
      tokens: -5000,
    });
    expect(await reserve(id, rate)).toMatchObject({ ok: false, rate: { tokens: { remaining: 300 } } });
  });

  it("checks credits first: a call refused for credits or budget counts nothing against the rate", async () => {
    const id = await loaded(5000);
    const rate = check("key_c", { org: { requestsPerMinute: 2 } });
    expect(await reserve(id, rate, 10_000)).toMatchObject({ ok: false, reason: "insufficient_credits" });
    expect(await reserve(id, rate, 1000)).toMatchObject({ ok: true, rate: { requests: { remaining: 1 } } });
  });

  it("counts an idempotent repeat of a reserve once", async () => {
    const id = await loaded();
    const rate = check("key_i", { org: { requestsPerMinute: 2 } });
    const requestId = rid();
    expect((await reserve(id, rate, 1000, NOW, requestId)).ok).toBe(true);
    expect((await reserve(id, rate, 1000, NOW, requestId)).ok).toBe(true);
    expect(await reserve(id, rate)).toMatchObject({ ok: true, rate: { requests: { remaining: 0 } } });
  });

  it("runs no rate step without limits: nothing is counted and no state comes back", async () => {
    const id = await loaded();
    const outcome = await reserve(id, check("key_n", {}));
    expect(outcome).toEqual({ ok: true, balance: BIG, held: 1000 });
  });

  it("never admits more than the limit among concurrent reserves", async () => {
    const id = await loaded();
    const rate = check("key_x", {
      org: { requestsPerMinute: 25 },
      key: { tokensPerMinute: 100_000 },
      tokens: 10,
    });
    const outcomes = await Promise.all(Array.from({ length: 120 }, () => reserve(id, rate)));
    expect(outcomes.filter((o) => o.ok)).toHaveLength(25);
    expect(outcomes.filter((o) => !o.ok && o.reason === "rate_limited")).toHaveLength(95);
  });

  it("admitRate (BYO calls) has the same semantics without a balance", async () => {
    const id = org(); // a BYO org has no balance in the store at all
    const rate = check("key_byo", { key: { requestsPerMinute: 2, tokensPerMinute: 500 }, tokens: 200 });
    const verdicts = [];
    for (let i = 0; i < 3; i++) verdicts.push(await store.admitRate({ orgId: id, rate, nowMs: NOW }));
    expect(verdicts.map((v) => v.ok)).toEqual([true, true, false]);
    expect(verdicts[1]?.rate).toEqual({
      requests: { limit: 2, remaining: 0, resetMs: RATE_WINDOW_MS - 10_000 },
      tokens: { limit: 500, remaining: 100, resetMs: RATE_WINDOW_MS - 10_000 },
    });
    expect((await store.admitRate({ orgId: id, rate, nowMs: NOW + RATE_WINDOW_MS })).ok).toBe(true);
  });

  it("joins a later window another instance already started instead of resetting it (clock skew)", async () => {
    const id = await loaded();
    const rate = check("key_s", { org: { requestsPerMinute: 2 } });
    // An instance whose clock is ahead opened the next window and used it up...
    const ahead = NOW + RATE_WINDOW_MS;
    expect((await reserve(id, rate, 1000, ahead)).ok).toBe(true);
    expect((await reserve(id, rate, 1000, ahead)).ok).toBe(true);
    // ...one a little behind must not start that window over.
    expect((await reserve(id, rate, 1000, ahead - 20_000)).ok).toBe(false);
  });
});

describe("rate limit headers", () => {
  it("renders OpenAI's header names and reset durations", () => {
    expect(formatReset(850.2)).toBe("851ms");
    expect(formatReset(12_000)).toBe("12s");
    expect(formatReset(60_000)).toBe("1m0s");
    expect(
      rateHeaders({
        requests: { limit: 60, remaining: 59, resetMs: 1500 },
        tokens: { limit: 1000, remaining: 10, resetMs: 1500 },
      }),
    ).toEqual({
      "x-ratelimit-limit-requests": "60",
      "x-ratelimit-remaining-requests": "59",
      "x-ratelimit-reset-requests": "2s",
      "x-ratelimit-limit-tokens": "1000",
      "x-ratelimit-remaining-tokens": "10",
      "x-ratelimit-reset-tokens": "2s",
    });
    expect(rateHeaders(undefined)).toEqual({});
  });

  it("refuses with 429 rate_limit_exceeded and retry-after until the exhausted window resets", () => {
    const err = rateLimitedError({ requests: { limit: 5, remaining: 0, resetMs: 2_500 } }, 10);
    expect(err.status).toBe(429);
    expect(err.code).toBe("rate_limit_exceeded");
    expect(err.headers["retry-after"]).toBe("3");
    const tooBig = rateLimitedError({ tokens: { limit: 100, remaining: 100, resetMs: 30_000 } }, 4096);
    expect(tooBig.message).toMatch(/more than the limit of 100 tokens per minute/);
  });
});
