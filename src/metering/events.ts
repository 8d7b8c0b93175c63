/**
 * What the metering store's ledger stream carries, one entry per event, for the flusher to write
 * to Postgres. The ids are the idempotency keys there: a debit's id is its request id.
 *
 * On the stream an event is a JSON array of its fields in a fixed order behind a one-letter tag
 * (`encodeCallEvent`, `encodeCreditEvent`), not an object: every byte of it passes through the
 * settle script, the stream, the flusher and Postgres, and an array is a third of the size. The
 * flusher does not decode it at all: Postgres builds the rows from the positions (src/db/ledger.ts).
 */
export type LedgerEvent = CallEvent | CreditEvent;

/** The optional `x-planto-*` request headers that tag a usage record. */
export interface CallTags {
  planId?: string;
  planName?: string;
  sessionId?: string;
  userId?: string;
  purpose?: string;
  modelRole?: string;
  modelPack?: string;
}

/**
 * A metered call. It is a debit when money moved (amount > 0), a usage record only when it did not
 * (BYO, or nothing to charge).
 */
export interface CallEvent {
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
  route: "chat" | "responses" | "apply";
  byo: boolean;
  tags: CallTags;
  startedAt: number;
  firstTokenAt: number | null;
  endedAt: number;
  stoppedEarly: boolean;
  clientCancelled: boolean;
  upstreamError: boolean;
  noReportedUsage: boolean;
  /** Upstream requests the call took, retries and fallbacks included (default 1). */
  attempts?: number;
}

export type CreditType = "trial" | "grant" | "admin_grant" | "purchase" | "switch";

export interface CreditEvent {
  id: string;
  orgId: string;
  amount: number;
  creditType: CreditType;
  isAutoRebuy: boolean;
  autoRebuyMinThreshold: number | null;
  autoRebuyToBalance: number | null;
  createdAt: number;
}

/** The tag (position 0) of an encoded call event. */
export const CALL_TAG = "c";
/** The tag (position 0) of an encoded credit event. */
export const CREDIT_TAG = "k";

/** A call event with its tags as fields of their own, as CALL_FIELDS names them. */
export type FlatCall = Omit<CallEvent, "tags"> & { [K in keyof Required<CallTags>]: string | null };

/** The fields of an encoded call event, from position 1 on. Append only: entries may be in flight. */
export const CALL_FIELDS = [
  "id",
  "orgId",
  "keyId",
  "amount",
  "base",
  "surcharge",
  "cacheDiscount",
  "listPrice",
  "inputTokens",
  "cachedTokens",
  "cacheWriteTokens",
  "outputTokens",
  "reasoningTokens",
  "inputPricePerToken",
  "outputPricePerToken",
  "provider",
  "model",
  "route",
  "byo",
  "planId",
  "planName",
  "sessionId",
  "userId",
  "purpose",
  "modelRole",
  "modelPack",
  "startedAt",
  "firstTokenAt",
  "endedAt",
  "stoppedEarly",
  "clientCancelled",
  "upstreamError",
  "noReportedUsage",
  "attempts",
] as const satisfies readonly (keyof FlatCall)[];

/**
 * Fields appended after the first release: entries encoded before them are still on the stream
 * after an upgrade, shorter by these, and are read with their defaults.
 */
const APPENDED_CALL_FIELDS = 1;

/** The fields of an encoded credit event, from position 1 on. Append only. */
export const CREDIT_FIELDS = [
  "id",
  "orgId",
  "amount",
  "creditType",
  "isAutoRebuy",
  "autoRebuyMinThreshold",
  "autoRebuyToBalance",
  "createdAt",
] as const satisfies readonly (keyof CreditEvent)[];

/** The position of a field in an encoded event (the tag is position 0). */
export function callPosition(field: (typeof CALL_FIELDS)[number]): number {
  return CALL_FIELDS.indexOf(field) + 1;
}
export function creditPosition(field: (typeof CREDIT_FIELDS)[number]): number {
  return CREDIT_FIELDS.indexOf(field) + 1;
}

/**
 * The call's fields in CALL_FIELDS order, written out rather than looked up by name: this runs once
 * per call on the hot path (a test holds the two orders together).
 */
export function encodeCallEvent(e: CallEvent): string {
  const t = e.tags;
  return JSON.stringify([
    CALL_TAG,
    e.id,
    e.orgId,
    e.keyId,
    e.amount,
    e.base,
    e.surcharge,
    e.cacheDiscount,
    e.listPrice,
    e.inputTokens,
    e.cachedTokens,
    e.cacheWriteTokens,
    e.outputTokens,
    e.reasoningTokens,
    e.inputPricePerToken,
    e.outputPricePerToken,
    e.provider,
    e.model,
    e.route,
    e.byo,
    t.planId ?? null,
    t.planName ?? null,
    t.sessionId ?? null,
    t.userId ?? null,
    t.purpose ?? null,
    t.modelRole ?? null,
    t.modelPack ?? null,
    e.startedAt,
    e.firstTokenAt,
    e.endedAt,
    e.stoppedEarly,
    e.clientCancelled,
    e.upstreamError,
    e.noReportedUsage,
    e.attempts ?? 1,
  ]);
}

export function encodeCreditEvent(e: CreditEvent): string {
  const out: unknown[] = [CREDIT_TAG];
  for (const field of CREDIT_FIELDS) out.push(e[field]);
  return JSON.stringify(out);
}

const TAG_PREFIXES = [`["${CALL_TAG}",`, `["${CREDIT_TAG}",`];

/** A cheap look at the first bytes: the entry is an encoded event (or claims to be one). */
export function hasEventTag(text: string): boolean {
  return text.startsWith(TAG_PREFIXES[0] as string) || text.startsWith(TAG_PREFIXES[1] as string);
}

/** True when `text` is an event the flusher can hand to Postgres: an array behind a known tag. */
export function isEncodedEvent(text: string): boolean {
  try {
    const value: unknown = JSON.parse(text);
    if (!Array.isArray(value)) return false;
    if (value[0] === CALL_TAG) return value.length >= CALL_FIELDS.length + 1 - APPENDED_CALL_FIELDS;
    if (value[0] === CREDIT_TAG) return value.length >= CREDIT_FIELDS.length + 1;
    return false;
  } catch {
    return false;
  }
}
