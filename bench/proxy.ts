import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import autocannon from "autocannon";
import { startPostgres } from "../test/harness/postgres.ts";
import { startRedis } from "../test/harness/redis.ts";
import { cpuSample, findPid } from "./cpu.ts";

/**
 * `npm run bench`: the same load against (a) the mock upstream directly, (b) a bare node:http pipe
 * proxy to it and (c) the gateway with key auth on, in one run, alternating, so the ratio (c)/(b)
 * is measured under the same machine noise. Prints req/s, p50 and p99 per target and the ratios.
 *
 * Options (env): BENCH_SECONDS per round (default 5), BENCH_ROUNDS (3), BENCH_CONNECTIONS (32),
 * BENCH_CHUNKS (20).
 */
const seconds = Number(process.env.BENCH_SECONDS ?? 5);
const rounds = Number(process.env.BENCH_ROUNDS ?? 3);
const connections = Number(process.env.BENCH_CONNECTIONS ?? 32);
const chunks = Number(process.env.BENCH_CHUNKS ?? 20);
const ADMIN_TOKEN = "bench-admin-token";
/** BENCH_ONLY=gateway skips the other targets; BENCH_PROFILE=<dir> writes the gateway's CPU profile there. */
const only = process.env.BENCH_ONLY;
const profileDir = process.env.BENCH_PROFILE;
const nodeFlags = (args: string[]) =>
  profileDir && args[0] === "src/server.ts" ? ["--cpu-prof", `--cpu-prof-dir=${profileDir}`] : [];

const children: ChildProcess[] = [];
process.on("exit", () => {
  for (const child of children) child.kill("SIGKILL");
});

/** Starts a tsx child and resolves with the first JSON line it prints that has `key`. */
function startChild(
  args: string[],
  env: Record<string, string>,
  key: string,
): Promise<Record<string, unknown>> {
  const child = spawn(process.execPath, [...nodeFlags(args), "--import", "tsx", ...args], {
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "inherit"],
  });
  children.push(child);
  return new Promise((resolve, reject) => {
    child.once("exit", (code) => reject(new Error(`${args.join(" ")} exited with ${code}`)));
    const lines = createInterface({ input: child.stdout! });
    lines.on("line", (line) => {
      try {
        const parsed = JSON.parse(line) as Record<string, unknown>;
        if (!(key in parsed)) return;
        // From here on the child's output (the gateway's call log) is drained unread: parsing it
        // here would take CPU from the load generator in the gateway's rounds only.
        lines.close();
        child.stdout!.resume();
        resolve(parsed);
      } catch {
        // not a JSON line
      }
    });
  });
}

async function json(url: string, init: RequestInit): Promise<Record<string, unknown>> {
  const res = await fetch(url, init);
  if (!res.ok) throw new Error(`${init.method} ${url}: ${res.status} ${await res.text()}`);
  return (await res.json()) as Record<string, unknown>;
}

type Result = {
  rps: number;
  p50: number;
  p99: number;
  errors: number;
  requests: number;
  cpu: Record<string, number>;
};

let cpuGroups: Record<string, number | undefined> = {};

async function load(url: string, headers: Record<string, string>, body: string): Promise<Result> {
  const cpu = cpuSample(cpuGroups);
  const result = await autocannon({
    url,
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body,
    connections,
    duration: seconds,
  });
  return {
    rps: result.requests.average,
    p50: result.latency.p50,
    p99: result.latency.p99,
    errors: result.errors + result.non2xx + result.timeouts,
    requests: result.requests.total,
    cpu: cpu(),
  };
}

