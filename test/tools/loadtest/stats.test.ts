import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { bucketOf, bucketRange, Histogram } from "../../../tools/loadtest/histogram.ts";
import { Recorder } from "../../../tools/loadtest/stats.ts";

/** The exact percentile by the same definition: the smallest sample with ≥ p% at or below it. */
function exact(samples: number[], p: number): number {
  const sorted = [...samples].sort((a, b) => a - b);
  return sorted[Math.max(0, Math.ceil((p / 100) * sorted.length) - 1)] ?? 0;
}

describe("Histogram", () => {
  it("puts every value in the bucket whose range holds it, with buckets contiguous", () => {
    let prevHigh = 0;
    for (let i = 0; i < 3000; i++) {
      const [low, high] = bucketRange(i);
      expect(low).toBe(prevHigh);
      expect(bucketOf(low)).toBe(i);
      expect(bucketOf(high - 1)).toBe(i);
      // No bucket wider than 1/128 of its values: the precision the percentiles rely on.
      if (low >= 256) expect((high - low) / low).toBeLessThanOrEqual(1 / 128);
      prevHigh = high;
    }
  });

  it("is exact for small values and keeps min, max, count and mean exactly", () => {
    const h = new Histogram();
    for (const ms of [0.01, 0.05, 0.1, 0.2, 0.25]) h.record(ms);
    expect(h.count).toBe(5);
    expect(h.min).toBe(0.01);
    expect(h.max).toBe(0.25);
    expect(h.percentile(50)).toBe(0.1);
    expect(h.percentile(100)).toBe(0.25);
    expect(h.mean).toBeCloseTo(0.122, 6);
  });

  it("reads p50, p95 and p99 of a known distribution", () => {
    const h = new Histogram();
    for (let i = 1; i <= 10_000; i++) h.record(i / 10); // 0.1 ms … 1000 ms, uniform
    expect(h.percentile(50)).toBeCloseTo(500, -1);
    expect(Math.abs(h.percentile(50) - 500) / 500).toBeLessThan(0.005);
    expect(Math.abs(h.percentile(95) - 950) / 950).toBeLessThan(0.005);
    expect(Math.abs(h.percentile(99) - 990) / 990).toBeLessThan(0.005);
    expect(h.max).toBe(1000);
  });

  it("is within 0.4% of the exact percentile for any samples", () => {
    fc.assert(
      fc.property(
        fc.array(fc.double({ min: 0.3, max: 600_000, noNaN: true }), { minLength: 1, maxLength: 400 }),
        fc.constantFrom(1, 50, 90, 95, 99, 99.9),
        (samples, p) => {
          const h = new Histogram();
          for (const s of samples) h.record(s);
          const truth = Math.round(exact(samples, p) * 1000) / 1000; // the histogram keeps µs
          expect(Math.abs(h.percentile(p) - truth)).toBeLessThanOrEqual(truth * 0.004 + 0.001);
        },
      ),
      { numRuns: 300 },
    );
  });

  it("adds and resets", () => {
    const a = new Histogram();
    const b = new Histogram();
    for (let i = 0; i < 100; i++) a.record(10);
    for (let i = 0; i < 100; i++) b.record(1000);
    a.add(b);
    expect(a.count).toBe(200);
    expect(a.percentile(50)).toBeCloseTo(10, 1);
    expect(a.percentile(51)).toBeCloseTo(1000, -1);
    a.reset();
    expect(a.count).toBe(0);
    expect(a.percentile(99)).toBe(0);
    expect(a.max).toBe(0);
  });

  it("re-bins for a chart without losing a sample", () => {
    const h = new Histogram();
    for (let i = 1; i <= 5000; i++) h.record(i % 7 === 0 ? 200 + i / 100 : 5 + i / 1000);
    const bins = h.bins(40);
    expect(bins).toHaveLength(40);
    expect(bins.reduce((n, b) => n + b.count, 0)).toBe(5000);
    expect(bins[0]?.from).toBeCloseTo(h.min, 3);
    expect(bins[39]?.to).toBeCloseTo(h.max, 1);
    for (let i = 1; i < bins.length; i++) expect(bins[i]?.from).toBeCloseTo(bins[i - 1]?.to ?? 0, 9);
    const shared = h.bins(10, { min: 1, max: 1000 });
    expect(shared[0]?.from).toBeCloseTo(1, 6);
    expect(shared.reduce((n, b) => n + b.count, 0)).toBe(5000);
  });
});

describe("Recorder", () => {
  const ok = (model: string, ttftMs: number, totalMs: number) => ({
    model,
    status: 200,
    errorCode: undefined,
    requestId: `req_${model}_${totalMs}`,
    ttftMs,
    totalMs,
    cost: 1000,
  });

  it("counts errors by code and keeps their time out of the latency percentiles", () => {
    const r = new Recorder(false);
    for (let i = 0; i < 98; i++) r.record(ok("a", 2, 10));
    r.record({ ...ok("a", 0, 30_000), status: 0, errorCode: "timeout", ttftMs: undefined });
    r.record({ ...ok("b", 0, 1), status: 402, errorCode: "cloud_insufficient_credits", ttftMs: undefined });
    expect(r.completed).toBe(100);
    expect(r.ok).toBe(98);
    expect(r.errorCodes()).toEqual({ timeout: 1, cloud_insufficient_credits: 1 });
    expect(r.latencySummary().max).toBe(10);
    expect(r.models().a).toMatchObject({ requests: 99, ok: 98, errors: 1 });
    expect(r.models().b).toMatchObject({ requests: 1, ok: 0, errors: 1 });
    expect(r.booked).toHaveLength(0); // kept only when the books are checked
  });

  it("closes one time point per tick with that interval's rate and percentiles", () => {
    const r = new Recorder(true);
    for (let i = 0; i < 50; i++) r.record(ok("a", 1, 5));
    const first = r.tick(1, 8);
    for (let i = 0; i < 20; i++) r.record(ok("a", 3, 50));
    r.record({ ...ok("a", 0, 1), errorCode: "network", status: 0 });
    const second = r.tick(1.5, 4);
    expect(first).toMatchObject({ t: 1, completed: 50, ok: 50, errors: 0, rps: 50, inFlight: 8 });
    expect(first.latencyP50).toBeCloseTo(5, 1);
    expect(second).toMatchObject({ t: 1.5, completed: 21, ok: 20, errors: 1, rps: 42, inFlight: 4 });
    expect(second.ttftP99).toBeCloseTo(3, 1);
    expect(second.latencyP50).toBeCloseTo(50, 0);
    expect(r.series).toHaveLength(2);
    expect(r.booked).toHaveLength(71);
    expect(r.booked.at(-1)).toEqual({ requestId: "req_a_1", status: 0, cost: 1000 });
    // The few ms after the last tick fold into the last point: no point of 3 calls over 20 ms.
    for (let i = 0; i < 3; i++) r.record(ok("a", 3, 50));
    const folded = r.tick(1.52, 2, true);
    expect(r.series).toHaveLength(2);
    expect(folded).toMatchObject({ t: 1.52, completed: 24, ok: 23, errors: 1, inFlight: 4 });
    expect(folded.rps).toBeCloseTo(24 / 0.52, 2);
    expect(r.series.reduce((n, p) => n + p.completed, 0)).toBe(r.completed);
  });
});
