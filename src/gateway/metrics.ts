import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client";
import type { CallRecord, GatewayMetrics, MetricSources } from "./metrics-port.ts";

/**
 * What operators watch, in Prometheus text at `GET /metrics`. One registry per app (not the
 * library's global one), so several gateways in one process (the tests) keep their own counts.
 */
export class Metrics implements GatewayMetrics {
  readonly enabled = true;
  readonly registry = new Registry();
  readonly calls = new Counter({
    name: "planto_calls_total",
    help: "Model calls by route, model, provider and HTTP status",
    labelNames: ["route", "model", "provider", "status"] as const,
    registers: [this.registry],
  });
  readonly timeToFirstToken = new Histogram({
    name: "planto_time_to_first_token_seconds",
    help: "From the request to the first upstream byte",
    labelNames: ["route", "model"] as const,
    buckets: [0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30],
    registers: [this.registry],
  });
  readonly duration = new Histogram({
    name: "planto_call_duration_seconds",
    help: "From the request to the end of the answer",
    labelNames: ["route", "model"] as const,
    buckets: [0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300],
    registers: [this.registry],
  });
  readonly debits = new Counter({
    name: "planto_debits_total",
    help: "Calls that took money from a balance",
    registers: [this.registry],
  });
  readonly debitedUsd = new Counter({
    name: "planto_debited_usd_total",
    help: "USD taken from balances",
    registers: [this.registry],
  });
  readonly credits = new Counter({
    name: "planto_credits_total",
    help: "Credits added, by type",
    labelNames: ["type"] as const,
    registers: [this.registry],
  });
  readonly refusals = new Counter({
    name: "planto_refusals_total",
    help: "Requests refused, by error code",
    labelNames: ["code"] as const,
    registers: [this.registry],
  });
  readonly storeErrors = new Counter({
    name: "planto_redis_errors_total",
    help: "Metering store operations that failed",
    registers: [this.registry],
  });
  readonly notifications = new Counter({
    name: "planto_notifications_total",
    help: "Notification delivery outcomes (sent, skipped, failed, retry), by kind",
    labelNames: ["kind", "outcome"] as const,
    registers: [this.registry],
  });
  readonly deadLetters = new Counter({
    name: "planto_dead_letters_total",
    help: "Ledger entries and spooled settles set aside in dead_letters (they can never succeed), by source",
    labelNames: ["source"] as const,
    registers: [this.registry],
  });
  readonly databaseErrors = new Counter({
    name: "planto_postgres_errors_total",
    help: "Ledger flushes that failed",
    registers: [this.registry],
  });
  readonly databaseAvailable = new Gauge({
    name: "planto_postgres_available",
    help: "1 while request-path Postgres work is let through, 0 while the breaker is open",
    registers: [this.registry],
  });
  readonly processFaults = new Counter({
    name: "planto_process_faults_total",
    help: "Faults the process survived: postgres.js driver faults, unhandled rejections",
    labelNames: ["kind"] as const,
    registers: [this.registry],
  });

  get contentType(): string {
    return this.registry.contentType;
  }

  constructor(sources: MetricSources) {
    new Gauge({
      name: "planto_open_calls",
      help: "Calls in flight (streams open, holds active)",
      registers: [this.registry],
      collect() {
        this.set(sources.openCalls());
      },
    });
    this.ledgerBacklog = new Gauge({
      name: "planto_ledger_backlog_events",
      help: "Ledger events not yet flushed to Postgres",
      registers: [this.registry],
    });
    this.ledgerOldest = new Gauge({
      name: "planto_ledger_oldest_unflushed_seconds",
      help: "Age of the oldest ledger event not yet in Postgres (0 when none)",
      registers: [this.registry],
    });
    this.sources = sources;
    // The process's own: memory (RSS, heap), CPU, event-loop lag, GC, open handles.
    collectDefaultMetrics({ register: this.registry, prefix: "planto_" });
  }

  private readonly ledgerBacklog: Gauge;
  private readonly ledgerOldest: Gauge;
  private readonly sources: {
    ledgerLag: () => Promise<{ length: number; oldestMs: number | null }>;
    now: () => number;
  };

  private readonly callSeries = new Map<
    string,
    {
      calls: { inc(): void };
      duration: { observe(v: number): void };
      ttft: { observe(v: number): void };
    }
  >();

  /**
   * Counts one finished call. The labelled series are looked up once per label set and kept:
   * prom-client hashes the labels on every call otherwise, and this runs once per model call.
   */
  recordCall(c: CallRecord): void {
    const key = `${c.route}\n${c.model}\n${c.provider}\n${c.status}`;
    let series = this.callSeries.get(key);
    if (!series) {
      series = {
        calls: this.calls.labels({
          route: c.route,
          model: c.model,
          provider: c.provider,
          status: String(c.status),
        }),
        duration: this.duration.labels({ route: c.route, model: c.model }),
        ttft: this.timeToFirstToken.labels({ route: c.route, model: c.model }),
      };
      this.callSeries.set(key, series);
    }
    series.calls.inc();
    series.duration.observe(c.durationSeconds);
    if (c.timeToFirstTokenSeconds !== undefined) series.ttft.observe(c.timeToFirstTokenSeconds);
  }

  /** The exposition text; the ledger's backlog is read from the store once per scrape. */
  async render(): Promise<string> {
    try {
      const { length, oldestMs } = await this.sources.ledgerLag();
      this.ledgerBacklog.set(length);
      this.ledgerOldest.set(oldestMs === null ? 0 : Math.max(0, (this.sources.now() - oldestMs) / 1000));
    } catch {
      this.storeErrors.inc();
    }
    return this.registry.metrics();
  }
}
