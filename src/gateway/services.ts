import type { Config } from "../config.ts";
import type { Clock, Sleeper } from "../core/clock.ts";
import type { Logger } from "../core/log.ts";
import type { Database } from "../db/client.ts";
import type { DatabaseGuard } from "../db/guard.ts";
import type { Meter } from "../metering/meter.ts";
import type { Catalog } from "../pricing/catalog.ts";
import type { KeyResolver } from "./auth.ts";
import type { GatewayMetrics } from "./metrics-port.ts";
import type { UpstreamClient } from "./upstream.ts";

/** Counts calls in flight so a shutdown can wait for open streams to finish and settle. */
export class OpenCalls {
  private open = 0;
  private waiters: Array<() => void> = [];

  get size(): number {
    return this.open;
  }

  enter(): void {
    this.open += 1;
  }

  leave(): void {
    this.open -= 1;
    if (this.open === 0) for (const w of this.waiters.splice(0)) w();
  }

  /** Resolves once no call is open, or after `timeoutMs`; returns how many were still open. */
  async drain(timeoutMs: number): Promise<number> {
    if (this.open === 0) return 0;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, timeoutMs);
      this.waiters.push(() => {
        clearTimeout(timer);
        resolve();
      });
    });
    return this.open;
  }
}

/** What the app is built from; the entries choose the implementations. */
export interface Services {
  config: Config;
  catalog: Catalog;
  database: Database;
  /** Deadline and breaker for Postgres work on the request path (see src/db/guard.ts). */
  dbGuard: DatabaseGuard;
  keys: KeyResolver;
  meter: Meter;
  upstream: UpstreamClient;
  clock: Clock;
  /** Waits out the backoff between upstream attempts. */
  sleeper: Sleeper;
  log: Logger;
  calls: OpenCalls;
  metrics: GatewayMetrics;
  /** Extra readiness checks (Redis, Postgres): name → reachable. */
  ready(): Promise<Record<string, boolean>>;
  /** Settles, flushes and closes every connection; the last step of a shutdown. */
  close(): Promise<void>;
}
