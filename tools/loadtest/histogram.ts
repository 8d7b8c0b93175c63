/**
 * A log-linear latency histogram (the HDR layout): values in integer microseconds, exact below
 * 256 µs, then 128 buckets per power of two, so a bucket is at most 1/128 of its value wide and a
 * percentile read from its midpoint is within 0.4% of the true sample. Memory is fixed (about 4k
 * counters) however many samples it holds; min, max, count and sum are kept exactly.
 */
const SUB_BUCKETS = 128;
const SUB_BITS = 7; // log2(SUB_BUCKETS)
const LINEAR_LIMIT = 2 * SUB_BUCKETS; // values below this have a bucket each
const MAX_EXPONENT = 37; // 2^37 µs ≈ 38 hours; anything above is counted in the last bucket
const BUCKETS = (MAX_EXPONENT - SUB_BITS + 1) * SUB_BUCKETS + LINEAR_LIMIT;

/** Bucket of a value in µs. */
export function bucketOf(us: number): number {
  if (us < LINEAR_LIMIT) return Math.max(0, us);
  const exponent = Math.floor(Math.log2(us));
  if (exponent > MAX_EXPONENT) return BUCKETS - 1;
  const shift = exponent - SUB_BITS;
  return shift * SUB_BUCKETS + Math.floor(us / 2 ** shift);
}

/** The [low, high) range of µs values that land in a bucket. */
export function bucketRange(index: number): [number, number] {
  if (index < LINEAR_LIMIT) return [index, index + 1];
  const shift = Math.floor(index / SUB_BUCKETS) - 1;
  const sub = index - shift * SUB_BUCKETS;
  const width = 2 ** shift;
  return [sub * width, (sub + 1) * width];
}

export interface Percentiles {
  count: number;
  min: number;
  mean: number;
  p50: number;
  p90: number;
  p95: number;
  p99: number;
  max: number;
}

export class Histogram {
  private counts = new Float64Array(BUCKETS);
  count = 0;
  /** µs */
  private sum = 0;
  private minUs = Number.POSITIVE_INFINITY;
  private maxUs = 0;

  /** Records a sample given in milliseconds (fractions kept to the microsecond). */
  record(ms: number): void {
    const us = Math.max(0, Math.round(ms * 1000));
    const index = bucketOf(us);
    this.counts[index] = (this.counts[index] ?? 0) + 1;
    this.count += 1;
    this.sum += us;
    if (us < this.minUs) this.minUs = us;
    if (us > this.maxUs) this.maxUs = us;
  }

  reset(): void {
    this.counts.fill(0);
    this.count = 0;
    this.sum = 0;
    this.minUs = Number.POSITIVE_INFINITY;
    this.maxUs = 0;
  }

  add(other: Histogram): void {
    for (let i = 0; i < BUCKETS; i++) this.counts[i] = (this.counts[i] ?? 0) + (other.counts[i] ?? 0);
    this.count += other.count;
    this.sum += other.sum;
    this.minUs = Math.min(this.minUs, other.minUs);
    this.maxUs = Math.max(this.maxUs, other.maxUs);
  }

  /** The value at percentile `p` (0–100) in ms: the smallest sample with at least p% of samples at or below it. */
  percentile(p: number): number {
    if (this.count === 0) return 0;
    if (p >= 100) return this.maxUs / 1000;
    const rank = Math.max(1, Math.ceil((p / 100) * this.count));
    let seen = 0;
    for (let i = 0; i < BUCKETS; i++) {
      seen += this.counts[i] ?? 0;
      if (seen >= rank) {
        const [low, high] = bucketRange(i);
        const mid = high - low <= 1 ? low : (low + high) / 2;
        return Math.min(this.maxUs, Math.max(this.minUs, mid)) / 1000;
      }
    }
    return this.maxUs / 1000;
  }

  get min(): number {
    return this.count === 0 ? 0 : this.minUs / 1000;
  }

  get max(): number {
    return this.maxUs / 1000;
  }

  get mean(): number {
    return this.count === 0 ? 0 : this.sum / this.count / 1000;
  }

  summary(): Percentiles {
    return {
      count: this.count,
      min: this.min,
      mean: this.mean,
      p50: this.percentile(50),
      p90: this.percentile(90),
      p95: this.percentile(95),
      p99: this.percentile(99),
      max: this.max,
    };
  }

  /**
   * The distribution re-binned for a chart: `bins` log-spaced bins from min to max (ms; or over
   * `range`, to draw two histograms on one axis), each with its sample count. Each stored bucket
   * goes into the bin that holds its midpoint.
   */
  bins(bins = 40, range?: { min: number; max: number }): Array<{ from: number; to: number; count: number }> {
    if (this.count === 0) return [];
    const lo = Math.max(range ? Math.round(range.min * 1000) : this.minUs, 1);
    const hi = Math.max(range ? Math.round(range.max * 1000) : this.maxUs, lo + 1);
    const logLo = Math.log(lo);
    const step = (Math.log(hi) - logLo) / bins;
    const out = Array.from({ length: bins }, (_, i) => ({
      from: Math.exp(logLo + i * step) / 1000,
      to: Math.exp(logLo + (i + 1) * step) / 1000,
      count: 0,
    }));
    for (let i = 0; i < BUCKETS; i++) {
      const n = this.counts[i] ?? 0;
      if (n === 0) continue;
      const [low, high] = bucketRange(i);
      const mid = Math.min(hi, Math.max(lo, (low + high) / 2));
      const bin = Math.min(bins - 1, Math.max(0, Math.floor((Math.log(mid) - logLo) / step)));
      const target = out[bin];
      if (target) target.count += n;
    }
    return out;
  }
}
