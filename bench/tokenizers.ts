import { performance } from "node:perf_hooks";

/**
 * `npx tsx bench/tokenizers.ts`: tiktoken (WASM) against gpt-tokenizer (pure JS) on a 2 KB chat
 * message: load time, time per message, throughput, and whether the token arrays agree.
 */
const message =
  `${"Refactor this function so that it handles empty input. ".repeat(10)}\n\`\`\`ts\n${"export function f(xs: number[]): number { return xs.reduce((a, b) => a + b, 0); }\n".repeat(12)}\`\`\``.slice(
    0,
    2048,
  );

async function measure(name: string, load: () => Promise<(s: string) => number[]>) {
  const t0 = performance.now();
  const encode = await load();
  const loadMs = performance.now() - t0;
  for (let i = 0; i < 200; i++) encode(message);
  const n = 2000;
  const t1 = performance.now();
  for (let i = 0; i < n; i++) encode(message);
  const perMs = (performance.now() - t1) / n;
  const mbps = Buffer.byteLength(message) / 1e6 / (perMs / 1000);
  process.stdout.write(
    `${name.padEnd(14)} load ${loadMs.toFixed(0)} ms  ${perMs.toFixed(3)} ms/message  ${mbps.toFixed(1)} MB/s\n`,
  );
  return encode(message);
}

const a = await measure("tiktoken", async () => {
  const { get_encoding } = await import("tiktoken");
  const enc = get_encoding("o200k_base");
  return (s) => Array.from(enc.encode_ordinary(s));
});
const b = await measure("gpt-tokenizer", async () => {
  const { encode } = await import("gpt-tokenizer/encoding/o200k_base");
  return (s) => encode(s, { disallowedSpecial: new Set() });
});
process.stdout.write(`identical token arrays: ${JSON.stringify(a) === JSON.stringify(b)}\n`);
