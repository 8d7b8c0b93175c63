import { GatewayError } from "../core/errors.ts";

/**
 * Rate limits per api key and per org: requests per minute and tokens per minute, in fixed windows
 * of one minute aligned to the epoch minute (every instance agrees on them from its clock alone).
 *
 * A call is admitted iff, for the org and for its key, each limit that is set still has room:
 * requests + 1 ≤ rpm and tokens + estimate ≤ tpm, where `estimate` is the call's token estimate at
 * admission (prompt bytes × 0.4 + max_tokens, the same estimate as the credit hold). The check and
 * the count are one atomic step with the reserve (reserve.lua, or rate.lua for BYO calls), so
 * concurrent calls on any number of instances never admit more than the limit in a window. At
 * settle the window the call was admitted in is corrected by (actual − estimated) tokens: the
 * admission counts the estimate, the window ends up counting what was used.
 *
 * Refusals count nothing; a call refused for credits is not counted against the rate either.
 */

export const RATE_WINDOW_MS = 60_000;

/** Limits of one scope (an org or a key); null: no limit of that kind. */
export interface RateLimits {
  requestsPerMinute: number | null;
  tokensPerMinute: number | null;
}

/** What admission checks and counts: both scopes' limits and the call's token estimate. */
export interface RateCheck {
  keyId: string;
  org: RateLimits;
  key: RateLimits;
  /** Estimated tokens of the call (prompt + max output). */
  tokens: number;
}

/** One kind of limit as the `x-ratelimit-*` headers report it: the scope closest to its limit. */
export interface RateMeter {
  limit: number;
  remaining: number;
  /** Milliseconds until the window resets. */
  resetMs: number;
}

/** Where a call stands against the limits that are set (a kind without a limit is absent). */
export interface RateState {
  requests?: RateMeter;
  tokens?: RateMeter;
}

/** The settle-time correction: actual − estimated tokens, for the window the call was admitted in. */
export interface RateCorrection {
  orgId: string;
  keyId: string;
  windowStart: number;
  tokens: number;
}

export const NO_LIMITS: RateLimits = { requestsPerMinute: null, tokensPerMinute: null };

export function hasLimits(l: RateLimits | null | undefined): boolean {
  return !!l && (l.requestsPerMinute !== null || l.tokensPerMinute !== null);
}

export function windowStart(nowMs: number): number {
  return nowMs - (nowMs % RATE_WINDOW_MS);
}

/** One scope's counts in its current window. */
export interface RateWindow {
  start: number;
  requests: number;
  tokens: number;
}

/**
 * Where RateCounters keeps its windows: a Map in this process (the memory store), or a table of a
 * Durable Object's SQLite (src/metering/org-meter-object.ts), so that the counts of an org survive
 * the object being evicted and are exact: one object per org runs its operations one at a time.
 */
export interface RateWindows {
  get(id: string): RateWindow | undefined;
  set(id: string, w: RateWindow): void;
  /** Drops the windows that started before `start` (scopes idle for a whole window); may do nothing. */
  sweep(start: number): void;
}

/** The in-process windows: swept only once there are many, so the map holds only active scopes. */
class MapWindows implements RateWindows {
  private readonly map = new Map<string, RateWindow>();
  get(id: string): RateWindow | undefined {
    return this.map.get(id);
  }
  set(id: string, w: RateWindow): void {
    this.map.set(id, w);
  }
  sweep(start: number): void {
    if (this.map.size < 1024) return;
    for (const [id, w] of this.map) if (w.start < start) this.map.delete(id);
  }
}

/**
 * The in-process counters, with the same semantics as the Lua scripts: the memory store uses them,
 * and any other store that runs its operations one at a time (a Durable Object) can.
 */
export class RateCounters {
  constructor(private readonly windows: RateWindows = new MapWindows()) {}

  /** Checks both scopes and, iff both have room, counts the call in both; one synchronous step. */
  admit(orgId: string, check: RateCheck, nowMs: number): { ok: boolean; rate: RateState } {
    const start = windowStart(nowMs);
    const scopes: [string, RateLimits][] = [
      [`o:${orgId}`, check.org],
      [`k:${check.keyId}`, check.key],
    ];
    const seen = scopes.map(([id, limits]) => {
      const w = this.windows.get(id);
      // As in rate_lib.lua: a later window found is joined, never reset.
      return { id, limits, w: w && w.start >= start ? w : { start, requests: 0, tokens: 0 } };
    });
    const ok = seen.every(
      ({ limits, w }) =>
        (limits.requestsPerMinute === null || w.requests + 1 <= limits.requestsPerMinute) &&
        (limits.tokensPerMinute === null || w.tokens + check.tokens <= limits.tokensPerMinute),
    );
    if (ok) {
      for (const s of seen) {
        if (!hasLimits(s.limits)) continue;
        s.w = { start: s.w.start, requests: s.w.requests + 1, tokens: s.w.tokens + check.tokens };
        this.windows.set(s.id, s.w);
      }
      this.windows.sweep(start);
    }
    return { ok, rate: rateState(seen, nowMs) };
  }

