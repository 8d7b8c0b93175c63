import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { MeteringStore } from "../../src/metering/store.ts";
import { startStore } from "../harness/stores.ts";

/**
 * The scripts read balances, holds and the month's spend into Lua numbers (doubles) and compare
 * them there: amounts up to 2^53 must stay exact to the nanodollar, as in the memory store.
 */
describe.each(["memory", "redis"] as const)("settle arithmetic on large amounts (%s)", (kind) => {
  let store: MeteringStore;
  let stop: (() => Promise<void>) | undefined;
  beforeAll(async () => {
    ({ store, stop } = await startStore(kind));
  });
  afterAll(() => stop?.());

  it("keeps balances, holds and the month's spend exact to the nanodollar near 2^53", async () => {
    const orgId = `org_${randomUUID()}`;
    const start = 2 ** 53 - 12_345; // ~$9M in nanodollars: a Lua number printed plainly would be 9.007e+15
    await store.loadBalance({ orgId, balance: start, month: { start: 0, spend: 4_000_000_000_000_001 } });
    const ids = [`req_${randomUUID()}`, `req_${randomUUID()}`];
    for (const id of ids) {
      const r = await store.reserve({
        orgId,
        requestId: id,
        amount: 1_000_000_000_007,
        ttlMs: 60_000,
        nowMs: 1,
      });
      expect(r.ok).toBe(true);
    }
    expect(await store.getBalance(orgId)).toEqual({ balance: start, held: 2_000_000_000_014 });
    const s = await store.settle({
      orgId,
      requestId: ids[0] as string,
      cost: 999_999_999_999,
      event: "{}",
      monthStart: 0,
    });
    expect(s).toMatchObject({ ok: true, balance: start - 999_999_999_999, duplicate: false });
    expect(await store.getBalance(orgId)).toEqual({
      balance: start - 999_999_999_999,
      held: 1_000_000_000_007,
    });
    // The month's spend counts the debit exactly: a budget of spend + held + 1 more admits nothing more.
    const spend = 4_000_000_000_000_001 + 999_999_999_999;
    const budget = { monthStart: 0, max: spend + 1_000_000_000_007 + 1 };
    const withBudget = (amount: number) =>
      store.reserve({ orgId, requestId: `req_${randomUUID()}`, amount, ttlMs: 60_000, nowMs: 1, budget });
    expect(await withBudget(2)).toMatchObject({ ok: false, reason: "monthly_max_reached" });
    const fits = await withBudget(1);
    expect(fits.ok).toBe(true);
  });
});
