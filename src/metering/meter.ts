import type { Usage } from "../core/usage.ts";
import type { CreditTransactionRow } from "../db/ledger.ts";
import type { CatalogModel } from "../pricing/catalog.ts";
import type { Nanos } from "../pricing/money.ts";
import type { CallTags } from "./events.ts";
import type { RateLimits, RateState } from "./rate-limit.ts";

// The tags belong to the ledger event they end up in (events.ts), which the db layer reads too.
export type { CallTags };

/** The org behind an authenticated api key, as the hot path needs it. */
export interface CallerOrg {
  id: string;
  name: string;
  billingMode: "integrated" | "byo";
  isTrial: boolean;
  subscriptionStatus: "active" | "paused" | "overdue" | "canceled";
  /** The monthly budget in nanodollars; null for none. */
  maxThresholdPerMonth: Nanos | null;
  /** Anchors the billing month. */
  billingCycleStartedAt: Date;
  /** Auto-recharge: when a settle takes the balance below the threshold, recharge to the target. */
  autoRebuy: { threshold: Nanos; toBalance: Nanos } | null;
  /** The org's rate limits (all its keys together); absent: none. */
  rateLimits?: RateLimits;
}

/** Everything known about a call before it goes upstream. */
export interface CallStart {
  requestId: string;
  org: CallerOrg;
  keyId: string;
  /** The api key's own rate limits; absent: none (the org's still apply). */
  keyRateLimits?: RateLimits;
  model: CatalogModel;
  /** The user's own provider key (BYO): nothing is debited. */
  byoKey: string | undefined;
  route: "chat" | "responses" | "apply";
  stream: boolean;
  /**
   * The request as the client sent it, parsed anew from its bytes: only a call whose upstream did
   * not report usage needs it (to count the prompt), and a parsed 100 KB prompt kept for a whole
   * stream is a large string on the JavaScript heap, copied by every garbage collection it lives
   * through, where the bytes are one buffer outside it.
   */
  request: () => Record<string, unknown>;
  requestBytes: number;
  maxTokens: number | undefined;
  tags: CallTags;
  startedAt: number;
}

/** How a call ended, as far as the money is concerned. */
export interface CallEnd {
  /** Usage as the upstream reported it; undefined when it reported none. */
  usage: Usage | undefined;
  /** The text streamed to the client, for counting when there is no usage report. */
  streamedText?: () => string;
  /** The text of a non-streamed response, for counting when there is no usage report. */
  responseText?: string;
  upstreamStatus: number | undefined;
  firstTokenAt: number | undefined;
  endedAt: number;
  stoppedEarly: boolean;
  clientCancelled: boolean;
  upstreamError: boolean;
  /**
   * The route that served the call (or was tried last): the catalogue model or one of its
   * fallbacks, priced on its own. Undefined: the catalogue model's own route.
   */
  servedBy?: CatalogModel;
  /** Upstream requests the call took, retries and fallbacks included (undefined: one). */
  attempts?: number;
}

/** A call admitted by the meter, to be settled exactly once. */
export interface Admission {
  readonly start: CallStart;
  /** Where the call stands against its rate limits, when any is set (the `x-ratelimit-*` headers). */
  readonly rate?: RateState;
}

export interface Settlement {
  cost: Nanos;
  /** The org's balance after the debit; undefined for BYO orgs (nothing is debited). */
  balance: Nanos | undefined;
}

/**
 * Meters model calls: admits them before the upstream is called (refusals are GatewayErrors) and
 * settles each admitted call exactly once, whatever happened to it.
 */
/**
 * Why a call was not admitted. A value, not an error: metering decides, the route (src/gateway/
 * refusals.ts) says it in HTTP.
 */
export type Refusal =
  | { code: "trial_plans_exceeded"; maxPlans: number }
  | { code: "trial_messages_exceeded"; maxMessages: number }
  | {
      code:
        | "cloud_subscription_paused"
        | "cloud_subscription_overdue"
        | "cloud_monthly_max_reached"
        | "cloud_insufficient_credits";
      isTrial: boolean;
    }
  /** A rate limit of the org or the key is reached: `rate` says where the call stands, `tokens` what it asked. */
  | { code: "rate_limit_exceeded"; rate: RateState; tokens: number }
  /** The metering store cannot be reached: the call could not be paid for. */
  | { code: "unavailable" };

export type AdmitResult = { ok: true; admission: Admission } | { ok: false; refusal: Refusal };

export interface Meter {
  /** Holds what the call may cost (or a trial slot), or says why it is refused. */
  admit(call: CallStart): Promise<AdmitResult>;
  /**
   * The charge for reported usage, for the `cost` in a usage frame, at the price of the route that
   * served it (default: the catalogue model's). Pure and cheap.
   */
  price(admission: Admission, usage: Usage, servedBy?: CatalogModel): Nanos;
  settle(admission: Admission, end: CallEnd): Promise<Settlement>;
  /** The org's live balance; undefined when it has no credits ledger (BYO). */
  balance(orgId: string): Promise<Nanos | undefined>;
  /** A new org: integrated trial orgs start with their trial credit. */
  onOrgCreated(org: { id: string; billingMode: "integrated" | "byo"; isTrial: boolean }): Promise<void>;
  /** Adds credits once per id; a repeat with another amount is refused. */
  credit(input: CreditInput): Promise<CreditResult>;
  /** Retries the credits owed for payments whose credit failed, once (a background job's round). */
  payOwedCredits(): Promise<void>;
  /**
   * Resolves once the work settles started in the background (auto-recharges: payment, credit,
   * lease release) has finished: what a caller waits for before reading its outcome.
   */
  idle(): Promise<void>;
  /**
   * This instance's flusher committed these calls to Postgres, so the settles kept for them can be
   * let go without asking Postgres. Optional: a meter that keeps nothing ignores it.
   */
  committed?(ids: readonly string[]): void;
  /** Stops background work (the flusher) after a last flush. */
  close(): Promise<void>;
}

export interface CreditInput {
  orgId: string;
  id: string;
  amount: Nanos;
  creditType: "trial" | "grant" | "admin_grant" | "purchase" | "switch";
  isAutoRebuy?: boolean;
  autoRebuyMinThreshold?: Nanos | null;
  autoRebuyToBalance?: Nanos | null;
}

export type CreditResult =
  | { ok: true; transaction: CreditTransactionRow; duplicate: boolean }
  | { ok: false; reason: "amount_mismatch"; firstAmount: Nanos };