  /** Adds (actual − estimated) tokens to the call's window, if it is still the current one. */
  correct(c: RateCorrection): void {
    for (const id of [`o:${c.orgId}`, `k:${c.keyId}`]) {
      const w = this.windows.get(id);
      if (w && w.start === c.windowStart) this.windows.set(id, { ...w, tokens: w.tokens + c.tokens });
    }
  }
}

/** The header state from each scope's limits and counts (after the call, when it was admitted). */
function rateState(seen: { limits: RateLimits; w: RateWindow }[], nowMs: number): RateState {
  const state: RateState = {};
  for (const { limits, w } of seen) {
    const resetMs = w.start + RATE_WINDOW_MS - nowMs;
    if (limits.requestsPerMinute !== null) {
      const remaining = Math.max(0, limits.requestsPerMinute - w.requests);
      if (!state.requests || remaining < state.requests.remaining)
        state.requests = { limit: limits.requestsPerMinute, remaining, resetMs };
    }
    if (limits.tokensPerMinute !== null) {
      const remaining = Math.max(0, limits.tokensPerMinute - w.tokens);
      if (!state.tokens || remaining < state.tokens.remaining)
        state.tokens = { limit: limits.tokensPerMinute, remaining, resetMs };
    }
  }
  return state;
}

/**
 * Reads the rate part of a script's reply: six numbers, limit/remaining/reset for requests then
 * tokens, -1 for a kind with no limit.
 */
export function rateStateFromReply(v: number[]): RateState {
  const state: RateState = {};
  const [rl = -1, rr = 0, rt = 0, tl = -1, tr = 0, tt = 0] = v;
  if (rl >= 0) state.requests = { limit: rl, remaining: Math.max(0, rr), resetMs: rt };
  if (tl >= 0) state.tokens = { limit: tl, remaining: Math.max(0, tr), resetMs: tt };
  return state;
}

/** OpenAI's duration format of `x-ratelimit-reset-*`: "850ms", "12s", "1m0s". */
export function formatReset(ms: number): string {
  const clamped = Math.max(0, Math.ceil(ms));
  if (clamped < 1000) return `${clamped}ms`;
  const s = Math.ceil(clamped / 1000);
  return s < 60 ? `${s}s` : `${Math.floor(s / 60)}m${s % 60}s`;
}

/** The `x-ratelimit-*` headers in OpenAI's names, for the limits that are set. */
export function rateHeaders(state: RateState | undefined): Record<string, string> {
  const h: Record<string, string> = {};
  if (state?.requests) {
    h["x-ratelimit-limit-requests"] = String(state.requests.limit);
    h["x-ratelimit-remaining-requests"] = String(state.requests.remaining);
    h["x-ratelimit-reset-requests"] = formatReset(state.requests.resetMs);
  }
  if (state?.tokens) {
    h["x-ratelimit-limit-tokens"] = String(state.tokens.limit);
    h["x-ratelimit-remaining-tokens"] = String(state.tokens.remaining);
    h["x-ratelimit-reset-tokens"] = formatReset(state.tokens.resetMs);
  }
  return h;
}

/**
 * The refusal: 429 `rate_limit_exceeded`, `retry-after` in whole seconds until the window of the
 * exhausted limit resets (a call whose own estimate is above the tokens limit can never pass, and is
 * told so), and the `x-ratelimit-*` headers.
 */
export function rateLimitedError(state: RateState, tokens: number): GatewayError {
  const { requests, tokens: tok } = state;
  const overTpm = tok !== undefined && tokens > tok.limit;
  const exhausted = [requests, tok].filter((m): m is RateMeter => m !== undefined && m.remaining <= 0);
  const waitMs = Math.max(
    0,
    ...exhausted.map((m) => m.resetMs),
    tok && tokens > tok.remaining ? tok.resetMs : 0,
  );
  const message = overTpm
    ? `this call may use ${tokens} tokens (prompt and max_tokens), more than the limit of ${tok.limit} tokens per minute; lower max_tokens`
    : "rate limit reached; retry after the time in retry-after";
  return new GatewayError("rate_limit_exceeded", message, {
    headers: { "retry-after": String(Math.max(1, Math.ceil(waitMs / 1000))), ...rateHeaders(state) },
  });
}

/** The rate step a call needs (undefined when neither its org nor its key has a limit). */
export function rateCheckFor(
  keyId: string,
  org: RateLimits | undefined,
  key: RateLimits | undefined,
  tokens: number,
): RateCheck | undefined {
  if (!hasLimits(org) && !hasLimits(key)) return undefined;
  return { keyId, org: org ?? NO_LIMITS, key: key ?? NO_LIMITS, tokens };
}
