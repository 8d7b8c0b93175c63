import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { waitUntil } from "../../tools/servers/ports.ts";
import { type RedisServer, startRedis } from "../../tools/servers/redis.ts";
import { startGateway, type TestGateway } from "../harness/gateway.ts";

describe("the hot path", () => {
  let redis: RedisServer;
  let gw: TestGateway;
  let probe: Redis;

  beforeAll(async () => {
    redis = await startRedis();
    gw = await startGateway({ backend: "postgres+redis", env: { REDIS_URL: redis.url } });
    probe = new Redis(redis.url);
  });
  afterAll(async () => {
    probe?.disconnect();
    await gw?.close();
    await redis?.stop();
  });

  it("makes at most 2 Redis round trips per integrated call (keys and prices are cached in process)", async () => {
    const org = await gw.org({ credits: "1" });
    await org.client.chat.completions.create({
      model: "gpt-4.1-mini",
      messages: [{ role: "user", content: "warm" }],
    });
    await gw.services.flusher.stop(); // its reads are background work, not the calls'
    // MONITOR shows every command a client sends; commands run inside a script show as "lua".
    const monitor = await probe.monitor();
    let commands = 0;
    const marker = `round-trips-${Date.now()}`;
    let markerSeen = false;
    monitor.on("monitor", (_time: string, args: string[], source: string) => {
      if (args[1] === marker) markerSeen = true;
      // The epoch poll (every 250 ms: has Redis lost its data?) is each instance's, not a call's.
      else if (source !== "lua" && !String(args[1] ?? "").endsWith(":epoch")) commands += 1;
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
    // MONITOR reports commands in the order Redis ran them: once it shows one sent after the last
    // call, it has shown every command of the calls.
    await probe.echo(marker);
    await waitUntil("the monitor to catch up", async () => markerSeen);
    monitor.disconnect();
    expect(commands / calls).toBeLessThanOrEqual(2);
    expect(commands / calls).toBeGreaterThanOrEqual(2); // reserve and settle: the count is real
    gw.services.flusher.start();
  });
});
