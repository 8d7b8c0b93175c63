import autocannon from "autocannon";
import { Agent, request } from "undici";
import { createRedisStore } from "../src/metering/redis-store.ts";
import { cpuSample, treeCpuByTitle } from "./cpu.ts";
import { pgStatements, type StatementStats } from "./pg-statements.ts";
import { startGatewayStack } from "./stack.ts";

/**
 * `npm run bench`: the same load against (a) the mock upstream directly, (b) a bare node:http pipe
 * proxy to it and (c) the gateway with key auth and full metering on (reserve and settle against a
 * real Redis, the ledger flushed to a real Postgres) and (d) the gateway for a BYO org (key auth,
 * the relay and the usage record, but no hold and no debit: what the metering costs is (c) - (d)),
 * in one run, alternating, so the ratios (c)/(b) and (d)/(b) are measured under the same noise. Prints req/s, p50 and p99 per target, the ratios, the
 * CPU each process spent per request, the flusher's lag while (c) ran, and time to first token
 * through the gateway against the upstream's own.
 *
 * Options (env): BENCH_SECONDS per round (default 5), BENCH_ROUNDS (3), BENCH_CONNECTIONS (32),
 * BENCH_CHUNKS (20), BENCH_MODES (streaming,plain), BENCH_ONLY=gateway (skip the other targets),
 * BENCH_PROFILE=<dir> (write the gateway's CPU profile there), BENCH_GATEWAY_NODE_FLAGS (more
 * flags for the gateway's node, e.g. `--perf-basic-prof` for `perf record`), BENCH_PROMPT_BYTES
 * (0: a one-line prompt; a Planto call carries files, tens of KB of code, and the costs that grow
 * with the body show only with one).
 */
const seconds = Number(process.env.BENCH_SECONDS ?? 5);
const rounds = Number(process.env.BENCH_ROUNDS ?? 3);
const connections = Number(process.env.BENCH_CONNECTIONS ?? 32);
const chunks = Number(process.env.BENCH_CHUNKS ?? 20);
const only = process.env.BENCH_ONLY;
const profileDir = process.env.BENCH_PROFILE;
const modes = (process.env.BENCH_MODES ?? "streaming,plain").split(",") as ("streaming" | "plain")[];
const promptBytes = Number(process.env.BENCH_PROMPT_BYTES ?? 0);
/** A prompt of about `bytes` of source code: quotes, backslashes and newlines, which JSON escapes. */
const codePrompt = (bytes: number) => {
  const line = 'if (line.startsWith("data:")) out.push(prefix + "\\n" + JSON.stringify({ a: [1, 2] }));\n';
  return `Here is the file:\n${line.repeat(Math.ceil(bytes / line.length))}`;
};
const prompt = promptBytes > 0 ? codePrompt(promptBytes) : "Say something twenty tokens long.";

type Result = {
  /** Redis's own accounting (INFO commandstats) while this ran: command → [calls, µs]. */
  redisCommands?: Map<string, [number, number]>;
  /** Postgres's statements before and after (BENCH_PG_STATEMENTS=1). */
  pg?: [StatementStats, StatementStats];
  /** Postgres's CPU ms by process while this ran (BENCH_PG_STATEMENTS=1). */
  pgProcesses?: Map<string, number>;
  rps: number;
  p50: number;
  p99: number;
  errors: number;
  requests: number;
  cpu: Record<string, number>;
};

const stack = await startGatewayStack({
  bare: true,
  gatewayNodeFlags: [
    ...(profileDir ? ["--cpu-prof", `--cpu-prof-dir=${profileDir}`] : []),
    ...(process.env.BENCH_GATEWAY_NODE_FLAGS ?? "").split(" ").filter(Boolean),
  ],
});
const auth = { authorization: `Bearer ${stack.key}` };
const byo = { authorization: `Bearer ${stack.byoKey}`, "x-planto-provider-key": "sk-byo-bench" };

