import { describe, expect, it } from "vitest";
import type { CreditTransactionRow } from "../../src/db/ledger.ts";
import { renderTransaction } from "../../src/gateway/routes/billing.ts";

/** A debit row as the ledger holds it (amounts in nanodollars). */
function debit(fields: Partial<CreditTransactionRow>): CreditTransactionRow {
  return {
    id: "req_1",
    orgId: "org_1",
    transactionType: "debit",
    amount: 1150,
    startBalance: 10_000,
    endBalance: 8_850,
    createdAt: new Date("2026-12-01T10:00:00Z"),
    userId: null,
    creditType: null,
    creditIsAutoRebuy: null,
    creditAutoRebuyMinThreshold: null,
    creditAutoRebuyToBalance: null,
    debitInputTokens: 800,
    debitCachedTokens: 200,
    debitOutputTokens: 30,
    debitModelInputPricePerToken: "0.000002",
    debitModelOutputPricePerToken: "0.000008",
    debitBaseAmount: 1000,
    debitSurcharge: 150,
    debitCacheDiscount: 300,
    debitModelProvider: "openai",
    debitModelName: "openai/gpt-4.1",
    debitModelPackName: null,
    debitModelRole: null,
    debitPurpose: "chat",
    debitPlanId: null,
    debitPlanName: null,
    debitSessionId: null,
    ...fields,
  };
}

/** The row as it goes on the wire (JSON leaves out what is undefined). */
const wire = (row: CreditTransactionRow) =>
  JSON.parse(JSON.stringify(renderTransaction(row, "acme"))) as unknown;

describe("a debit row in the CLI's terms", () => {
  it("names the model as the provider does, counts the whole prompt, and shows a discount only when there was one", () => {
    const row = wire(debit({}));
    expect(row).toMatchObject({
      debitModelProvider: "openai",
      debitModelName: "gpt-4.1",
      debitInputTokens: 1000,
      debitBaseAmount: "0.000001",
      debitSurcharge: "0.00000015",
      debitCacheDiscount: "0.0000003",
    });
    expect(wire(debit({ debitCacheDiscount: 0 }))).not.toHaveProperty("debitCacheDiscount");
    expect(
      renderTransaction(
        debit({ debitModelProvider: "openrouter", debitModelName: "openai/gpt-4.1" }),
        "acme",
      ),
    ).toMatchObject({ debitModelProvider: "openrouter", debitModelName: "openai/gpt-4.1" });
  });

  it("never sends a zero base, which the CLI divides the surcharge by", () => {
    // A row written before the base was recorded, or with none: its whole amount is the base.
    for (const debitBaseAmount of [null, 0]) {
      expect(renderTransaction(debit({ debitBaseAmount, debitSurcharge: null }), "acme")).toMatchObject({
        debitBaseAmount: "0.00000115",
        debitSurcharge: "0",
      });
    }
  });

  it("shows an operator's grant as the CLI's `grant`", () => {
    const credit = debit({ transactionType: "credit", creditType: "admin_grant", creditIsAutoRebuy: false });
    expect(renderTransaction(credit, "acme")).toMatchObject({
      creditType: "grant",
      creditIsAutoRebuy: false,
    });
  });
});
