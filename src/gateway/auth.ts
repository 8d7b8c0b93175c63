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
 * cached too, so a flood of bad keys does not reach the database. When the database cannot be
 * reached, a known key keeps its last answer (stale-if-error): calls keep flowing through a
 * Postgres outage, and revocations made during it apply once it is back.
 */
export function cachedKeyResolver(
  lookup: (key: string) => Promise<AuthedKey | null>,
  opts: { ttlMs: number; clock: Clock; maxEntries?: number },
): KeyResolver {
  const maxEntries = opts.maxEntries ?? 50_000;
  const cache = new Map<string, { value: AuthedKey | null; expires: number }>();
  const inflight = new Map<string, Promise<AuthedKey | null>>();
  return {
    async resolve(key) {
      const now = opts.clock.now();
      const hit = cache.get(key);
      if (hit && hit.expires > now) return hit.value;
      let pending = inflight.get(key);
      if (!pending) {
        pending = lookup(key).finally(() => inflight.delete(key));
        inflight.set(key, pending);
      }
      let value: AuthedKey | null;
      try {
        value = await pending;
      } catch (err) {
        if (hit) return hit.value;
        throw new GatewayError("unavailable", "cannot check the api key right now; try again", {
          extras: { cause: err instanceof Error ? err.message : String(err) },
        });
      }
      if (cache.size >= maxEntries) cache.delete(cache.keys().next().value as string);
      cache.set(key, { value, expires: now + opts.ttlMs });
      return value;
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
