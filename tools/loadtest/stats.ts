import type { Nanos } from "../../src/pricing/money.ts";
import { Histogram, type Percentiles } from "./histogram.ts";

/** What one call came to, as the load generator saw it. */
export interface CallResult {
  model: string;
  /** HTTP status; 0 when no response arrived. */
  status: number;
  /** undefined: success. Otherwise the contract code of the error body, `network`, `timeout`,
   * `<code> (in stream)` for a `data: {"error":…}` frame, or `stream_truncated`. */
  errorCode: string | undefined;
  /** The gateway's x-request-id (the id of the call's debit). */
  requestId: string | undefined;
  /** Time to the first content frame (streams) or to the response headers (plain), ms. */
  ttftMs: number | undefined;
  totalMs: number;
  /** USD nanos the gateway said it charged (usage frame `cost` / x-planto-cost); null: it did not say. */
  cost: Nanos | null;
}

/** A call as the books check accounts for it. */
export interface BookedCall {
  /** The gateway's x-request-id; undefined when no answer (or an error without one) came back. */
  requestId: string | undefined;
  /** HTTP status; 0 when no response arrived. */
  status: number;
  /** What the caller was told it cost; null when a stream broke off before its usage frame. */
  cost: Nanos | null;
}

/** One interval (about a second) of the run. */
export interface TimePoint {
  /** Seconds from the start of the run to the end of the interval. */
  t: number;
  completed: number;
  ok: number;
  errors: number;
  /** Completed calls per second over the interval. */
  rps: number;
  /** The most calls in flight at once during the interval. */
  inFlight: number;
  /** ms, of the calls that completed in the interval (0 when none did). */
  ttftP50: number;
  ttftP99: number;
  latencyP50: number;
  latencyP99: number;
}

export interface ModelStats {
  requests: number;
  ok: number;
  errors: number;
  ttft: Percentiles;
  latency: Percentiles;
}

const round3 = (n: number) => Math.round(n * 1000) / 1000;

function roundPercentiles(p: Percentiles): Percentiles {
  return {
    count: p.count,
    min: round3(p.min),
    mean: round3(p.mean),
    p50: round3(p.p50),
    p90: round3(p.p90),
    p95: round3(p.p95),
    p99: round3(p.p99),
    max: round3(p.max),
  };
}

/**
 * Collects the run's numbers with bounded memory: histograms for latency (successful calls only;
 * an error's time says little about the gateway's speed), counts by error code and by model, one
 * TimePoint per tick, and — only when the books are checked — one small record per call.
 */
export class Recorder {
  readonly ttft = new Histogram();
  readonly latency = new Histogram();
  completed = 0;
  ok = 0;
  errors = 0;
  readonly errorsByCode = new Map<string, number>();
  readonly series: TimePoint[] = [];
  readonly booked: BookedCall[] = [];
  private readonly byModel = new Map<
    string,
    { requests: number; ok: number; errors: number; ttft: Histogram; latency: Histogram }
  >();
  private readonly window = {
    completed: 0,
    ok: 0,
    errors: 0,
    ttft: new Histogram(),
    latency: new Histogram(),
  };
  private readonly previous = {
    completed: 0,
    ok: 0,
    errors: 0,
    ttft: new Histogram(),
    latency: new Histogram(),
  };
  private lastTickS = 0;
  private previousStartS = 0;

  constructor(private readonly keepBooked: boolean) {}

  record(r: CallResult): void {
    this.completed += 1;
    this.window.completed += 1;
    let model = this.byModel.get(r.model);
    if (!model) {
      model = { requests: 0, ok: 0, errors: 0, ttft: new Histogram(), latency: new Histogram() };
      this.byModel.set(r.model, model);
    }
    model.requests += 1;
    if (r.errorCode === undefined) {
      this.ok += 1;
      this.window.ok += 1;
      model.ok += 1;
      this.latency.record(r.totalMs);
      this.window.latency.record(r.totalMs);
      model.latency.record(r.totalMs);
      if (r.ttftMs !== undefined) {
        this.ttft.record(r.ttftMs);
        this.window.ttft.record(r.ttftMs);
        model.ttft.record(r.ttftMs);
      }
    } else {
      this.errors += 1;
      this.window.errors += 1;
      model.errors += 1;
      this.errorsByCode.set(r.errorCode, (this.errorsByCode.get(r.errorCode) ?? 0) + 1);
    }
    if (this.keepBooked) this.booked.push({ requestId: r.requestId, status: r.status, cost: r.cost });
  }

  /**
   * Closes the current interval at `nowS` seconds into the run. With `extend`, the interval is
   * folded into the last one instead (the few ms between the last tick and the end of a run would
   * otherwise be a point of its own, with a rate of a few calls over a few ms).
   */
  tick(nowS: number, inFlight: number, extend = false): TimePoint {
    const w = this.window;
    const last = this.series[this.series.length - 1];
    const folding = extend && last !== undefined;
    const p = this.previous;
    if (folding) {
      p.completed += w.completed;
      p.ok += w.ok;
      p.errors += w.errors;
      p.ttft.add(w.ttft);
      p.latency.add(w.latency);
    } else {
      // The interval just closed is kept (one set of histograms) so that it can be extended.
      p.completed = w.completed;
      p.ok = w.ok;
      p.errors = w.errors;
      p.ttft.reset();
      p.ttft.add(w.ttft);
      p.latency.reset();
      p.latency.add(w.latency);
      this.previousStartS = this.lastTickS;
    }
    const seconds = Math.max(1e-3, nowS - this.previousStartS);
    const point: TimePoint = {
      t: round3(nowS),
      completed: p.completed,
      ok: p.ok,
      errors: p.errors,
      rps: round3(p.completed / seconds),
      inFlight: folding ? Math.max(last.inFlight, inFlight) : inFlight,
      ttftP50: round3(p.ttft.percentile(50)),
      ttftP99: round3(p.ttft.percentile(99)),
      latencyP50: round3(p.latency.percentile(50)),
      latencyP99: round3(p.latency.percentile(99)),
    };
    if (folding) this.series[this.series.length - 1] = point;
    else this.series.push(point);
    this.lastTickS = nowS;
    w.completed = 0;
    w.ok = 0;
    w.errors = 0;
    w.ttft.reset();
    w.latency.reset();
    return point;
  }

  models(): Record<string, ModelStats> {
    const out: Record<string, ModelStats> = {};
    for (const [name, m] of this.byModel) {
      out[name] = {
        requests: m.requests,
        ok: m.ok,
        errors: m.errors,
        ttft: roundPercentiles(m.ttft.summary()),
        latency: roundPercentiles(m.latency.summary()),
      };
    }
    return out;
  }

  /** Error codes, most frequent first. */
  errorCodes(): Record<string, number> {
    return Object.fromEntries([...this.errorsByCode].sort((a, b) => b[1] - a[1]));
  }

  ttftSummary(): Percentiles {
    return roundPercentiles(this.ttft.summary());
  }

  latencySummary(): Percentiles {
    return roundPercentiles(this.latency.summary());
  }
}
