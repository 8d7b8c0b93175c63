/**
 * What the gateway counts, as the code that counts sees it. Node wires Prometheus (metrics.ts, at
 * `GET /metrics`); a Worker wires `metricsOff`: an isolate's own counters say nothing about the
 * deployment, prom-client's process metrics need Node, and Workers Analytics counts requests.
 */
export interface GatewayMetrics {
  /** False when nothing is collected: `GET /metrics` then answers 404. */
  readonly enabled: boolean;
  readonly contentType: string;
  debits: { inc(): void };
  debitedUsd: { inc(value: number): void };
  credits: { inc(labels: { type: string }): void };
  refusals: { inc(labels: { code: string }): void };
  storeErrors: { inc(): void };
  /** Entries set aside in dead_letters, by source ("spool" or "ledger"). */
  deadLetters: { inc(labels: { source: "spool" | "ledger" }): void };
  notifications: { inc(labels: { kind: string; outcome: string }): void };
  databaseErrors: { inc(): void };
  processFaults: { inc(labels: { kind: string }): void };
  /** 1 while Postgres answers, 0 during an outage. */
  databaseAvailable: { set(value: number): void };
  recordCall(c: CallRecord): void;
  render(): Promise<string>;
}

/** One finished call, as counted. */
export interface CallRecord {
  route: string;
  model: string;
  provider: string;
  status: number;
  durationSeconds: number;
  timeToFirstTokenSeconds: number | undefined;
}

/** What the metrics read when scraped. */
export interface MetricSources {
  openCalls: () => number;
  ledgerLag: () => Promise<{ length: number; oldestMs: number | null }>;
  now: () => number;
}

const nothing = { inc() {} };

export const metricsOff: GatewayMetrics = {
  enabled: false,
  contentType: "text/plain",
  debits: nothing,
  debitedUsd: nothing,
  credits: nothing,
  refusals: nothing,
  storeErrors: nothing,
  deadLetters: nothing,
  notifications: nothing,
  databaseErrors: nothing,
  processFaults: nothing,
  databaseAvailable: { set() {} },
  recordCall() {},
  render: async () => "",
};
