import type { ChildProcess } from "node:child_process";
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { spawnServer, stopChild } from "../servers/children.ts";
import { freePort } from "../servers/ports.ts";
import { type PostgresServer, startPostgres } from "../servers/postgres.ts";
import { type RedisServer, startRedis } from "../servers/redis.ts";
import type { LoadtestOptions } from "./options.ts";

/** Where the load goes, with what key, and whether its books can be checked. */
export interface Target {
  kind: "self-contained" | "url";
  url: string;
  key: string;
  /** What the gateway runs on, as far as the tool knows. */
  backends: string;
  /** Why the books are or are not checked. */
  books: { enabled: boolean; reason: string };
  orgId: string | undefined;
  /** Things the operator should know (fallbacks taken, orgs made). */
  notes: string[];
  /** Tears down what the tool started or made; `keepOrg` keeps a made org for inspection. */
  close(opts: { keepOrg: boolean }): Promise<string[]>;
}

type Log = (line: string) => void;
type Json = Record<string, unknown>;

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..");

async function adminCall(
  url: string,
  token: string,
  method: string,
  path: string,
  body?: unknown,
  headers = {},
) {
  const res = await fetch(`${url}${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json", ...headers },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(30_000),
  });
  const text = await res.text();
  let json: Json = {};
  try {
    json = JSON.parse(text) as Json;
  } catch {
    // reported below with the text
  }
  if (!res.ok) {
    const message = (json.error as Json | undefined)?.message ?? text.slice(0, 200);
    throw new Error(`${method} ${path}: ${res.status} ${String(message)}`);
  }
  return json;
}

/** An integrated, paid org with `credits` USD of admin credit and a fresh api key. */
async function makeOrg(url: string, token: string, name: string, credits: string, runId: string) {
  const org = await adminCall(url, token, "POST", "/admin/orgs", {
    name,
    billingMode: "integrated",
    isTrial: false,
  });
  const id = String(org.id);
  await adminCall(
    url,
    token,
    "POST",
    `/admin/orgs/${id}/credits`,
    { amount: credits, creditType: "admin_grant" },
    { "idempotency-key": `loadtest-${runId}` },
  );
  const key = await adminCall(url, token, "POST", `/admin/orgs/${id}/api-keys`);
  return { id, key: String(key.key) };
}

/** Fails fast on a key the gateway refuses, instead of a run of nothing but 401s. */
async function checkKey(url: string, key: string): Promise<void> {
  const res = await fetch(`${url}/billing/balance`, {
    headers: { authorization: `Bearer ${key}` },
    signal: AbortSignal.timeout(30_000),
  });
  await res.arrayBuffer();
  if (res.status === 401) throw new Error(`${url} refused the api key (401)`);
}

/** A gateway someone else runs. */
export async function urlTarget(opts: LoadtestOptions, runId: string, log: Log): Promise<Target> {
  const url = opts.url as string;
  const notes: string[] = [];
  let key = opts.key;
  let orgId: string | undefined;
  let books: Target["books"];
  if (!key && opts.adminToken) {
    const org = await makeOrg(url, opts.adminToken, `loadtest ${runId}`, opts.credits, runId);
    key = org.key;
    orgId = org.id;
    notes.push(`made org ${org.id} with $${opts.credits} of admin credit for this run`);
    books = { enabled: true, reason: "on the org the tool made" };
  } else if (opts.adminToken) {
    books = {
      enabled: true,
      reason:
        "on the key's org (it must see no other traffic during the run, or its debits count as unexpected)",
    };
  } else {
    books = {
      enabled: false,
      reason: "skipped: give --admin-token so the tool can check the books of an org of its own",
    };
  }
  await checkKey(url, key as string);
  log(`target ${url}${orgId ? `, org ${orgId}` : ""}`);
  return {
    kind: "url",
    url,
    key: key as string,
    backends: "remote",
    books,
    orgId,
    notes,
    async close({ keepOrg }) {
      if (!orgId || !opts.adminToken) return [];
      if (keepOrg) return [`kept org ${orgId}`];
      await adminCall(url, opts.adminToken, "DELETE", `/admin/orgs/${orgId}`);
      return [`deleted org ${orgId}`];
    },
  };
}

function hasRedis(): boolean {
  try {
    execFileSync("redis-server", ["--version"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

function hasPostgres(): boolean {
  try {
    execFileSync("pg_config", ["--bindir"], { stdio: "ignore" });
    return true;
  } catch {
    const root = "/usr/lib/postgresql";
    return existsSync(root) && readdirSync(root).length > 0;
  }
}

/** Runs a TypeScript entry of this project as a child in its own process group. */
function tsChild(entry: string, args: string[], env: Record<string, string>, stdout: "pipe" | "ignore") {
  return spawnServer(process.execPath, ["--import", "tsx", join(ROOT, entry), ...args], {
    cwd: ROOT,
    env: { ...process.env, ...env },
    stdio: ["ignore", stdout, "pipe"],
  });
}

/** Keeps the last few KB a child wrote to stderr, for the message when it dies. */
function stderrTail(child: ChildProcess): () => string {
  let tail = "";
  child.stderr?.setEncoding("utf8");
  child.stderr?.on("data", (s: string) => {
    tail = (tail + s).slice(-4000);
  });
  return () => tail.trim();
}

async function startMock(): Promise<{ child: ChildProcess; baseUrls: Record<string, string> }> {
  const child = tsChild("tools/mock-upstream/mock-upstream.ts", ["--port", "0", "--json"], {}, "pipe");
  const tail = stderrTail(child);
  const line = await new Promise<string>((resolve, reject) => {
    const onExit = (code: number | null) => reject(new Error(`mock upstream exited (${code}): ${tail()}`));
    child.once("exit", onExit);
    child.once("error", reject);
    const lines = createInterface({ input: child.stdout! });
    lines.once("line", (first) => {
      child.off("exit", onExit);
      lines.close();
      child.stdout?.resume(); // nothing more comes; never let the pipe fill
      resolve(first);
    });
  });
  const parsed = JSON.parse(line) as Record<string, string>;
  return {
    child,
    baseUrls: {
      openai: parsed.openai ?? "",
      openrouter: parsed.openrouter ?? "",
      relace: parsed.relace ?? "",
    },
  };
}

async function waitReady(url: string, child: ChildProcess, tail: () => string, timeoutMs = 90_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(
        `the gateway exited (${child.exitCode ?? child.signalCode}) before it was ready: ${tail()}`,
      );
    }
    try {
      const res = await fetch(`${url}/readyz`, { signal: AbortSignal.timeout(2_000) });
      await res.arrayBuffer();
      if (res.ok) return;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline)
      throw new Error(`the gateway was not ready within ${timeoutMs / 1000} s: ${tail()}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/**
 * Everything on this machine: a real Redis and Postgres (the test harness's starters) unless their
 * binaries are missing or --embedded is given, the mock upstream and a gateway as child processes
 * (so the load generator does not share their event loop), and a paid org with credits.
 */
export async function selfContainedTarget(opts: LoadtestOptions, runId: string, log: Log): Promise<Target> {
  const notes: string[] = [];
  const cleanups: Array<() => Promise<void>> = [];
  const dataDir = mkdtempSync(join(tmpdir(), "planto-loadtest-"));
  cleanups.push(async () => rmSync(dataDir, { recursive: true, force: true }));
  const teardown = async () => {
    for (const step of cleanups.reverse()) await step().catch(() => undefined);
  };
  try {
    let redis: RedisServer | undefined;
    let pg: PostgresServer | undefined;
    if (opts.embedded) {
      notes.push("--embedded: the gateway runs on its embedded defaults (in-process metering, PGlite)");
    } else {
      const [wantRedis, wantPg] = [hasRedis(), hasPostgres()];
      if (!wantRedis) notes.push("no redis-server on this machine: the gateway meters in process instead");
      if (!wantPg)
        notes.push("no PostgreSQL binaries on this machine: the gateway uses embedded PGlite instead");
      log(
        `starting ${[wantRedis && "Redis", wantPg && "Postgres", "the mock upstream"].filter(Boolean).join(", ")}`,
      );
      const [r, p] = await Promise.allSettled([
        wantRedis ? startRedis() : undefined,
        wantPg ? startPostgres() : undefined,
      ]);
      // One that would not start is no reason to give up: the embedded default does the same job.
      if (r.status === "fulfilled" && r.value) {
        redis = r.value;
        cleanups.push(() => r.value!.stop());
      } else if (r.status === "rejected") {
        notes.push(`Redis would not start (${String(r.reason)}): the gateway meters in process instead`);
      }
      if (p.status === "fulfilled" && p.value) {
        pg = p.value;
        cleanups.push(() => p.value!.destroy());
      } else if (p.status === "rejected") {
        notes.push(
          `Postgres would not start (${String(p.reason)}): the gateway uses embedded PGlite instead`,
        );
      }
    }
    const mock = await startMock();
    cleanups.push(() => stopChild(mock.child));

    const port = await freePort();
    const adminToken = randomBytes(18).toString("base64url");
    const env: Record<string, string> = {
      PORT: String(port),
      HOST: "127.0.0.1",
      DATA_DIR: dataDir,
      ADMIN_TOKEN: adminToken,
      OPENAI_BASE_URL: mock.baseUrls.openai ?? "",
      OPENROUTER_BASE_URL: mock.baseUrls.openrouter ?? "",
      RELACE_BASE_URL: mock.baseUrls.relace ?? "",
      OPENAI_API_KEY: "sk-loadtest",
      OPENROUTER_API_KEY: "sk-or-loadtest",
      RELACE_API_KEY: "rlc-loadtest",
      MARKUP_BPS: String(opts.markupBps),
      LOG_LEVEL: "info",
      ...(redis ? { REDIS_URL: redis.url } : {}),
      ...(pg ? { DATABASE_URL: pg.url } : {}),
    };
    // stdout (one JSON line per call) goes to /dev/null: reading it here would load the generator.
    const gateway = tsChild("src/server.ts", [], env, "ignore");
    const tail = stderrTail(gateway);
    cleanups.push(() => stopChild(gateway, "SIGTERM", 30_000));
    const url = `http://127.0.0.1:${port}`;
    log("starting the gateway");
    await waitReady(url, gateway, tail);
    const org = await makeOrg(url, adminToken, "loadtest", opts.credits, runId);
    const backends = [redis ? "Redis" : "in-process metering", pg ? "Postgres" : "PGlite"].join(" + ");
    log(`gateway ${url} on ${backends}, org ${org.id} with $${opts.credits}`);
    return {
      kind: "self-contained",
      url,
      key: org.key,
      backends,
      books: { enabled: true, reason: "on the org the tool made" },
      orgId: org.id,
      notes,
      async close() {
        await teardown();
        return [];
      },
    };
  } catch (err) {
    await teardown();
    throw err;
  }
}