/** Redis's per-command totals; commands run inside scripts are counted under their own names too. */
async function commandStats(): Promise<Map<string, [number, number]>> {
  const text = await ledger.client.info("commandstats");
  const out = new Map<string, [number, number]>();
  for (const m of text.matchAll(/^cmdstat_(\S+):calls=(\d+),usec=(\d+)/gm))
    out.set(m[1] as string, [Number(m[2]), Number(m[3])]);
  return out;
}

const statements = pgStatements(stack.pgUrl);

async function load(url: string, headers: Record<string, string>, body: string): Promise<Result> {
  const pgBefore = await statements?.snapshot();
  const pgPid = stack.pids.postgres;
  const pgCpuBefore = statements && pgPid ? treeCpuByTitle(pgPid) : undefined;
  const before = await commandStats();
  const cpu = cpuSample(stack.pids);
  const result = await autocannon({
    url,
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body,
    connections,
    duration: seconds,
  });
  const cpuUsed = cpu();
  const after = await commandStats();
  const pgCpuAfter = pgCpuBefore && pgPid ? treeCpuByTitle(pgPid) : undefined;
  const pgAfter = await statements?.snapshot();
  const redisCommands = new Map<string, [number, number]>();
  for (const [name, [calls, usec]] of after) {
    const [c0, u0] = before.get(name) ?? [0, 0];
    if (calls > c0) redisCommands.set(name, [calls - c0, usec - u0]);
  }
  return {
    redisCommands,
    pg: pgBefore && pgAfter ? [pgBefore, pgAfter] : undefined,
    pgProcesses:
      pgCpuBefore && pgCpuAfter
        ? new Map([...pgCpuAfter].map(([title, ms]) => [title, ms - (pgCpuBefore.get(title) ?? 0)]))
        : undefined,
    rps: result.requests.average,
    p50: result.latency.p50,
    p99: result.latency.p99,
    errors: result.errors + result.non2xx + result.timeouts,
    requests: result.requests.total,
    cpu: cpuUsed,
  };
}

/** Samples the age of the oldest unflushed ledger event every 100 ms while `during` runs. */
const ledger = createRedisStore({ url: stack.redisUrl });
const lagSamples: number[] = [];
async function sampleLag<T>(during: Promise<T>): Promise<T> {
  let running = true;
  const sampler = (async () => {
    while (running) {
      const { oldestMs } = await ledger.ledgerLag();
      lagSamples.push(oldestMs === null ? 0 : Math.max(0, Date.now() - oldestMs));
      await new Promise((r) => setTimeout(r, 100));
    }
  })();
  try {
    return await during;
  } finally {
    running = false;
    await sampler;
  }
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? 0;
const percentile = (xs: number[], p: number) =>
  [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((xs.length * p) / 100))] ?? 0;

const table: Record<string, Record<string, Result[]>> = {};
for (const mode of modes) {
  const body = JSON.stringify({
    model: "gpt-4.1-mini",
    messages: [{ role: "user", content: prompt }],
    stream: mode === "streaming",
    mock: { chunks },
  });
  const targets: Record<string, [string, Record<string, string>]> = {
    "(a) mock upstream": [`${stack.mockUrl}/openai/v1/chat/completions`, {}],
    "(b) bare node:http proxy": [`${stack.bareUrl}/openai/v1/chat/completions`, {}],
    "(c) gateway": [`${stack.gatewayUrl}/v1/chat/completions`, auth],
    "(d) gateway, BYO key": [`${stack.gatewayUrl}/v1/chat/completions`, byo],
  };
  if (only) for (const name of Object.keys(targets)) if (!name.includes(only)) delete targets[name];
  const results: Record<string, Result[]> = {};
  table[mode] = results;
  await load(`${stack.gatewayUrl}/v1/chat/completions`, auth, body); // warm-up: JIT, pools, caches
  for (let round = 0; round < rounds; round++) {
    for (const [name, [url, headers]] of Object.entries(targets)) {
      const run = load(url, headers, body);
      const r = name === "(c) gateway" ? await sampleLag(run) : await run;
      results[name] = [...(results[name] ?? []), r];
      process.stderr.write(`${mode} round ${round + 1} ${name}: ${r.rps.toFixed(0)} req/s\n`);
    }
  }
}

