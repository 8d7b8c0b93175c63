import { describe, expect, it } from "vitest";
import {
  CALL_FIELDS,
  CALL_TAG,
  type CallEvent,
  callPosition,
  encodeCallEvent,
  type FlatCall,
} from "../../src/metering/events.ts";
import type { CallTags } from "../../src/metering/meter.ts";
import { debitEvent } from "../harness/events.ts";

describe("ledger events on the stream", () => {
  it("puts every call field at the position CALL_FIELDS gives it, which Postgres reads", () => {
    // Distinct values everywhere, so a swapped pair of fields cannot pass.
    const tags: Required<CallTags> = {
      planId: "plan",
      planName: "Plan",
      sessionId: "session",
      userId: "user",
      purpose: "purpose",
      modelRole: "role",
      modelPack: "pack",
    };
    const event: CallEvent = {
      id: "req_1",
      orgId: "org_2",
      keyId: "key_3",
      amount: 4,
      base: 5,
      surcharge: 6,
      cacheDiscount: 7,
      listPrice: 8,
      inputTokens: 9,
      cachedTokens: 10,
      cacheWriteTokens: 11,
      outputTokens: 12,
      reasoningTokens: 13,
      inputPricePerToken: "0.14",
      outputPricePerToken: "0.15",
      provider: "openrouter",
      model: "anthropic/claude-sonnet-4",
      route: "apply",
      byo: true,
      tags,
      startedAt: 16,
      firstTokenAt: 17,
      endedAt: 18,
      stoppedEarly: true,
      clientCancelled: false,
      upstreamError: true,
      noReportedUsage: false,
      attempts: 19,
    };
    const { tags: _nested, ...rest } = event;
    const flat: FlatCall = { ...rest, ...tags };
    const encoded = JSON.parse(encodeCallEvent(event)) as unknown[];
    expect(encoded[0]).toBe(CALL_TAG);
    expect(encoded).toHaveLength(CALL_FIELDS.length + 1);
    for (const field of CALL_FIELDS)
      expect([field, encoded[callPosition(field)]]).toEqual([field, flat[field]]);
    expect(Object.keys(flat).sort()).toEqual([...CALL_FIELDS].sort());
  });

  it("writes absent tags as null", () => {
    const encoded = JSON.parse(encodeCallEvent(debitEvent("org", 0))) as unknown[];
    expect(encoded[callPosition("planId")]).toBeNull();
    expect(encoded[callPosition("modelPack")]).toBeNull();
    expect(encoded[callPosition("firstTokenAt")]).toBeNull();
  });
});
