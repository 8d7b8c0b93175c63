import { randomUUID } from "node:crypto";
import { encodeCallEvent } from "../src/metering/events.ts";
import { createRedisStore } from "../src/metering/redis-store.ts";
import { debitEvent } from "../test/harness/events.ts";
import { startRedis } from "../tools/servers/redis.ts";
import { findPid, treeCpuMs } from "./cpu.ts";

/**
 * `npx tsx bench/redis-calls.ts`: Redis's own CPU (from /proc) per metered call — a reserve and a
 * settle, as the gateway sends them, 32 at a time — and per BYO usage event, without the rest of
 * the gateway around it (so the machine's noise moves it less). BENCH_CALLS (default 20,000),
 * BENCH_CONCURRENCY (default 32: the settles of calls in flight together share one settle.lua).
 * BENCH_PERF=<file>: also `perf record` Redis while the calls run.
 */
const total = Number(process.env.BENCH_CALLS ?? 20_000);
const concurrency = Number(process.env.BENCH_CONCURRENCY ?? 32);
// REDIS_URL: a Redis started by hand (e.g. under `valgrind --tool=callgrind`, for instruction counts
// that the machine's load does not move).
const redis = process.env.REDIS_URL ? undefined : await startRedis();
const url = process.env.REDIS_URL ?? (redis as { url: string }).url;
const pid = findPid(["redis-server", `:${new URL(url).port}`]) as number;
const store = createRedisStore({ url });
const orgId = `org_${randomUUID()}`;
await store.loadBalance({ orgId, balance: 1_000_000_000_000_000 });
const event = (id: string, amount: number) =>
  encodeCallEvent(
    debitEvent(orgId, amount, { id, base: 1175, surcharge: 59, inputTokens: 812, outputTokens: 20 }),
  );
async function metered(i: number) {
  const requestId = `req_${randomUUID().replaceAll("-", "")}`;
  const nowMs = Date.now();
  await store.reserve({ orgId, requestId, amount: 50_000, ttlMs: 900_000, nowMs, budget: undefined });
  await store.settle({
    orgId,
    requestId,
    cost: 1234 + (i % 7),
    event: event(requestId, 1234),
    monthStart: 1_764_547_200_000,
    rebuyLease: { nowMs, ttlMs: 300_000 },
  });
}
async function byo() {
  const requestId = `req_${randomUUID().replaceAll("-", "")}`;
  await store.appendEvent({ orgId, event: event(requestId, 0) });
}
async function run(name: string, one: (i: number) => Promise<void>) {
  for (let i = 0; i < 2000; i += concurrency)
    await Promise.all(Array.from({ length: concurrency }, (_, j) => one(i + j)));
  const cpu = treeCpuMs(pid);
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < total) await one(next++);
    }),
  );
  process.stdout.write(
    `${name}: redis ${(((treeCpuMs(pid) - cpu) * 1000) / total).toFixed(1)} µs per call\n`,
  );
}
const perfFile = process.env.BENCH_PERF;
let perf: import("node:child_process").ChildProcess | undefined;
if (perfFile) {
  const { spawn } = await import("node:child_process");
  perf = spawn("perf", ["record", "-g", "-o", perfFile, "-p", String(pid)], { stdio: "ignore" });
  await new Promise((r) => setTimeout(r, 500));
}
await run("metered (reserve + settle)", metered);
if (perf) {
  perf.kill("SIGINT");
  await new Promise((r) => perf?.once("exit", r));
}
await run("BYO (usage event)", byo);
await store.close();
await redis?.stop();
process.exit(0);
