import type { ChildProcess } from "node:child_process";
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Redis } from "ioredis";
import { spawnServer, stopChild } from "./children.ts";
import { freePort, sleep, waitUntil } from "./ports.ts";

export interface RedisServer {
  url: string;
  port: number;
  stop(): Promise<void>;
  /** Stops and starts again on the same port with an empty dataset (a restart without persistence). */
  restart(): Promise<void>;
  /**
   * `SHUTDOWN NOSAVE` as an operator (or an OOM-killed container) would, then starts again on the
   * same port with an empty dataset. Resolves once the new server answers.
   */
  shutdownNosave(): Promise<void>;
}

async function ping(port: number): Promise<boolean> {
  const client = new Redis({
    port,
    host: "127.0.0.1",
    lazyConnect: true,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
  });
  client.on("error", () => {});
  try {
    await client.connect();
    return (await client.ping()) === "PONG";
  } finally {
    client.disconnect();
  }
}

function launch(port: number, dir: string, extra: string[] = []): ChildProcess {
  return spawnServer("redis-server", [
    "--port",
    String(port),
    "--bind",
    "127.0.0.1",
    "--save",
    "",
    "--appendonly",
    "no",
    "--dir",
    dir,
    "--daemonize",
    "no",
    ...extra,
  ]);
}

/** A real redis-server on a free loopback port, owned by this test run. */
export async function startRedis(opts: { port?: number } = {}): Promise<RedisServer> {
  const port = opts.port ?? (await freePort());
  const dir = mkdtempSync(join(tmpdir(), "planto-redis-"));
  let child = launch(port, dir);
  await waitUntil(`redis on ${port}`, () => ping(port));
  return {
    url: `redis://127.0.0.1:${port}`,
    port,
    async stop() {
      await stopChild(child);
      rmSync(dir, { recursive: true, force: true });
    },
    async restart() {
      await stopChild(child, "SIGKILL");
      child = launch(port, dir);
      await waitUntil(`redis on ${port}`, () => ping(port));
    },
    async shutdownNosave() {
      const dying = child;
      const exited = new Promise<void>((resolve) => {
        if (dying.exitCode !== null || dying.signalCode !== null) resolve();
        else dying.once("exit", () => resolve());
      });
      const client = new Redis({
        port,
        host: "127.0.0.1",
        maxRetriesPerRequest: 0,
        retryStrategy: () => null,
      });
      client.on("error", () => {});
      // The server closes the connection instead of answering.
      await client.call("SHUTDOWN", "NOSAVE").catch(() => undefined);
      client.disconnect();
      await exited;
      child = launch(port, dir);
      await waitUntil(`redis on ${port}`, () => ping(port));
    },
  };
}

export interface RedisCluster {
  /** As REDIS_CLUSTER_NODES takes it: "127.0.0.1:p1,127.0.0.1:p2,…". */
  nodes: string;
  ports: number[];
  stop(): Promise<void>;
}

/** A Redis Cluster of `masters` nodes (3 by default), all slots assigned, state ok. */
export async function startRedisCluster(opts: { masters?: number } = {}): Promise<RedisCluster> {
  const masters = opts.masters ?? 3;
  const dir = mkdtempSync(join(tmpdir(), "planto-cluster-"));
  const ports: number[] = [];
  for (let i = 0; i < masters; i++) ports.push(await freePort());
  const children = ports.map((port) =>
    launch(port, dir, [
      "--cluster-enabled",
      "yes",
      "--cluster-config-file",
      join(dir, `nodes-${port}.conf`),
      "--cluster-node-timeout",
      "2000",
    ]),
  );
  for (const port of ports) await waitUntil(`redis cluster node ${port}`, () => ping(port));
  execFileSync(
    "redis-cli",
    [
      "--cluster",
      "create",
      ...ports.map((p) => `127.0.0.1:${p}`),
      "--cluster-replicas",
      "0",
      "--cluster-yes",
    ],
    { stdio: "ignore" },
  );
  for (const port of ports) {
    await waitUntil(`cluster state ok on ${port}`, async () => {
      const client = new Redis({ port, host: "127.0.0.1", lazyConnect: true, maxRetriesPerRequest: 0 });
      client.on("error", () => {});
      try {
        await client.connect();
        return String(await client.cluster("INFO")).includes("cluster_state:ok");
      } finally {
        client.disconnect();
      }
    });
  }
  await sleep(200);
  return {
    nodes: ports.map((p) => `127.0.0.1:${p}`).join(","),
    ports,
    async stop() {
      await Promise.all(children.map((c) => stopChild(c)));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
