import { describe, expect, it } from "vitest";
import { newRequestId } from "../../src/gateway/request-id.ts";

describe("request ids", () => {
  it("are req_ and 32 hex digits, and two made in the same millisecond differ", () => {
    const at = Date.parse("2026-12-02T16:00:00Z");
    const ids = new Set(Array.from({ length: 1000 }, () => newRequestId(at)));
    expect(ids.size).toBe(1000);
    for (const id of ids) expect(id).toMatch(/^req_[0-9a-f]{32}$/);
  });

  it("sort in the order they were made, so the ledger's keys grow at their right edge", () => {
    const at = Date.parse("2026-12-02T16:00:00Z");
    const made = [at - 86_400_000, at - 1, at, at + 1, at + 3_600_000].map((t) => newRequestId(t));
    expect([...made].sort()).toEqual(made);
  });
});
