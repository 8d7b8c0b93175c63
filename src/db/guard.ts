import { GatewayError } from "../core/errors.ts";
import type { Database } from "./client.ts";

/**
 * Postgres work on the request path (key lookups, billing, admin, readiness) behind a deadline and
 * a breaker, so that an outage costs a caller at most `timeoutMs` once and nothing after:
 * - a connection-class failure (refused, reset, terminated backend, connect timeout) opens the
 *   breaker at once; while it is open every guarded call fails fast with 503 `unavailable`;
 * - a deadline missed by a slow but reachable Postgres answers that one caller 503 and asks a probe;
 *   the breaker opens only if the probe cannot reach Postgres either, so a busy database is not
 *   mistaken for a dead one;
 * - while open, a probe (`database.ping()`) runs every `probeIntervalMs`; the first that answers
 *   closes the breaker.
 * The work itself is not cancelled when its caller is answered: what it writes stays idempotent by
 * id (credits by Idempotency-Key), so a retry after a 503 cannot count twice.
 */
export interface DatabaseGuard {
  /** False while the breaker is open (Postgres known unreachable). */
  readonly available: boolean;
  /** Runs request-path Postgres work within the deadline; 503 `unavailable` when it cannot. */
  run<T>(work: () => Promise<T>): Promise<T>;
  /** Reachability within the deadline, for /readyz; never rejects. */
  ping(): Promise<boolean>;
  /** Reports a failure seen outside `run` (a route's own query); opens the breaker if it is one. */
  observe(err: unknown): void;
  close(): void;
}

/** SQLSTATEs of a connection lost or refused: class 08, admin/crash shutdown, starting up. */
const CONNECTION_SQLSTATES = new Set(["57P01", "57P02", "57P03"]);
const CONNECTION_CODES = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "EPIPE",
  "ETIMEDOUT",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "ENOTFOUND",
  "EAI_AGAIN",
  "CONNECTION_CLOSED",
  "CONNECTION_ENDED",
  "CONNECTION_DESTROYED",
  "CONNECT_TIMEOUT",
]);

/** The SQLSTATE of a Postgres error, also when drizzle wrapped it (as its cause); undefined for none. */
export function sqlState(err: unknown): string | undefined {
  const e = err as { code?: unknown; cause?: { code?: unknown } } | undefined;
  const code = e?.cause?.code ?? e?.code;
  return typeof code === "string" ? code : undefined;
}

/**
 * Whether an error (or one it wraps: drizzle wraps the driver's error in `cause`) says Postgres
 * could not be reached, as opposed to a query Postgres answered with an error.
 */
export function isDatabaseUnreachable(err: unknown): boolean {
  for (let e: unknown = err, depth = 0; e && typeof e === "object" && depth < 5; depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === "string" && (CONNECTION_CODES.has(code) || CONNECTION_SQLSTATES.has(code))) {
      return true;
    }
    if (typeof code === "string" && code.startsWith("08")) return true;
    if (e instanceof DatabaseTimeout) return true;
    e = (e as { cause?: unknown }).cause;
  }
  return false;
}

/** The driver's own message (drizzle's wraps it with the query text and its parameters). */
export function rootMessage(err: unknown): string {
  let e: unknown = err;
  for (let depth = 0; depth < 5 && e instanceof Error && e.cause instanceof Error; depth++) e = e.cause;
  return e instanceof Error ? e.message : String(e);
}

class DatabaseTimeout extends Error {
  override name = "DatabaseTimeout";
}

export function databaseUnavailable(): GatewayError {
  return new GatewayError("unavailable", "the database cannot be reached right now; try again shortly");
}

export function guardDatabase(
  database: Pick<Database, "ping">,
  opts: { timeoutMs: number; probeIntervalMs?: number; onChange?: (available: boolean) => void },
): DatabaseGuard {
  const probeIntervalMs = opts.probeIntervalMs ?? 250;
  let available = true;
  let probing: Promise<void> | undefined;
  let probeTimer: NodeJS.Timeout | undefined;
  let closed = false;
  /** Callers waiting on work when the breaker opens are answered at once, not at their deadline. */
  const waiting = new Set<(err: GatewayError) => void>();

  const setAvailable = (next: boolean) => {
    if (available === next) return;
    available = next;
    opts.onChange?.(next);
    if (!next) {
      for (const fail of waiting) fail(databaseUnavailable());
      waiting.clear();
      scheduleProbe();
    }
  };

  const withDeadline = <T>(work: Promise<T>): Promise<T> =>
    new Promise<T>((resolve, reject) => {
      const fail = (err: unknown) => {
        clearTimeout(timer);
        waiting.delete(fail);
        reject(err);
      };
      const timer = setTimeout(() => fail(new DatabaseTimeout("database deadline passed")), opts.timeoutMs);
      waiting.add(fail);
      work.then((value) => {
        clearTimeout(timer);
        waiting.delete(fail);
        resolve(value);
      }, fail);
    });

  /** One ping at a time; it decides whether the breaker is open. */
  const probe = (): Promise<void> => {
    probing ??= withDeadline(database.ping())
      .then(
        (ok) => setAvailable(ok),
        () => setAvailable(false),
      )
      .finally(() => {
        probing = undefined;
      });
    return probing;
  };

  const scheduleProbe = () => {
    if (closed || probeTimer) return;
    probeTimer = setTimeout(() => {
      probeTimer = undefined;
      void probe().then(() => {
        if (!available) scheduleProbe();
      });
    }, probeIntervalMs);
    probeTimer.unref?.();
  };

  const observe = (err: unknown) => {
    if (err instanceof DatabaseTimeout) void probe();
    else if (isDatabaseUnreachable(err)) setAvailable(false);
  };

  return {
    get available() {
      return available;
    },
    async run(work) {
      if (!available) throw databaseUnavailable();
      try {
        return await withDeadline(work());
      } catch (err) {
        if (err instanceof GatewayError && err.code !== "unavailable") throw err;
        observe(err);
        if (isDatabaseUnreachable(err) || err instanceof GatewayError) throw databaseUnavailable();
        throw err;
      }
    },
    async ping() {
      if (!available) return false;
      return withDeadline(database.ping()).catch((err: unknown) => {
        observe(err);
        return false;
      });
    },
    observe,
    close() {
      closed = true;
      clearTimeout(probeTimer);
    },
  };
}