/**
 * Time to first token at a load that does not saturate the machine (8 connections, a chunk every
 * 5 ms, as a model streams): from sending the request to the first content chunk, directly from
 * the mock and through the gateway, alternating.
 */
async function firstTokens(url: string, headers: Record<string, string>, ms: number): Promise<number[]> {
  const dispatcher = new Agent({ connections: 8 });
  const body = JSON.stringify({
    model: "gpt-4.1-mini",
    messages: [{ role: "user", content: "Say something." }],
    stream: true,
    mock: { chunks: 20, delayMs: 5 },
  });
  const out: number[] = [];
  const until = performance.now() + ms;
  await Promise.all(
    Array.from({ length: 8 }, async () => {
      while (performance.now() < until) {
        const t = performance.now();
        const res = await request(url, {
          method: "POST",
          headers: { "content-type": "application/json", ...headers },
          body,
          dispatcher,
        });
        let first: number | undefined;
        for await (const chunk of res.body) {
          if (first === undefined && (chunk as Buffer).includes('"content"')) first = performance.now() - t;
        }
        if (first !== undefined && res.statusCode === 200) out.push(first);
      }
    }),
  );
  await dispatcher.close();
  return out;
}
// The bare proxy's own figure shows what one more process hop costs on this machine: the gateway
// has that hop, plus its Redis round trip.
const ttft = { upstream: [] as number[], bare: [] as number[], gateway: [] as number[], byo: [] as number[] };
if (!only) {
  for (let round = 0; round < rounds; round++) {
    ttft.upstream.push(...(await firstTokens(`${stack.mockUrl}/openai/v1/chat/completions`, {}, 3000)));
    ttft.bare.push(...(await firstTokens(`${stack.bareUrl}/openai/v1/chat/completions`, {}, 3000)));
    ttft.gateway.push(...(await firstTokens(`${stack.gatewayUrl}/v1/chat/completions`, auth, 3000)));
    // A BYO call takes no hold: the difference to the metered figure is the reserve's round trip.
    ttft.byo.push(...(await firstTokens(`${stack.gatewayUrl}/v1/chat/completions`, byo, 3000)));
  }
}

/** Each process tree's CPU over the target's rounds, per request served; idle parts left out. */
const cpuPerRequest = (rs: Result[]) => {
  const requests = rs.reduce((n, r) => n + r.requests, 0) || 1;
  const totals: Record<string, number> = {};
  for (const r of rs) for (const [name, ms] of Object.entries(r.cpu)) totals[name] = (totals[name] ?? 0) + ms;
  const parts = Object.entries(totals)
    .map(([name, ms]) => [name, (ms * 1000) / requests] as const)
    .filter(([, us]) => us >= 1);
  const sum = parts.reduce((n, [, us]) => n + us, 0);
  return `${parts.map(([name, us]) => `${name} ${us.toFixed(0)}`).join(", ")} (all ${sum.toFixed(0)})`;
};

/** Redis's commands per request and the µs it spent in each (a script's inner calls are also listed). */
const redisPerRequest = (rs: Result[]): string => {
  const requests = rs.reduce((n, r) => n + r.requests, 0) || 1;
  const totals = new Map<string, [number, number]>();
  for (const r of rs)
    for (const [name, [calls, usec]] of r.redisCommands ?? []) {
      const [c, u] = totals.get(name) ?? [0, 0];
      totals.set(name, [c + calls, u + usec]);
    }
  return (
    [...totals]
      // A rare command can still cost much per call (a flusher's stream read of hundreds of entries).
      .filter(
        ([name, [calls, usec]]) => (calls / requests >= 0.05 || usec / requests >= 0.3) && name !== "info",
      )
      .sort((a, b) => b[1][1] - a[1][1])
      .map(([name, [calls, usec]]) => `${name} ${(calls / requests).toFixed(2)}×${(usec / calls).toFixed(1)}`)
      .join(", ")
  );
};

