import type { CallTags } from "./meter.ts";

/**
 * What the metering store's ledger stream carries, one JSON object per entry, for the flusher to
 * write to Postgres. The ids are the idempotency keys there: a debit's id is its request id.
 */
export type LedgerEvent = CallEvent | CreditEvent;

/** A metered call: `debit` when money moved, `usage` when it did not (BYO, or nothing to charge). */
export interface CallEvent {
  kind: "debit" | "usage";
  id: string;
  orgId: string;
  keyId: string;
  /** Nanodollars taken from the balance (0 for usage events). */
  amount: number;
  base: number;
  surcharge: number;
  cacheDiscount: number;
  /** What the call costs at list price plus markup, also for BYO calls where nothing is taken. */
  listPrice: number;
  inputTokens: number;
  cachedTokens: number;
  cacheWriteTokens: number;
  outputTokens: number;
  reasoningTokens: number;
  inputPricePerToken: string;
  outputPricePerToken: string;
  provider: string;
  model: string;
  route: "chat" | "apply";
  byo: boolean;
  tags: CallTags;
  startedAt: number;
  firstTokenAt: number | null;
  endedAt: number;
  stoppedEarly: boolean;
  clientCancelled: boolean;
  upstreamError: boolean;
  noReportedUsage: boolean;
}

export type CreditType = "trial" | "grant" | "admin_grant" | "purchase" | "switch";

export interface CreditEvent {
  kind: "credit";
  id: string;
  orgId: string;
  amount: number;
  creditType: CreditType;
  isAutoRebuy: boolean;
  autoRebuyMinThreshold: number | null;
  autoRebuyToBalance: number | null;
  createdAt: number;
}
