import { createHash, randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import { Cluster, Redis } from "ioredis";
import { hasLimits, RATE_WINDOW_MS, type RateCheck, rateStateFromReply, windowStart } from "./rate-limit.ts";
import {
  assertNanos,
  DONE_TTL_SECONDS,
  type LedgerEntry,
  type MeteringStore,
  pooledBatchOf,
  SHARDS,
  shardOf,
} from "./store.ts";

const SCRIPTS = {
  reserve: 6,
  reserve_lean: 4,
  reserve_many: 3,
  release: 3,
  credit: 3,
  load: 1,
  reclaim: 1,
  trial: 6,
  trial_end: 6,
  trial_load: 3,
  rate: 2,
  rate_settle: 2,
} as const;
/** Scripts that call rate_admit: rate_lib.lua is prepended to them (Redis scripts cannot include). */
const WITH_RATE_LIB: ReadonlySet<string> = new Set(["reserve", "reserve_lean", "rate"]);
/**
 * reserve.lua again, declared with the 4 keys a call without rate limits needs: a declared key is a
 * Lua string made per call (reserve.lua's docblock).
 */
const SOURCE_OF: Partial<Record<string, string>> = { reserve_lean: "reserve" };
type ScriptName = keyof typeof SCRIPTS;

type Client = Redis | Cluster;
type Reply = number | string | null | Reply[];
type ScriptCaller = (...args: (string | number)[]) => Promise<Reply>;

/** Keys of an org, all under its shard's hash tag so every script touches one cluster slot. */
function keysIn(namespace: string, orgId: string) {
  const shard = shardOf(orgId);
  const prefix = shardPrefix(namespace, shard);
  return {
    shard,
    prefix,
    org: `${prefix}o:${orgId}`,
    holds: `${prefix}h:${orgId}`,
    expiry: `${prefix}hx`,
    ledger: `${prefix}ledger`,
    done: (id: string) => `${prefix}done:${id}`,
    trialPlans: `${prefix}tp:${orgId}`,
    trialCounts: `${prefix}tr:${orgId}`,
    trialInFlight: `${prefix}tf:${orgId}`,
    trialSlots: `${prefix}ti:${orgId}`,
    rateOrg: `${prefix}rl:o:${orgId}`,
    rateKey: (keyId: string) => `${prefix}rl:k:${keyId}`,
  };
}

/** `<ns>:{<ns>:<shard>}:`: the hash tag puts a shard's keys and its ledger stream in one cluster slot. */
const shardPrefix = (namespace: string, shard: number) => `${namespace}:{${namespace}:${shard}}:`;

/** The rate arguments of reserve.lua and rate.lua (see rate_lib.lua); -1 for a limit not set. */
function rateArgs(rate: RateCheck, nowMs: number): number[] {
  const start = windowStart(nowMs);
  const lim = (n: number | null | undefined) => n ?? -1;
  return [
    start,
    start + RATE_WINDOW_MS - nowMs,
    RATE_WINDOW_MS,
    lim(rate.org.requestsPerMinute),
    lim(rate.org.tokensPerMinute),
    lim(rate.key.requestsPerMinute),
    lim(rate.key.tokensPerMinute),
    rate.tokens,
  ];
}

/**
 * A hold's entry in the expiry set: its own, or, for a pooled hold, its batch's, which only the last
 * hold of the batch removes ("": the scripts leave it).
 */
function expiryMember(orgId: string, holdId: string, lastOfBatch: boolean | undefined): string {
  const batch = pooledBatchOf(holdId);
  if (!batch) return `${orgId}\n${holdId}`;
  return lastOfBatch ? `${orgId}\n${batch}` : "";
}

/** Most calls one settle.lua runs: a script blocks its Redis node while it runs. */
const SETTLES_PER_SCRIPT = 32;

type SettleCall = Parameters<MeteringStore["settle"]>[0];
type SettleResult = Awaited<ReturnType<MeteringStore["settle"]>>;
interface QueuedSettle {
  call: SettleCall;
  resolve(result: SettleResult): void;
  reject(err: unknown): void;
}

/** When the auto-recharge lease a settle may take ends (ms since epoch); no lease never ends. */
function rebuyLeaseEnd(lease: SettleCall["rebuyLease"]): number {
  return lease ? lease.nowMs + lease.ttlMs : Number.MAX_SAFE_INTEGER;
}

function num(v: Reply | undefined): number {
  return typeof v === "number" ? v : Number(v ?? 0);
}

/** Redis (one server, or a cluster with REDIS_CLUSTER_NODES) behind the MeteringStore interface. */
export function createRedisStore(opts: {
  url?: string;
  clusterNodes?: string;
  commandTimeoutMs?: number;
  /** Namespace of every key, so deployments (or test gateways) can share one Redis (default "pg"). */
  keyPrefix?: string;
}): MeteringStore & { client: Client } {
  const namespace = opts.keyPrefix ?? "pg";
  const keys = (orgId: string) => keysIn(namespace, orgId);
  const shardKey = (shard: number, name: string) => `${shardPrefix(namespace, shard)}${name}`;
  // Auto-pipelining sends the commands of one tick in one write: under load, one syscall for many
  // calls' reserves and settles. A command without an answer in commandTimeoutMs fails instead of
  // queueing behind a dead connection: calls are refused with 503 and settles go to the spool.
  const options = {
    enableAutoPipelining: true,
    maxRetriesPerRequest: 1,
    commandTimeout: opts.commandTimeoutMs ?? 2_000,
    connectTimeout: 2_000,
    retryStrategy: (times: number) => Math.min(times * 100, 1_000),
  };
  const isCluster = Boolean(opts.clusterNodes);
  const client: Client = opts.clusterNodes
    ? new Cluster(
        opts.clusterNodes.split(",").map((hp) => {
          const [host = "127.0.0.1", port = "6379"] = hp.trim().split(":");
          return { host, port: Number(port) };
        }),
        { scaleReads: "master", enableAutoPipelining: true, redisOptions: options },
      )
    : new Redis(opts.url ?? "redis://127.0.0.1:6379", options);
  // Connection errors reach the callers as failed commands (ioredis reconnects by itself); without a
  // listener they would also be printed as unhandled.
  client.on("error", () => {});
  const luaFile = (name: string) => readFileSync(new URL(`./lua/${name}.lua`, import.meta.url), "utf8");
  const rateLib = luaFile("rate_lib");
  for (const [name, numberOfKeys] of Object.entries(SCRIPTS)) {
    const file = SOURCE_OF[name] ?? name;
    const lua = WITH_RATE_LIB.has(name) ? `${rateLib}\n${luaFile(file)}` : luaFile(file);
    client.defineCommand(name, { lua, numberOfKeys });
  }
  const run = (name: ScriptName, ...args: (string | number)[]) =>
    (client as unknown as Record<ScriptName, ScriptCaller>)[name](...args);
  // settle.lua takes 2 keys and 3 per call, so it goes as EVALSHA with its key count: a command
  // defined without one would be routed (on a cluster, and in auto-pipelining) by that count, not
  // by its first key. A Redis that does not have it yet (NOSCRIPT: nothing ran) gets it by EVAL.
  const settleLua = luaFile("settle");
  const settleSha = createHash("sha1").update(settleLua).digest("hex");
  const runSettle = (keys: string[], args: (string | number)[]) =>
    (client.evalsha(settleSha, keys.length, ...keys, ...args) as Promise<Reply>).catch((err: unknown) => {
      if (!(err instanceof Error) || !err.message.startsWith("NOSCRIPT")) throw err;
      return client.eval(settleLua, keys.length, ...keys, ...args) as Promise<Reply>;
    });

  const groups = new Set<string>();
  /** Runs a consumer-group read; after a Redis restart the group is gone, so it is made again. */
  const withGroup = async <T>(group: string, read: () => Promise<T>): Promise<T> => {
    await ensureGroup(group);
    try {
      return await read();
    } catch (err) {
      if (!(err instanceof Error) || !err.message.includes("NOGROUP")) throw err;
      groups.delete(group);
      await ensureGroup(group);
      return read();
    }
  };
  const ensureGroup = async (group: string) => {
    if (groups.has(group)) return;
    await Promise.all(
      Array.from({ length: SHARDS }, (_, shard) =>
        client.xgroup("CREATE", shardKey(shard, "ledger"), group, "0", "MKSTREAM").catch((err: Error) => {
          if (!err.message.includes("BUSYGROUP")) throw err;
        }),
      ),
    );
    groups.add(group);
  };

  const toEntries = (shard: number, raw: [string, string[]][]): LedgerEntry[] =>
    raw.map(([id, fields]) => {
      let event = "";
      let balance: number | undefined;
      for (let i = 0; i < fields.length; i += 2) {
        if (fields[i] === "e") event = fields[i + 1] ?? "";
        else if (fields[i] === "b" && fields[i + 1] !== "") balance = Number(fields[i + 1]);
      }
      return { shard, id, event, balance };
    });

  /** Reads up to `count` new entries from each of `shards`' streams. */
  const readShards = async (group: string, consumer: string, shards: number[], count: number) => {
    const read = async (some: number[]) => {
      const reply = (await client.xreadgroup(
        "GROUP",
        group,
        consumer,
        "COUNT",
        count,
        "STREAMS",
        ...some.map((shard) => shardKey(shard, "ledger")),
        ...some.map(() => ">"),
      )) as [string, [string, string[]][]][] | null;
      return (reply ?? []).map(([key, raw]) => {
        const shard = some[some.findIndex((s) => shardKey(s, "ledger") === key)] ?? 0;
        return { shard, entries: toEntries(shard, raw) };
      });
    };
    // One command for every stream on a single Redis; on a cluster the shards live in different
    // slots, so each is read on its own.
    const replies = isCluster
      ? (await Promise.all(shards.map((shard) => read([shard])))).flat()
      : await read(shards);
    const byShard = new Map(replies.map((r) => [r.shard, r.entries]));
    return shards.map((shard) => ({ shard, entries: byShard.get(shard) ?? [] }));
  };

  /**
   * Splits `count` over the shards, then gives what quiet shards left unused to the shards that
   * filled their share: one busy org (one shard) still drains in full batches, at one more round
   * trip. Entries once read are pending for this consumer, so no round may overshoot by much.
   */
  const readAll = async (group: string, consumer: string, count: number): Promise<LedgerEntry[]> => {
    const out: LedgerEntry[] = [];
    let shards = Array.from({ length: SHARDS }, (_, shard) => shard);
    for (let round = 0; round < 3 && out.length < count && shards.length > 0; round++) {
      const share = Math.max(1, Math.ceil((count - out.length) / shards.length));
      const results = await readShards(group, consumer, shards, share);
      for (const r of results) out.push(...r.entries);
      shards = results.filter((r) => r.entries.length === share).map((r) => r.shard);
    }
    return out;
  };

  // Settles wait for the end of the event loop's turn, then go to Redis one script per org: under
  // load the calls that ended in the same turn share one settle.lua (its own cost is most of a
  // settle's Redis time, README "Benchmarks"), at no added wait. Per org, not per shard: a script
  // that fails midway (an org's hash someone else wrote to) leaves no other org's calls half done.
  const settling = new Map<string, QueuedSettle[]>();
  let settleScheduled = false;
  const sendSettles = () => {
    settleScheduled = false;
    for (const [orgId, queue] of settling) {
      settling.delete(orgId);
      for (let i = 0; i < queue.length; i += SETTLES_PER_SCRIPT)
        settleBatch(queue.slice(i, i + SETTLES_PER_SCRIPT));
    }
  };
  const settleBatch = (batch: QueuedSettle[]) => {
    const shard = shardOf(batch[0]?.call.orgId ?? "");
    const keys: string[] = [shardKey(shard, "hx"), shardKey(shard, "ledger")];
    let nowMs = 0;
    for (const { call } of batch) nowMs = Math.max(nowMs, call.rebuyLease?.nowMs ?? 0);
    const args: (string | number)[] = [DONE_TTL_SECONDS, nowMs];
    for (const { call } of batch) {
      const k = keysIn(namespace, call.orgId);
      // settle.lua finds the hold by its id and its expiry by its member; the done marker is the call's.
      const hold = call.holdId ?? call.requestId;
      keys.push(k.org, k.holds, k.done(call.requestId));
      args.push(
        hold,
        call.cost,
        call.event,
        expiryMember(call.orgId, hold, call.lastOfBatch),
        `m${call.monthStart ?? 0}`,
        // The auto-recharge threshold only for an org that has one.
        call.rebuyBelow === undefined ? "" : `${call.rebuyBelow}:${rebuyLeaseEnd(call.rebuyLease)}`,
      );
    }
    runSettle(keys, args).then(
      (reply) => {
        const out = reply as Reply[];
        batch.forEach(({ resolve }, i) => {
          const status = num(out[3 * i]);
          const settled = { ok: true as const, balance: num(out[3 * i + 1]), duplicate: status === 1 };
          if (status === -1) resolve({ ok: false, reason: "not_loaded" });
          else resolve(num(out[3 * i + 2]) === 1 ? { ...settled, rebuy: true } : settled);
        });
      },
      (err: unknown) => {
        // A bad hold failed the script before it wrote anything: each call alone, so only its own fails.
        if (batch.length > 1 && err instanceof Error && err.message.includes("SETTLE_BAD_HOLD")) {
          for (const one of batch) settleBatch([one]);
        } else for (const { reject } of batch) reject(err);
      },
    );
  };

  return {
    kind: opts.clusterNodes ? "cluster" : "redis",
    client,

    async reserve({ orgId, requestId, amount, ttlMs, nowMs, budget, rate }) {
      assertNanos("reserve amount", amount, 0);
      const k = keys(orgId);
      const rated = rate && (hasLimits(rate.org) || hasLimits(rate.key));
      const head = [k.org, k.holds, k.expiry, k.done(requestId)];
      const args = [requestId, amount, nowMs + ttlMs, `${orgId}\n${requestId}`];
      // Without limits reserve.lua takes no rate keys or arguments and runs no rate step; without a
      // budget either, no budget arguments (each is a string Redis makes and collects per call).
      const reply = (
        rated
          ? await run(
              "reserve",
              ...head,
              k.rateOrg,
              k.rateKey(rate.keyId),
              ...args,
              budget ? budget.max : -1,
              `m${budget?.monthStart ?? 0}`,
              ...rateArgs(rate, nowMs),
            )
          : budget
            ? await run("reserve_lean", ...head, ...args, budget.max, `m${budget.monthStart}`)
            : await run("reserve_lean", ...head, ...args)
      ) as Reply[];
      const [status, balance, held] = reply;
      if (num(status) === -1) return { ok: false, reason: "not_loaded" };
      const state = reply.length > 3 ? rateStateFromReply(reply.slice(3).map(num)) : undefined;
      if (num(status) === 3)
        return {
          ok: false,
          reason: "rate_limited",
          balance: num(balance),
          held: num(held),
          rate: state ?? {},
        };
      if (num(status) === 2)
        return { ok: false, reason: "monthly_max_reached", balance: num(balance), held: num(held) };
      if (num(status) === 0)
        return { ok: false, reason: "insufficient_credits", balance: num(balance), held: num(held) };
      return state
        ? { ok: true, balance: num(balance), held: num(held), rate: state }
        : { ok: true, balance: num(balance), held: num(held) };
    },

    reachable: () => client.status === "ready",

    async reserveMany({ orgId, batchId, count, amount, share, ttlMs, nowMs, budget }) {
      assertNanos("pooled hold", amount, 1);
      const k = keys(orgId);
      const [status, granted] = (await run(
        "reserve_many",
        k.org,
        k.holds,
        k.expiry,
        amount,
        nowMs + ttlMs,
        share,
        budget ? budget.max : -1,
        `m${budget?.monthStart ?? 0}`,
        orgId,
        batchId,
        count,
      )) as Reply[];
      if (num(status) === -1) return { ok: false, reason: "not_loaded" };
      return { ok: true, granted: num(granted) };
    },

    async admitRate({ orgId, rate, nowMs }) {
      const k = keys(orgId);
      const reply = (await run(
        "rate",
        k.rateOrg,
        k.rateKey(rate.keyId),
        ...rateArgs(rate, nowMs),
      )) as Reply[];
      return { ok: num(reply[0]) === 1, rate: rateStateFromReply(reply.slice(1).map(num)) };
    },

    async settleRate(c) {
      const k = keys(c.orgId);
      await run("rate_settle", k.rateOrg, k.rateKey(c.keyId), c.windowStart, c.tokens);
    },

    async settle(call) {
      assertNanos("settle cost", call.cost, 0);
      return new Promise<SettleResult>((resolve, reject) => {
        const queue = settling.get(call.orgId);
        if (queue) queue.push({ call, resolve, reject });
        else settling.set(call.orgId, [{ call, resolve, reject }]);
        if (!settleScheduled) {
          settleScheduled = true;
          setImmediate(sendSettles);
        }
      });
    },

    async clearRebuy(orgId) {
      await client.hdel(keys(orgId).org, "rebuy");
    },

    async release({ orgId, requestId }) {
      const k = keys(orgId);
      await run("release", k.org, k.holds, k.expiry, requestId, expiryMember(orgId, requestId, false));
    },

    async credit({ orgId, creditId, amount, event }) {
      assertNanos("credit amount", amount);
      const k = keys(orgId);
      const [status, balance, first] = (await run(
        "credit",
        k.org,
        k.done(creditId),
        k.ledger,
        amount,
        event,
        DONE_TTL_SECONDS,
      )) as Reply[];
      if (num(status) === -1) return { ok: false, reason: "not_loaded" };
      return { ok: true, balance: num(balance), duplicate: num(status) === 1, amount: num(first) };
    },

    async appendEvent({ orgId, event }) {
      await client.xadd(keys(orgId).ledger, "*", "e", event, "b", "");
    },

    async loadBalance({ orgId, balance, month }) {
      assertNanos("balance", balance);
      if (month) assertNanos("month spend", month.spend, 0);
      const loaded = await run(
        "load",
        keys(orgId).org,
        balance,
        month ? `m${month.start}` : "",
        month?.spend ?? 0,
      );
      return num(loaded as Reply) === 1;
    },

    async getBalance(orgId) {
      const [bal, held] = await client.hmget(keys(orgId).org, "bal", "held");
      if (bal === null || bal === undefined) return null;
      return { balance: Number(bal), held: Number(held ?? 0) };
    },

    async reclaimExpired(nowMs) {
      // A batch per script call keeps each one short (a script blocks its whole Redis node); a shard
      // that filled its batch has more, so it goes again.
      const batch = 1000;
      const counts = await Promise.all(
        Array.from({ length: SHARDS }, async (_, shard) => {
          let released = 0;
          for (;;) {
            const [processed, freed] = (await run(
              "reclaim",
              shardKey(shard, "hx"),
              nowMs,
              shardPrefix(namespace, shard),
              batch,
            )) as Reply[];
            released += num(freed);
            if (num(processed) < batch) return released;
          }
        }),
      );
      return counts.reduce((n, c) => n + c, 0);
    },

    async holdTrialResponse({ orgId, planId, requestId, maxPlans, maxPerPlan, ttlMs, nowMs }) {
      const k = keys(orgId);
      const verdict = num(
        (await run(
          "trial",
          k.trialPlans,
          k.trialCounts,
          k.trialInFlight,
          k.trialSlots,
          k.expiry,
          k.org,
          planId,
          maxPlans,
          maxPerPlan,
          requestId,
          nowMs + ttlMs,
          `${orgId}\n${requestId}`,
        )) as Reply,
      );
      if (verdict === -1) return { ok: false, reason: "not_loaded" };
      if (verdict === 1) return { ok: false, reason: "trial_plans_exceeded" };
      if (verdict === 2) return { ok: false, reason: "trial_messages_exceeded" };
      return { ok: true };
    },

    async loadTrial({ orgId, plans }) {
      const k = keys(orgId);
      const args = Object.entries(plans).flat();
      return num((await run("trial_load", k.trialPlans, k.trialCounts, k.org, ...args)) as Reply) === 1;
    },

    async epoch() {
      // Off the hot path (polled by each instance): a missing key means Redis lost its data.
      const key = `${namespace}:epoch`;
      await client.set(key, randomUUID(), "NX");
      return (await client.get(key)) ?? "";
    },

    async endTrialResponse({ orgId, requestId, answered, event }) {
      const k = keys(orgId);
      const ended = await run(
        "trial_end",
        k.trialPlans,
        k.trialCounts,
        k.trialInFlight,
        k.trialSlots,
        k.expiry,
        k.ledger,
        requestId,
        answered ? 1 : 0,
        event,
        `${orgId}\n${requestId}`,
      );
      return num(ended as Reply) === 1;
    },

    async readLedger({ group, consumer, count, blockMs }) {
      const entries = await withGroup(group, () => readAll(group, consumer, count));
      if (entries.length > 0 || blockMs <= 0) return entries;
      // A blocking read cannot span shards on a cluster; wait briefly and look again instead.
      await new Promise((r) => setTimeout(r, Math.min(blockMs, 50)));
      return withGroup(group, () => readAll(group, consumer, count));
    },

    async ackLedger(group, entries) {
      const byShard = new Map<number, string[]>();
      for (const e of entries) {
        const ids = byShard.get(e.shard);
        if (ids) ids.push(e.id);
        else byShard.set(e.shard, [e.id]);
      }
      await Promise.all(
        [...byShard].map(async ([shard, ids]) => {
          const key = shardKey(shard, "ledger");
          // Acked entries are in Postgres; deleting them keeps the stream as long as the backlog.
          await client
            .multi()
            .xack(key, group, ...ids)
            .xdel(key, ...ids)
            .exec();
        }),
      );
    },

    async claimStaleLedger({ group, consumer, minIdleMs, count }) {
      const perShard = Math.max(1, Math.ceil(count / SHARDS));
      const results = await withGroup(group, () =>
        Promise.all(
          Array.from({ length: SHARDS }, async (_, shard) => {
            const reply = (await client.xautoclaim(
              shardKey(shard, "ledger"),
              group,
              consumer,
              minIdleMs,
              "0-0",
              "COUNT",
              perShard,
            )) as [string, [string, string[]][]];
            return toEntries(
              shard,
              reply[1].filter((e) => e !== null && e[1] !== null),
            );
          }),
        ),
      );
      return results.flat();
    },

    async ledgerLag() {
      const shards = await Promise.all(
        Array.from({ length: SHARDS }, async (_, shard) => {
          const key = shardKey(shard, "ledger");
          const [length, first] = await Promise.all([
            client.xlen(key),
            client.xrange(key, "-", "+", "COUNT", 1),
          ]);
          const id = first[0]?.[0];
          return { length, oldestMs: id ? Number(id.split("-")[0]) : null };
        }),
      );
      const oldest = shards.map((s) => s.oldestMs).filter((t): t is number => t !== null);
      return {
        length: shards.reduce((n, s) => n + s.length, 0),
        oldestMs: oldest.length ? Math.min(...oldest) : null,
      };
    },

    async purgeOrg(orgId) {
      const k = keys(orgId);
      // The shard's expiry set names the org in its members ("orgId\nrequestId").
      const members: string[] = [];
      let cursor = "0";
      do {
        const [next, found] = await client.zscan(k.expiry, cursor, "MATCH", `${orgId}\n*`, "COUNT", 1000);
        cursor = next;
        for (let i = 0; i < found.length; i += 2) members.push(found[i] as string);
      } while (cursor !== "0");
      if (members.length) await client.zrem(k.expiry, ...members);
      // The keys' rate hashes are not named by the org; they expire a window after their last use.
      await client.del(k.org, k.holds, k.trialPlans, k.trialCounts, k.trialInFlight, k.trialSlots, k.rateOrg);
    },

    async close() {
      sendSettles();
      await client.quit().catch(() => client.disconnect());
    },
  };
}
