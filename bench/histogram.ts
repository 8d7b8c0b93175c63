/**
 * `npx tsx bench/histogram.ts`: the load tester's hand-written log-linear histogram
 * (tools/loadtest/histogram.ts) against hdr-histogram-js at 3 significant digits, JS and WASM, on
 * 1M log-normal latencies (median 40 ms): each p50/p90/p99/p99.9 against the exact sorted sample,
 * and what a record() and a percentile read cost. hdr-histogram-js is not a dependency (the
 * figures kept the hand-written one, see README): `npm install --no-save hdr-histogram-js@3` first.
 */
import { Histogram } from "../tools/loadtest/histogram.ts";

interface HdrHistogram {
  recordValue(value: number): void;
  getValueAtPercentile(p: number): number;
  destroy(): void;
}
interface HdrModule {
  initWebAssembly(): Promise<void>;
  build(opts: Record<string, number | boolean>): HdrHistogram;
}

const moduleName = "hdr-histogram-js";
const hdr = (await import(moduleName).catch(() => {
  console.error("bench/histogram: npm install --no-save hdr-histogram-js@3 first");
  process.exit(2);
})) as HdrModule;
await hdr.initWebAssembly();

const N = 1_000_000;
let seed = 7;
const random = () => {
  seed = (seed * 1103515245 + 12345) % 2 ** 31;
  return (seed + 0.5) / 2 ** 31;
};
const samples = Array.from({ length: N }, () => {
  const z = Math.sqrt(-2 * Math.log(random())) * Math.cos(2 * Math.PI * random());
  return Math.exp(Math.log(40) + 0.8 * z);
});
const sorted = [...samples].sort((a, b) => a - b);
const exact = (p: number) => sorted[Math.max(0, Math.ceil((p / 100) * N) - 1)] as number;
const percentiles = [50, 90, 99, 99.9];

interface Candidate {
  name: string;
  make(): { record(ms: number): void; percentile(p: number): number; free(): void };
}
const hdrCandidate = (wasm: boolean): Candidate => ({
  name: `hdr-histogram-js (${wasm ? "wasm" : "js"})`,
  make() {
    const h = hdr.build({
      bitBucketSize: 64,
      lowestDiscernibleValue: 1,
      highestTrackableValue: 3_600_000_000,
      numberOfSignificantValueDigits: 3,
      useWebAssembly: wasm,
    });
    return {
      record: (ms) => h.recordValue(Math.round(ms * 1000)),
      percentile: (p) => h.getValueAtPercentile(p) / 1000,
      free: () => h.destroy(),
    };
  },
});
const candidates: Candidate[] = [
  {
    name: "hand-written",
    make() {
      const h = new Histogram();
      return { record: (ms) => h.record(ms), percentile: (p) => h.percentile(p), free: () => {} };
    },
  },
  hdrCandidate(false),
  hdrCandidate(true),
];

for (const c of candidates) {
  const warm = c.make();
  for (let i = 0; i < 200_000; i++) warm.record(samples[i] as number);
  warm.free();
  const times: number[] = [];
  let h = c.make();
  for (let round = 0; round < 5; round++) {
    h.free();
    h = c.make();
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < N; i++) h.record(samples[i] as number);
    times.push(Number(process.hrtime.bigint() - t0) / N);
  }
  const t1 = process.hrtime.bigint();
  for (let i = 0; i < 1000; i++) for (const p of percentiles) h.percentile(p);
  const readUs = Number(process.hrtime.bigint() - t1) / 1000 / 1000 / percentiles.length;
  const errors = percentiles.map((p) => `p${p} ${((h.percentile(p) / exact(p) - 1) * 100).toFixed(3)}%`);
  h.free();
  console.log(
    `${c.name.padEnd(24)} record ${Math.min(...times).toFixed(0)} ns (best of 5)  percentile ${readUs.toFixed(1)} µs  error ${errors.join(", ")}`,
  );
}