async function main(): Promise<void> {
  const dataDir = mkdtempSync(join(tmpdir(), "planto-bench-"));
  // Full metering: reserve and settle against a real Redis, the ledger flushed to a real Postgres.
  const [redis, pg] = await Promise.all([startRedis(), startPostgres()]);
  const mock = await startChild(["src/dev/mock-upstream.ts", "--port", "0", "--json"], {}, "url");
  const mockUrl = String(mock.url);
  const bare = await startChild(["bench/bare-proxy.ts", "--upstream", mockUrl], {}, "port");
  const gatewayPort = 18000 + Math.floor(Math.random() * 2000);
  await startChild(
    ["src/server.ts"],
    {
      PORT: String(gatewayPort),
      HOST: "127.0.0.1",
      DATA_DIR: dataDir,
      ADMIN_TOKEN,
      OPENAI_BASE_URL: `${mockUrl}/openai/v1`,
      OPENAI_API_KEY: "sk-bench",
      LOG_LEVEL: "info",
      REDIS_URL: redis.url,
      DATABASE_URL: pg.url,
    },
    "port",
  );
  const gateway = `http://127.0.0.1:${gatewayPort}`;
  cpuGroups = {
    mock: children[0]?.pid,
    "bare proxy": children[1]?.pid,
    gateway: children[2]?.pid,
    redis: findPid(["redis-server", `:${redis.port}`]),
    postgres: findPid(["bin/postgres", `-p ${pg.port}`]),
  };
  const admin = { authorization: `Bearer ${ADMIN_TOKEN}`, "content-type": "application/json" };
  const org = await json(`${gateway}/admin/orgs`, {
    method: "POST",
    headers: admin,
    body: JSON.stringify({ name: "bench", billingMode: "integrated", isTrial: false }),
  });
  await json(`${gateway}/admin/orgs/${org.id}/credits`, {
    method: "POST",
    headers: { ...admin, "idempotency-key": "bench-credit" },
    body: JSON.stringify({ amount: "1000000", creditType: "admin_grant" }),
  }).catch(() => undefined);
  const key = await json(`${gateway}/admin/orgs/${org.id}/api-keys`, { method: "POST", headers: admin });
  const auth = { authorization: `Bearer ${String(key.key)}` };

  const table: Record<string, Record<string, Result[]>> = {};
  const modes = (process.env.BENCH_MODES ?? "streaming,plain").split(",") as ("streaming" | "plain")[];
  for (const mode of modes) {
    const body = JSON.stringify({
      model: "gpt-4.1-mini",
      messages: [{ role: "user", content: "Say something twenty tokens long." }],
      stream: mode === "streaming",
      mock: { chunks },
    });
    const targets: Record<string, [string, Record<string, string>]> = {
      "(a) mock upstream": [`${mockUrl}/openai/v1/chat/completions`, {}],
      "(b) bare node:http proxy": [`http://127.0.0.1:${bare.port}/openai/v1/chat/completions`, {}],
      "(c) gateway": [`${gateway}/v1/chat/completions`, auth],
    };
    if (only) for (const name of Object.keys(targets)) if (!name.includes(only)) delete targets[name];
    table[mode] = {};
    await load(targets["(c) gateway"]![0], auth, body); // warm-up: JIT, pools, caches
    for (let round = 0; round < rounds; round++) {
      for (const [name, [url, headers]] of Object.entries(targets)) {
        const r = await load(url, headers, body);
        const results = table[mode][name] ?? [];
        results.push(r);
        table[mode][name] = results;
        process.stderr.write(`${mode} round ${round + 1} ${name}: ${r.rps.toFixed(0)} req/s\n`);
      }
    }
  }

  /** Each process tree's CPU over the target's rounds, per request served; idle parts left out. */
  const cpuPerRequest = (rs: Result[]) => {
    const requests = rs.reduce((n, r) => n + r.requests, 0) || 1;
    const totals: Record<string, number> = {};
    for (const r of rs)
      for (const [name, ms] of Object.entries(r.cpu)) totals[name] = (totals[name] ?? 0) + ms;
    const parts = Object.entries(totals)
      .map(([name, ms]) => [name, (ms * 1000) / requests] as const)
      .filter(([, us]) => us >= 1);
    const sum = parts.reduce((n, [, us]) => n + us, 0);
    return `${parts.map(([name, us]) => `${name} ${us.toFixed(0)}`).join(", ")} (all ${sum.toFixed(0)})`;
  };
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? 0;
  const lines = [
    `connections=${connections} chunks=${chunks} ${rounds}×${seconds}s per target, alternating`,
    "",
  ];
  for (const [mode, targets] of Object.entries(table)) {
    lines.push(`${mode}:`);
    for (const [name, rs] of Object.entries(targets)) {
      const errors = rs.reduce((n, r) => n + r.errors, 0);
      lines.push(
        `  ${name.padEnd(26)} ${median(rs.map((r) => r.rps))
          .toFixed(0)
          .padStart(
            7,
          )} req/s  p50 ${median(rs.map((r) => r.p50)).toFixed(1)} ms  p99 ${median(rs.map((r) => r.p99)).toFixed(1)} ms${errors ? `  errors ${errors}` : ""}`,
      );
      lines.push(`      CPU µs per request: ${cpuPerRequest(rs)}`);
    }
    const baseline = targets["(b) bare node:http proxy"];
    const gatewayRuns = targets["(c) gateway"];
    if (!baseline || !gatewayRuns) continue;
    const ratios = gatewayRuns.map((r, i) => r.rps / (baseline[i]?.rps ?? 1));
    lines.push(
      `  ratio (c)/(b): ${median(ratios).toFixed(2)}× (per round: ${ratios.map((r) => r.toFixed(2)).join(", ")})`,
    );
    lines.push("");
  }
  process.stdout.write(`${lines.join("\n")}\n`);
  // The gateway settles, flushes (and writes its profile) on SIGTERM: wait for every child to exit.
  await Promise.all(
    children.map(
      (child) =>
        new Promise<void>((resolve) => {
          if (child.exitCode !== null) return resolve();
          child.removeAllListeners("exit");
          child.once("exit", () => resolve());
          child.kill("SIGTERM");
        }),
    ),
  );
  await Promise.all([redis.stop(), pg.destroy()]);
  rmSync(dataDir, { recursive: true, force: true });
}

await main();
process.exit(0);
