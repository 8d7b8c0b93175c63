/**
 * The counters metering reports to. The gateway's Prometheus registry (src/gateway/metrics.ts)
 * satisfies it; metering defines what it needs here so it does not import the gateway.
 */
export interface MeteringMetrics {
  storeErrors: { inc(): void };
  credits: { inc(labels: { type: string }): void };
  /** Entries set aside in dead_letters, by source ("spool" or "ledger"). */
  deadLetters: { inc(labels: { source: "spool" | "ledger" }): void };
}
