import { AsyncLocalStorage } from "node:async_hooks";
import type { Database } from "./database.ts";

export interface ScopedDatabase {
  /** Reads go to the client of the scope they run in; outside any scope they throw. */
  database: Database;
  /**
   * Runs `fn` with a client of its own (opened when first queried), for a request, a cron run or an
   * alarm, and everything it leaves running (a stream's settle).
   */
  open(): { run<T>(fn: () => T): T };
}

/**
 * A database per request, behind the one Database the services were built with. workerd ties a
 * socket to the request that opened it ("Cannot perform I/O on behalf of a different request"), so
 * a Worker cannot share one postgres.js pool across requests the way a Node process does.
 *
 * A scope's client is not ended: workerd closes a request's sockets when the request (and its
 * waitUntil work) is over, and postgres.js's Workers build leaves an unhandled rejection ("Stream
 * was cancelled") on every `end()` (porsager/postgres#1202; Cloudflare's Hyperdrive examples dropped
 * `sql.end()` for the same reason).
 */
export function scopedDatabase(connect: () => Database): ScopedDatabase {
  const scopes = new AsyncLocalStorage<{ client?: Database }>();
  const current = (): Database => {
    const scope = scopes.getStore();
    if (!scope) throw new Error("database used outside a request");
    scope.client ??= connect();
    return scope.client;
  };
  return {
    database: {
      get db() {
        return current().db;
      },
      kind: "postgres",
      ping: () => current().ping(),
      migrate: () => current().migrate(),
      close: async () => {},
    },
    open() {
      const scope: { client?: Database } = {};
      return { run: (fn) => scopes.run(scope, fn) };
    },
  };
}
