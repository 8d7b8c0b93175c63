import type { Logger } from "./core/log.ts";
import { driverFaulted } from "./db/client.ts";

/**
 * postgres.js 3.4.9 (the latest release) can throw `TypeError: Cannot read properties of null
 * (reading 'write')` from a `setImmediate` in its connection.js when Postgres drops a connection
 * while a small write is queued (porsager/postgres#1154, #1066; fixes proposed in #1168, #1176 and
 * #1209, none released). Thrown from a timer, no caller can catch it, and Node's default is to end
 * the process with every open stream. The failed query has already been rejected by then, so the
 * gateway logs it, replaces the pool (the faulted connection keeps a half-written buffer), and goes
 * on. Any other uncaught exception still ends the process: its state is unknown.
 */
export function isPostgresDriverFault(err: unknown): boolean {
  if (!(err instanceof TypeError)) return false;
  const stack = err.stack ?? "";
  return /reading 'write'/.test(err.message) && /[/\\]postgres[/\\].*connection\.js/.test(stack);
}

export function installProcessGuards(
  log: Logger,
  counters: { driverFaults(): void; unhandledRejections(): void },
): void {
  process.on("uncaughtException", (err) => {
    if (isPostgresDriverFault(err)) {
      counters.driverFaults();
      log.warn("postgres.js lost a connection mid-write; the pool is replaced", { err: err.message });
      driverFaulted();
      return;
    }
    log.error("uncaught exception; exiting", { err: err instanceof Error ? err.stack : String(err) });
    process.exitCode = 1;
    setImmediate(() => process.exit(1));
  });
  // A promise nobody awaited that failed (a background query when Postgres terminated its
  // backend) is logged, not fatal: ending the process would cut every open stream for a failure
  // that only that promise saw. The money paths await and retry their own work.
  process.on("unhandledRejection", (reason) => {
    counters.unhandledRejections();
    log.error("unhandled rejection", { err: reason instanceof Error ? reason.stack : String(reason) });
  });
}
