import type { ChildProcess } from "node:child_process";
import { execFileSync } from "node:child_process";
import { chmodSync, chownSync, existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import postgres from "postgres";
import { spawnServer, stopChild } from "./children.ts";
import { freePort, waitUntil } from "./ports.ts";

export interface PostgresServer {
  url: string;
  port: number;
  stop(): Promise<void>;
  /** Starts again after stop(), same port and data ("Postgres down for 30 s"). */
  start(): Promise<void>;
  createDatabase(name: string): Promise<string>;
  /** Removes the data directory; the server must be stopped. */
  destroy(): Promise<void>;
}

function binDir(): string {
  try {
    return execFileSync("pg_config", ["--bindir"], { encoding: "utf8" }).trim();
  } catch {
    const root = "/usr/lib/postgresql";
    const versions = existsSync(root) ? readdirSync(root).sort((a, b) => Number(b) - Number(a)) : [];
    if (!versions[0]) throw new Error("no PostgreSQL binaries found (apt-get install postgresql)");
    return join(root, versions[0], "bin");
  }
}

/** Postgres refuses to run as root: run it as the `postgres` user then. */
function asPostgresUser(bin: string, args: string[]): [string, string[]] {
  return process.getuid?.() === 0 ? ["runuser", ["-u", "postgres", "--", bin, ...args]] : [bin, args];
}

function postgresUid(): { uid: number; gid: number } {
  const uid = Number(execFileSync("id", ["-u", "postgres"], { encoding: "utf8" }).trim());
  const gid = Number(execFileSync("id", ["-g", "postgres"], { encoding: "utf8" }).trim());
  return { uid, gid };
}

async function canQuery(url: string): Promise<boolean> {
  const sql = postgres(url, { max: 1, connect_timeout: 2, onnotice: () => {} });
  try {
    await sql`select 1`;
    return true;
  } finally {
    await sql.end({ timeout: 1 });
  }
}

/** A real Postgres on a free loopback port, initialised in a temp dir and owned by this run. */
export async function startPostgres(
  opts: {
    port?: number;
    /** More server settings (`-c name=value`), e.g. the benches' pg_stat_statements. */
    settings?: Record<string, string>;
  } = {},
): Promise<PostgresServer> {
  const bin = binDir();
  const port = opts.port ?? (await freePort());
  const dir = mkdtempSync(join(tmpdir(), "planto-pg-"));
  const data = join(dir, "data");
  if (process.getuid?.() === 0) {
    const { uid, gid } = postgresUid();
    chownSync(dir, uid, gid);
    chmodSync(dir, 0o700);
  }
  const [initCmd, initArgs] = asPostgresUser(join(bin, "initdb"), [
    "-D",
    data,
    "-U",
    "postgres",
    "--auth=trust",
    "--no-sync",
    "-E",
    "UTF8",
  ]);
  execFileSync(initCmd, initArgs, { stdio: "ignore" });
  const url = `postgres://postgres@127.0.0.1:${port}/postgres`;
  let child: ChildProcess | undefined;
  const start = async () => {
    const [cmd, args] = asPostgresUser(join(bin, "postgres"), [
      "-D",
      data,
      "-p",
      String(port),
      "-c",
      "listen_addresses=127.0.0.1",
      "-c",
      `unix_socket_directories=${dir}`,
      "-c",
      "fsync=off",
      "-c",
      "synchronous_commit=off",
      "-c",
      "full_page_writes=off",
      "-c",
      "max_connections=300",
      ...Object.entries(opts.settings ?? {}).flatMap(([name, value]) => ["-c", `${name}=${value}`]),
    ]);
    child = spawnServer(cmd, args);
    await waitUntil(`postgres on ${port}`, () => canQuery(url), 30_000);
  };
  await start();
  return {
    url,
    port,
    start,
    async stop() {
      // SIGINT is Postgres's fast shutdown; runuser passes it on.
      if (child) await stopChild(child, "SIGINT");
      child = undefined;
    },
    async createDatabase(name) {
      const sql = postgres(url, { max: 1, onnotice: () => {} });
      try {
        await sql.unsafe(`create database "${name.replace(/"/g, "")}"`);
      } finally {
        await sql.end({ timeout: 1 });
      }
      return `postgres://postgres@127.0.0.1:${port}/${name}`;
    },
    async destroy() {
      if (child) await stopChild(child, "SIGINT");
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
