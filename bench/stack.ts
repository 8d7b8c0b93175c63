import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { freePort } from "../tools/servers/ports.ts";
import { startPostgres } from "../tools/servers/postgres.ts";
import { startRedis } from "../tools/servers/redis.ts";
import { findPid } from "./cpu.ts";

/**
 * What the benchmarks run against: a real Redis and Postgres, the mock upstream, the gateway with
 * full metering on and an org with credits and a key, each in a process of its own; optionally
 * the bare node:http pipe proxy to the same mock, as the baseline.
 */
export interface GatewayStack {
  mockUrl: string;
  gatewayUrl: string;
  gatewayPid: number;
  /** The bare proxy's URL, when asked for. */
  bareUrl: string | undefined;
  redisUrl: string;
  pgUrl: string;
  /** An api key of an integrated org with credits (holds and debits). */
  key: string;
  orgId: string;
  /** An api key of a BYO org (calls send x-planto-provider-key; nothing is held or debited). */
  byoKey: string;
  /** The pids whose CPU the benchmarks account for, by name. */
  pids: Record<string, number | undefined>;
  stop(): Promise<void>;
}

const ADMIN_TOKEN = "bench-admin-token";
/** /metrics wants a bearer token (METRICS_TOKEN); the benches scrape it with this one. */
export const METRICS_TOKEN = "bench-metrics-token";

/** Starts a tsx child and resolves with the first JSON line it prints that has `key`. */
function startChild(
  children: ChildProcess[],
  args: string[],
  env: Record<string, string>,
  key: string,
  nodeFlags: string[] = [],
): Promise<Record<string, unknown>> {
  // Built JavaScript runs as it is (as `npm start` runs the gateway); TypeScript through tsx.
  const loader = args[0]?.endsWith(".js") ? [] : ["--import", "tsx"];
  const child = spawn(process.execPath, [...nodeFlags, ...loader, ...args], {
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

export async function startGatewayStack(
  opts: { bare?: boolean; gatewayNodeFlags?: string[]; gatewayEnv?: Record<string, string> } = {},
): Promise<GatewayStack> {
  const children: ChildProcess[] = [];
  const killAll = () => {
    for (const child of children) child.kill("SIGKILL");
  };
  process.on("exit", killAll);
  const dataDir = mkdtempSync(join(tmpdir(), "planto-bench-"));
  // BENCH_PG_STATEMENTS=1: Postgres counts its statements (bench/pg-statements.ts prints them).
  const pgStatements = process.env.BENCH_PG_STATEMENTS === "1";
  const [redis, pg] = await Promise.all([
    startRedis(),
    startPostgres(pgStatements ? { settings: { shared_preload_libraries: "pg_stat_statements" } } : {}),
  ]);
  const mock = await startChild(
    children,
    ["tools/mock-upstream/mock-upstream.ts", "--port", "0", "--json"],
    {},
    "url",
  );
  const mockUrl = String(mock.url);
  const bare = opts.bare
    ? await startChild(children, ["bench/bare-proxy.ts", "--upstream", mockUrl], {}, "port")
    : undefined;
  const gatewayPort = await freePort();
  // The gateway as `npm start` runs it: built first, then plain node.
  execFileSync("npm", ["run", "--silent", "build"], { stdio: "inherit" });
  await startChild(
    children,
    ["dist/server.js"],
    {
      PORT: String(gatewayPort),
      HOST: "127.0.0.1",
      DATA_DIR: dataDir,
      ADMIN_TOKEN,
      METRICS_TOKEN,
      OPENAI_BASE_URL: `${mockUrl}/openai/v1`,
      OPENROUTER_BASE_URL: `${mockUrl}/openrouter/v1`,
      OPENAI_API_KEY: "sk-bench",
      LOG_LEVEL: "info",
      REDIS_URL: redis.url,
      DATABASE_URL: pg.url,
      ...opts.gatewayEnv,
    },
    "port",
    opts.gatewayNodeFlags,
  );
  const gatewayChild = children[children.length - 1] as ChildProcess;
  const gatewayUrl = `http://127.0.0.1:${gatewayPort}`;
  const admin = { authorization: `Bearer ${ADMIN_TOKEN}`, "content-type": "application/json" };
  const org = await json(`${gatewayUrl}/admin/orgs`, {
    method: "POST",
    headers: admin,
    body: JSON.stringify({ name: "bench", billingMode: "integrated", isTrial: false }),
  });
  await json(`${gatewayUrl}/admin/orgs/${org.id}/credits`, {
    method: "POST",
    headers: { ...admin, "idempotency-key": "bench-credit" },
    body: JSON.stringify({ amount: "1000000", creditType: "admin_grant" }),
  });
  const key = await json(`${gatewayUrl}/admin/orgs/${org.id}/api-keys`, { method: "POST", headers: admin });
  // An org that brings its own provider key: no hold and no debit, only its usage recorded.
  const byoOrg = await json(`${gatewayUrl}/admin/orgs`, {
    method: "POST",
    headers: admin,
    body: JSON.stringify({ name: "bench byo", billingMode: "byo", isTrial: false }),
  });
  const byoKey = await json(`${gatewayUrl}/admin/orgs/${byoOrg.id}/api-keys`, {
    method: "POST",
    headers: admin,
  });
  return {
    mockUrl,
    gatewayUrl,
    gatewayPid: gatewayChild.pid as number,
    bareUrl: bare ? `http://127.0.0.1:${bare.port}` : undefined,
    redisUrl: redis.url,
    pgUrl: pg.url,
    key: String(key.key),
    byoKey: String(byoKey.key),
    orgId: String(org.id),
    pids: {
      mock: children[0]?.pid,
      "bare proxy": bare ? children[1]?.pid : undefined,
      gateway: gatewayChild.pid,
      redis: findPid(["redis-server", `:${redis.port}`]),
      postgres: findPid(["bin/postgres", `-p ${pg.port}`]),
    },
    async stop() {
      // The gateway settles, flushes (and writes a profile, if asked) on SIGTERM: wait for it.
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
      process.off("exit", killAll);
      await Promise.all([redis.stop(), pg.destroy()]);
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}