/** One process's CPU per request in each round of a target, in µs. */
const perRound = (rs: Result[] | undefined, proc: string): number[] =>
  (rs ?? []).map((r) => ((r.cpu[proc] ?? 0) * 1000) / (r.requests || 1));

/**
 * Issue 13's table: each figure is the median over rounds, and the gateway's ratios are taken round
 * by round against the bare proxy's round next to it (same noise), then the median of those.
 */
function targetTable(): string[] {
  const streaming = table.streaming ?? table[modes[0] ?? "streaming"] ?? {};
  const bare = perRound(streaming["(b) bare node:http proxy"], "bare proxy");
  const metered = perRound(streaming["(c) gateway"], "gateway");
  const byoCalls = perRound(streaming["(d) gateway, BYO key"], "gateway");
  const ratio = (xs: number[]) => median(xs.map((x, i) => x / (bare[i] || Number.NaN)));
  const rows: [string, string, string, boolean | undefined][] = [];
  const fmt = (n: number, unit: string) =>
    Number.isFinite(n) ? `${n.toFixed(unit === "×" ? 2 : 0)}${unit}` : "—";
  if (metered.length && bare.length) {
    const r = ratio(metered);
    rows.push([
      "gateway CPU per streamed metered call",
      `${fmt(median(metered), " µs")} = ${fmt(r, "×")} bare (${fmt(median(bare), " µs")})`,
      "≤ 2.0×",
      r <= 2.0,
    ]);
  }
  if (byoCalls.length && bare.length) {
    const r = ratio(byoCalls);
    rows.push([
      "gateway CPU per BYO call (streamed)",
      `${fmt(median(byoCalls), " µs")} = ${fmt(r, "×")}`,
      "≤ 1.6×",
      r <= 1.6,
    ]);
  }
  for (const proc of ["redis", "postgres"]) {
    const us = median(perRound(streaming["(c) gateway"], proc));
    if (streaming["(c) gateway"])
      rows.push([`${proc} CPU per metered call`, fmt(us, " µs"), "≤ 40 µs", us <= 40]);
  }
  if (ttft.gateway.length && ttft.bare.length) {
    const added = percentile(ttft.gateway, 50) - percentile(ttft.bare, 50);
    rows.push([
      "added time to first token p50, over the bare proxy",
      `+${added.toFixed(2)} ms`,
      "≤ +1.0 ms",
      added <= 1.0,
    ]);
  }
  if (lagSamples.length) {
    const p99 = percentile(lagSamples, 99);
    rows.push(["flusher lag p99 while (c) ran", `${p99} ms`, "< 1,000 ms (keep)", p99 < 1000]);
  }
  rows.push([
    "memory (npm run bench:memory)",
    "not measured here",
    "≤ 300 MB; ≤ 1.1× after 200k (keep)",
    undefined,
  ]);
  const widths = [0, 1, 2].map((i) => Math.max(...rows.map((row) => String(row[i]).length), 6));
  const line = (cells: string[]) => `| ${cells.map((c, i) => c.padEnd(widths[i] ?? 0)).join(" | ")} |`;
  return [
    `targets of issue 13 (medians of ${rounds} rounds, streaming):`,
    `${line(["what", "measured", "target"])} met |`,
    `${line(widths.map((w) => "-".repeat(w)))} --- |`,
    ...rows.map(
      ([what, got, target, met]) =>
        `${line([what, got, target])} ${met === undefined ? " " : met ? "yes" : "no "} |`,
    ),
  ];
}

