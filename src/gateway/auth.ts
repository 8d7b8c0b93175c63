import type { MiddlewareHandler } from "hono";
import type { Clock } from "../core/clock.ts";
import { GatewayError } from "../core/errors.ts";
import type { CallerOrg } from "../metering/meter.ts";
import type { RateLimits } from "../metering/rate-limit.ts";

export interface AuthedKey {
  keyId: string;
  /** The key's own rate limits; absent: none. */
  keyRateLimits?: RateLimits;
  org: CallerOrg;
}

/** Finds the live key (not revoked, org not deleted) for a presented api key. */
export interface KeyResolver {
  resolve(key: string): Promise<AuthedKey | null>;
  /** Forgets cached answers here at once (other instances catch up within the TTL). */
  invalidate(): void;
}

/**
 * Caches lookups in process for `ttlMs`, so the hot path does no database round trip. The TTL is
 * the bound on how late a revocation (made on any instance) takes effect here; negative answers are
 * cached too, so a flood of bad keys does not reach the database.
 *
 * When the database cannot be reached, a known key keeps its last answer for up to `staleMs` past
 * its TTL (stale-if-error): calls keep flowing through a Postgres outage that long, and revocations
 * made during it apply once it is back. The lookup fails within DB_TIMEOUT_MS, and at once while
 * the database guard knows Postgres is down, so an expired key costs a call at most that. An
 * unknown key has nothing to fall back on: the lookup's failure (503 `unavailable`) is the answer.
 */
export function cachedKeyResolver(
  lookup: (key: string) => Promise<AuthedKey | null>,
  opts: { ttlMs: number; clock: Clock; staleMs?: number; maxEntries?: number },
): KeyResolver {
  const maxEntries = opts.maxEntries ?? 50_000;
  const staleMs = opts.staleMs ?? 0;
  const cache = new Map<string, { value: AuthedKey | null; expires: number }>();
  const inflight = new Map<string, Promise<AuthedKey | null>>();
  const refresh = (key: string): Promise<AuthedKey | null> => {
    let pending = inflight.get(key);
    if (!pending) {
      const started = opts.clock.now();
      pending = lookup(key)
        .then((value) => {
          if (cache.size >= maxEntries) cache.delete(cache.keys().next().value as string);
          cache.set(key, { value, expires: started + opts.ttlMs });
          return value;
        })
        .finally(() => inflight.delete(key));
      inflight.set(key, pending);
    }
    return pending;
  };
  return {
    async resolve(key) {
      const now = opts.clock.now();
      const hit = cache.get(key);
      if (hit && hit.expires > now) return hit.value;
      try {
        return await refresh(key);
      } catch (err) {
        // Only a failed lookup falls back on the cache, never a slow one: a revocation still
        // applies within the TTL whenever Postgres answers.
        if (hit && now < hit.expires + staleMs) return hit.value;
        if (err instanceof GatewayError) throw err;
        throw new GatewayError("unavailable", "cannot check the api key right now; try again", {
          extras: { cause: err instanceof Error ? err.message : String(err) },
        });
      }
    },
    invalidate() {
      cache.clear();
    },
  };
}

export type AuthVariables = { auth: AuthedKey };

/** `Authorization: Bearer <org api key>` on every inference and billing call. */
export function requireApiKey(keys: KeyResolver): MiddlewareHandler<{ Variables: AuthVariables }> {
  return async (c, next) => {
    const header = c.req.header("authorization");
    const key = header?.startsWith("Bearer ") ? header.slice(7).trim() : undefined;
    if (!key) throw new GatewayError("invalid_api_key", "missing api key: send Authorization: Bearer <key>");
    const authed = await keys.resolve(key);
    if (!authed) throw new GatewayError("invalid_api_key", "invalid or revoked api key");
    c.set("auth", authed);
    await next();
  };
}
