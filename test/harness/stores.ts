import { createMemoryStore } from "../../src/metering/memory-store.ts";
import { createRedisStore } from "../../src/metering/redis-store.ts";
import type { MeteringStore } from "../../src/metering/store.ts";
import { startRedis, startRedisCluster } from "../../tools/servers/redis.ts";

export type StoreKind = "memory" | "redis" | "cluster";

/**
 * A metering store of one kind on a Redis (or cluster) of its own, not the run's shared one: acking
 * deletes stream entries, which would take them from under the flushers of gateway tests running at
 * the same time. `stop` closes the store and its servers.
 */
export async function startStore(kind: StoreKind): Promise<{ store: MeteringStore; stop(): Promise<void> }> {
  if (kind === "memory") {
    const store = createMemoryStore();
    return { store, stop: () => store.close() };
  }
  const server = kind === "redis" ? await startRedis() : await startRedisCluster();
  const store =
    "url" in server
      ? createRedisStore({ url: server.url })
      : createRedisStore({ clusterNodes: server.nodes });
  return {
    store,
    async stop() {
      await store.close();
      await server.stop();
    },
  };
}