const lines = [
  `connections=${connections} chunks=${chunks} ${rounds}×${seconds}s per target, alternating`,
  "",
];
for (const [mode, targets] of Object.entries(table)) {
  lines.push(`${mode}:`);
  for (const [name, rs] of Object.entries(targets)) {
    const errors = rs.reduce((n, r) => n + r.errors, 0);
    const rps = median(rs.map((r) => r.rps)).toFixed(0);
    const p50 = median(rs.map((r) => r.p50)).toFixed(1);
    const p99 = median(rs.map((r) => r.p99)).toFixed(1);
    lines.push(
      `  ${name.padEnd(26)} ${rps.padStart(7)} req/s  p50 ${p50} ms  p99 ${p99} ms${errors ? `  errors ${errors}` : ""}`,
    );
    lines.push(`      CPU µs per request: ${cpuPerRequest(rs)}`);
    const redis = redisPerRequest(rs);
    if (redis) lines.push(`      Redis's own time per request (commandstats, calls × µs): ${redis}`);
    // Other targets' rounds fall between a target's, so this reads its last round only.
    const last = rs[rs.length - 1];
    if (statements && last?.pg) {
      lines.push("      Postgres statements in its last round (pg_stat_statements, per request):");
      for (const l of statements.perRequest(last.pg[0], last.pg[1], last.requests || 1).slice(0, 8))
        lines.push(`        ${l}`);
      const byProcess = [...(last.pgProcesses ?? [])]
        .filter(([, ms]) => ms > 0)
        .sort((a, b) => b[1] - a[1])
        .map(([title, ms]) => `${title} ${((ms * 1000) / (last.requests || 1)).toFixed(1)}`);
      lines.push(`      Postgres CPU µs per request by process, last round: ${byProcess.join(", ")}`);
    }
  }
  const baseline = targets["(b) bare node:http proxy"];
  for (const [label, name] of [
    ["(c)/(b)", "(c) gateway"],
    ["(d)/(b)", "(d) gateway, BYO key"],
  ] as const) {
    const runs = targets[name];
    if (!baseline || !runs) continue;
    const ratios = runs.map((r, i) => r.rps / (baseline[i]?.rps ?? 1));
    lines.push(
      `  ratio ${label}: ${median(ratios).toFixed(2)}× (per round: ${ratios.map((r) => r.toFixed(2)).join(", ")})`,
    );
  }
  lines.push("");
}
if (lagSamples.length) {
  lines.push(
    `flusher lag while (c) ran (age of the oldest unflushed ledger event, ${lagSamples.length} samples): p50 ${percentile(lagSamples, 50)} ms, p99 ${percentile(lagSamples, 99)} ms, max ${Math.max(...lagSamples)} ms`,
  );
}
if (ttft.gateway.length && ttft.upstream.length) {
  const up = percentile(ttft.upstream, 50);
  const gw = percentile(ttft.gateway, 50);
  const bare = percentile(ttft.bare, 50);
  lines.push(
    `time to first token at 8 connections, a chunk every 5 ms: upstream p50 ${up.toFixed(2)} ms, through the bare proxy p50 ${bare.toFixed(2)} ms (+${(bare - up).toFixed(2)} ms), through the gateway p50 ${gw.toFixed(2)} ms (+${(gw - up).toFixed(2)} ms); p99 ${percentile(ttft.upstream, 99).toFixed(2)} / ${percentile(ttft.bare, 99).toFixed(2)} / ${percentile(ttft.gateway, 99).toFixed(2)} ms`,
    `  BYO calls (no hold) through the gateway p50 ${percentile(ttft.byo, 50).toFixed(2)} ms (+${(percentile(ttft.byo, 50) - up).toFixed(2)} ms)`,
  );
}
lines.push("", ...targetTable());
process.stdout.write(`${lines.join("\n")}\n`);
await ledger.close();
await statements?.close();
await stack.stop();
process.exit(0);
