import { readFileSync } from "node:fs";
import { Agent, request } from "undici";
import { cpuSample } from "./cpu.ts";
import { METRICS_TOKEN, startGatewayStack } from "./stack.ts";

/**
 * `npm run bench:memory`: the gateway's resident memory (RSS, from /proc) under two loads, with
 * full metering on (real Redis and Postgres):
 *
 * 1. BENCH_SLOW_STREAMS (2,000) concurrent slow streams, one chunk per 100 ms for 30 s: the
 *    highest RSS seen while they are open (target < 300 MB).
 * 2. BENCH_CALLS (200,000) calls at 32 connections after a warm-up of 20,000: RSS after them
 *    over RSS after the warm-up (target ≤ 1.1×), i.e. nothing kept per call.
 */
const slowStreams = Number(process.env.BENCH_SLOW_STREAMS ?? 2_000);
const slowSeconds = Number(process.env.BENCH_SLOW_SECONDS ?? 30);
const calls = Number(process.env.BENCH_CALLS ?? 200_000);
const warmup = Number(process.env.BENCH_WARMUP_CALLS ?? 20_000);

function rssMb(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const kb = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0);
  return kb / 1024;
}

/** The gateway's V8 heap and external memory, from its /metrics. */
async function heapOf(gatewayUrl: string): Promise<string> {
  const text = await (
    await fetch(`${gatewayUrl}/metrics`, { headers: { authorization: `Bearer ${METRICS_TOKEN}` } })
  ).text();
  const mb = (name: string) => Number(new RegExp(`^${name} (\\S+)`, "m").exec(text)?.[1] ?? 0) / 2 ** 20;
  return `heap used ${mb("planto_nodejs_heap_size_used_bytes").toFixed(0)} MB of ${mb("planto_nodejs_heap_size_total_bytes").toFixed(0)}, external ${mb("planto_nodejs_external_memory_bytes").toFixed(0)} MB`;
}

const stack = await startGatewayStack({
  gatewayNodeFlags: (process.env.BENCH_GATEWAY_NODE_FLAGS ?? "").split(" ").filter(Boolean),
});
const pid = stack.gatewayPid;
const dispatcher = new Agent({ connections: slowStreams + 16, keepAliveTimeout: 60_000 });
const url = `${stack.gatewayUrl}/v1/chat/completions`;
const headers = { "content-type": "application/json", authorization: `Bearer ${stack.key}` };

/** One streamed call, read to its end; resolves with whether it was a 200. */
async function call(mock: Record<string, unknown>): Promise<boolean> {
  const res = await request(url, {
    method: "POST",
    headers,
    dispatcher,
    body: JSON.stringify({
      model: "gpt-4.1-mini",
      messages: [{ role: "user", content: "Say something long." }],
      stream: true,
      mock,
    }),
  });
  for await (const _ of res.body) {
    // read to the end
  }
  return res.statusCode === 200;
}

const lines: string[] = [];
try {
  // 1. Concurrent slow streams.
  const idle = rssMb(pid);
  let peak = idle;
  let peakHeap = "";
  const sampler = setInterval(() => {
    const rss = rssMb(pid);
    if (rss <= peak) return;
    peak = rss;
    heapOf(stack.gatewayUrl).then((h) => {
      peakHeap = h;
    });
  }, 250);
  const chunks = Math.round((slowSeconds * 1000) / 100);
  const cpu = cpuSample(stack.pids);
  const started = performance.now();
  if (process.env.BENCH_HEAP_SNAPSHOT) {
    setTimeout(() => process.kill(pid, "SIGUSR2"), (slowSeconds * 1000) / 2).unref();
  }
  const results = await Promise.all(
    Array.from({ length: slowStreams }, () => call({ chunks, delayMs: 100 }).catch(() => false)),
  );
  clearInterval(sampler);
  const used = cpu();
  const elapsed = (performance.now() - started) / 1000;
  const ok = results.filter(Boolean).length;
  lines.push(
    `${slowStreams} concurrent streams, a chunk every 100 ms for ${slowSeconds} s (took ${elapsed.toFixed(0)} s, ${ok} ok):`,
    `  CPU, % of one core: ${Object.entries(used)
      .filter(([, ms]) => ms > 0)
      .map(([name, ms]) => `${name} ${(ms / 10 / elapsed).toFixed(0)}%`)
      .join(", ")}`,
    `  RSS idle ${idle.toFixed(0)} MB, peak ${peak.toFixed(0)} MB (target < 300 MB)${peakHeap ? `; near the peak ${peakHeap}` : ""}`,
  );

  // 2. Many calls: RSS after them against RSS after a warm-up.
  const run = async (n: number) => {
    let next = 0;
    let failed = 0;
    await Promise.all(
      Array.from({ length: 32 }, async () => {
        while (next < n) {
          next += 1;
          if (!(await call({ chunks: 20 }).catch(() => false))) failed += 1;
        }
      }),
    );
    return failed;
  };
  const failedWarmup = await run(warmup);
  await new Promise((r) => setTimeout(r, 2_000)); // let the flusher and GC settle
  const afterWarmup = rssMb(pid);
  const t = performance.now();
  const failed = await run(calls);
  const seconds = (performance.now() - t) / 1000;
  await new Promise((r) => setTimeout(r, 2_000));
  const after = rssMb(pid);
  lines.push(
    `${calls} calls at 32 connections after a warm-up of ${warmup} (${(calls / seconds).toFixed(0)} req/s, ${failed + failedWarmup} failed):`,
    `  RSS after warm-up ${afterWarmup.toFixed(0)} MB, after the calls ${after.toFixed(0)} MB: ${(after / afterWarmup).toFixed(2)}× (target ≤ 1.1×)`,
  );
} finally {
  await dispatcher.close();
  await stack.stop();
}
process.stdout.write(`${lines.join("\n")}\n`);
process.exit(0);
