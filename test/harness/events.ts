import { randomUUID } from "node:crypto";
import type { CallEvent } from "../../src/metering/events.ts";

/** A debit of `amount` nanodollars as the meter would record it, for tests that write ledger events. */
export function debitEvent(orgId: string, amount: number, over: Partial<CallEvent> = {}): CallEvent {
  const at = Date.now();
  return {
    id: `req_${randomUUID()}`,
    orgId,
    keyId: "k",
    amount,
    base: amount,
    surcharge: 0,
    cacheDiscount: 0,
    listPrice: amount,
    inputTokens: 1,
    cachedTokens: 0,
    cacheWriteTokens: 0,
    outputTokens: 1,
    reasoningTokens: 0,
    inputPricePerToken: "0.000001",
    outputPricePerToken: "0.000001",
    provider: "openai",
    model: "openai/gpt-4.1",
    route: "chat",
    byo: false,
    tags: {},
    startedAt: at,
    firstTokenAt: null,
    endedAt: at,
    stoppedEarly: false,
    clientCancelled: false,
    upstreamError: false,
    noReportedUsage: false,
    ...over,
  };
}
