import { createMemoryStore } from "./memory-store.ts";
import { createRedisStore } from "./redis-store.ts";
import type { MeteringStore } from "./store.ts";

export type { LedgerEntry, MeteringStore, ReserveOutcome } from "./store.ts";

/**
 * The metering store the configuration asks for: Redis Cluster when REDIS_CLUSTER_NODES is set (it
 * wins over REDIS_URL, being the more specific), one Redis at REDIS_URL, else the in-process store,
 * which is right for a single instance only (the caller says so in its start-up log).
 */
export function createMeteringStore(config: {
  REDIS_URL?: string;
  REDIS_CLUSTER_NODES?: string;
  REDIS_KEY_PREFIX?: string;
}): {
  store: MeteringStore;
  kind: MeteringStore["kind"];
} {
  const store =
    config.REDIS_CLUSTER_NODES || config.REDIS_URL
      ? createRedisStore({
          url: config.REDIS_URL,
          clusterNodes: config.REDIS_CLUSTER_NODES,
          keyPrefix: config.REDIS_KEY_PREFIX,
        })
      : createMemoryStore();
  return { store, kind: store.kind };
}
