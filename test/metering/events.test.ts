import { describe, expect, it } from "vitest";
import {
  CALL_FIELDS,
  CALL_TAG,
  type CallEvent,
  callPosition,
  encodeCallEvent,
  type FlatCall,
} from "../../src/metering/events.ts";

describe("ledger events on the stream", () => {
  it("puts every call field at the position CALL_FIELDS gives it, which Postgres reads", () => {
    // Distinct values everywhere, so a swapped pair of fields cannot pass.
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
      tags: {
        planId: "plan",
        planName: "Plan",
        sessionId: "session",
        userId: "user",
        purpose: "purpose",
        modelRole: "role",
        modelPack: "pack",
      },
      startedAt: 16,
      firstTokenAt: 17,
      endedAt: 18,
      stoppedEarly: true,
      clientCancelled: false,
      upstreamError: true,
      noReportedUsage: false,
    };
    const { tags, ...rest } = event;
    const flat: FlatCall = {
      ...rest,
      planId: "plan",
      planName: "Plan",
      sessionId: "session",
      userId: "user",
      purpose: "purpose",
      modelRole: "role",
      modelPack: "pack",
    };
    const encoded = JSON.parse(encodeCallEvent(event)) as unknown[];
    expect(encoded[0]).toBe(CALL_TAG);
    expect(encoded).toHaveLength(CALL_FIELDS.length + 1);
    for (const field of CALL_FIELDS)
      expect([field, encoded[callPosition(field)]]).toEqual([field, flat[field]]);
    expect(Object.keys(flat).sort()).toEqual([...CALL_FIELDS].sort());
  });

  it("writes absent tags as null", () => {
    const encoded = JSON.parse(
      encodeCallEvent({
        id: "r",
        orgId: "o",
        keyId: "k",
        amount: 0,
        base: 0,
        surcharge: 0,
        cacheDiscount: 0,
        listPrice: 0,
        inputTokens: 0,
        cachedTokens: 0,
        cacheWriteTokens: 0,
        outputTokens: 0,
        reasoningTokens: 0,
        inputPricePerToken: "0",
        outputPricePerToken: "0",
        provider: "openai",
        model: "gpt-4.1",
        route: "chat",
        byo: false,
        tags: {},
        startedAt: 1,
        firstTokenAt: null,
        endedAt: 2,
        stoppedEarly: false,
        clientCancelled: false,
        upstreamError: false,
        noReportedUsage: false,
      }),
    ) as unknown[];
    expect(encoded[callPosition("planId")]).toBeNull();
    expect(encoded[callPosition("modelPack")]).toBeNull();
    expect(encoded[callPosition("firstTokenAt")]).toBeNull();
  });
});
