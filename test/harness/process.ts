import { type ChildProcess, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { freePort } from "../../tools/servers/ports.ts";
import { ADMIN_TOKEN } from "./gateway.ts";

export interface GatewayProcess {
  url: string;
  child: ChildProcess;
  logs: Record<string, unknown>[];
  exited: Promise<number | null>;
}

/** Runs `npm start`'s entry as a real process, as an operator would, and waits until it listens. */
export async function spawnGateway(env: Record<string, string>): Promise<GatewayProcess> {
  const port = await freePort();
  // Gateways of one deployment (one database) share a DATA_DIR, so one takes over the settle
  // journal another left, as on a shared volume; other tests' gateways never see it.
  const dataDir = env.DATABASE_URL
    ? join(tmpdir(), `planto-gw-${createHash("sha256").update(env.DATABASE_URL).digest("hex").slice(0, 12)}`)
    : undefined;
  const child = spawn(process.execPath, ["--import", "tsx", "src/server.ts"], {
    env: {
      ...process.env,
      PORT: String(port),
      HOST: "127.0.0.1",
      LOG_LEVEL: "info",
      // A busy test machine is slow, not down (see harness/gateway.ts); fault tests set their own.
      DB_TIMEOUT_MS: "10000",
      ...(dataDir ? { DATA_DIR: dataDir } : {}),
      // These gateways are not pointed at a mock OpenRouter: no list to load from the internet.
      OPENROUTER_MODELS_REFRESH_MS: "0",
      ...env,
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const logs: Record<string, unknown>[] = [];
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  process.once("exit", () => child.kill("SIGKILL"));
  await new Promise<void>((resolve, reject) => {
    child.once("exit", (code) => reject(new Error(`gateway exited with ${code} before listening`)));
    createInterface({ input: child.stdout! }).on("line", (line) => {
      try {
        const entry = JSON.parse(line) as Record<string, unknown>;
        logs.push(entry);
        if (entry.msg === "listening") resolve();
      } catch {
        // not a log line
      }
    });
  });
  return { url: `http://127.0.0.1:${port}`, child, logs, exited };
}

/** Calls a gateway's admin API (ADMIN_TOKEN of the test harness). */
export async function adminCall<T>(
  url: string,
  method: string,
  path: string,
  body?: unknown,
  headers: Record<string, string> = {},
): Promise<{ status: number; body: T }> {
  const res = await fetch(`${url}${path}`, {
    method,
    headers: { authorization: `Bearer ${ADMIN_TOKEN}`, "content-type": "application/json", ...headers },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: res.status, body: (await res.json()) as T };
}

/** A new org on a running gateway, optionally with an api key. */
export async function createOrgOn(
  url: string,
  opts: { isTrial: boolean },
): Promise<{ id: string; key: string }> {
  const org = await adminCall<{ id: string }>(url, "POST", "/admin/orgs", {
    name: "test org",
    billingMode: "integrated",
    isTrial: opts.isTrial,
  });
  const key = await adminCall<{ key: string }>(url, "POST", `/admin/orgs/${org.body.id}/api-keys`);
  return { id: org.body.id, key: key.body.key };
}

/** `n` gateways on one database and Redis: the first migrates, the others start after it together. */
export async function spawnGateways(env: Record<string, string>, n: number): Promise<GatewayProcess[]> {
  const first = await spawnGateway(env);
  return [first, ...(await Promise.all(Array.from({ length: n - 1 }, () => spawnGateway(env))))];
}

/** SIGTERM to each gateway (they settle and flush), and waits until all have exited. */
export async function stopGateways(gateways: GatewayProcess[]): Promise<void> {
  for (const g of gateways) g.child.kill("SIGTERM");
  await Promise.all(gateways.map((g) => g.exited));
}
