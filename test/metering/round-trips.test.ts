import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { waitUntil } from "../../tools/servers/ports.ts";
import { type RedisServer, startRedis } from "../../tools/servers/redis.ts";
import { startGateway, type TestGateway } from "../harness/gateway.ts";

/** The Redis commands 50 calls of one org send, by what they are (scripts told apart by key count). */
async function commandsOf(gw: TestGateway, probe: Redis) {
  const org = await gw.org({ credits: "1" });
  await org.client.chat.completions.create({
    model: "gpt-4.1-mini",
    messages: [{ role: "user", content: "warm" }],
  });
  await gw.services.meter.idle();
  await gw.services.flusher.stop(); // its reads are background work, not the calls'
  // MONITOR shows every command a client sends; commands run inside a script show as "lua".
  const monitor = await probe.monitor();
  const seen = { reserve: 0, settle: 0, pool: 0, other: 0 };
  const marker = `round-trips-${Date.now()}`;
  let markerSeen = false;
  monitor.on("monitor", (_time: string, args: string[], source: string) => {
    if (args[1] === marker) markerSeen = true;
    // The epoch poll (every 250 ms: has Redis lost its data?) is each instance's, not a call's.
    else if (source === "lua" || String(args[1] ?? "").endsWith(":epoch")) return;
    else if (String(args[0]).toLowerCase() !== "evalsha") seen.other += 1;
    // settle.lua has 2 keys and 3 per call it settles, reserve.lua 4 (6 with rate limits),
    // reserve_many.lua and release.lua 3.
    else if (Number(args[2]) >= 5 && (Number(args[2]) - 2) % 3 === 0)
      seen.settle += (Number(args[2]) - 2) / 3;
    else if (args[2] === "4" || args[2] === "6") seen.reserve += 1;
    else seen.pool += 1;
  });
  const calls = 50;
  for (let i = 0; i < calls; i++) {
    const stream = await org.client.chat.completions.create({
      model: "gpt-4.1-mini",
      messages: [{ role: "user", content: "hi" }],
      stream: i % 2 === 0,
    });
    if (Symbol.asyncIterator in stream) for await (const _ of stream) void _;
  }
  await gw.services.meter.idle();
  // MONITOR reports commands in the order Redis ran them: once it shows one sent after the last
  // call, it has shown every command of the calls.
  await probe.echo(marker);
  await waitUntil("the monitor to catch up", async () => markerSeen);
  monitor.disconnect();
  gw.services.flusher.start();
  return { calls, ...seen };
}

describe("the hot path's Redis round trips (keys and prices are cached in process)", () => {
  // A Redis each: MONITOR sees every client of its server.
  let redis: RedisServer[] = [];
  let pooled: TestGateway;
  let unpooled: TestGateway;
  let probes: Redis[] = [];

  beforeAll(async () => {
    redis = await Promise.all([startRedis(), startRedis()]);
    const [a, b] = redis as [RedisServer, RedisServer];
    [pooled, unpooled] = await Promise.all([
      startGateway({ backend: "postgres+redis", env: { REDIS_URL: a.url } }),
      startGateway({ backend: "postgres+redis", env: { REDIS_URL: b.url, HOLD_POOL_SIZE: "0" } }),
    ]);
    probes = [new Redis(a.url), new Redis(b.url)];
  });
  afterAll(async () => {
    for (const probe of probes) probe.disconnect();
    await pooled?.close();
    await unpooled?.close();
    await Promise.all(redis.map((r) => r.stop()));
  });

  it("with the hold pool, calls go upstream without a round trip first: one settle each, holds made 8 at a time", async () => {
    const seen = await commandsOf(pooled, probes[0] as Redis);
    expect(seen.settle).toBe(seen.calls);
    expect(seen.other).toBe(0);
    // A refill every 4 calls or so (the pool asks again when half its 8 holds are used), sent while
    // the pool still has 4: a call reserves alone only if it finds the pool empty, which on a busy
    // machine can happen when a refill's answer is late.
    expect(seen.pool).toBeGreaterThan(0);
    expect(seen.reserve).toBeLessThan(seen.calls / 10);
    expect(seen.pool + seen.reserve + seen.settle).toBeLessThanOrEqual(1.5 * seen.calls);
  });

  it("without it (HOLD_POOL_SIZE=0), each call makes exactly 2: its reserve and its settle", async () => {
    const seen = await commandsOf(unpooled, probes[1] as Redis);
    expect(seen).toEqual({ calls: 50, reserve: 50, settle: 50, pool: 0, other: 0 });
  });
});
