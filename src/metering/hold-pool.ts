import { type Clock, unrefTimer } from "../core/clock.ts";
import type { Logger } from "../core/log.ts";
import type { Nanos } from "../pricing/money.ts";
import { type MeteringStore, pooledBatchOf, pooledHoldId } from "./store.ts";

/** A hold made in the store ahead of the call that will use it. */
interface Pooled {
  id: string;
  amount: Nanos;
  /** When the store made it (the clock's ms): it expires HOLD_TTL_MS after that. */
  madeAt: number;
}

interface OrgPool {
  holds: Pooled[];
  /** The amount of the holds asked for next: the largest estimate seen. */
  amount: Nanos;
  refilling: boolean;
  /** Calls that looked for a hold since the last refill was asked for: the next asks for twice that. */
  demand: number;
  /** performance.now() of the last take or refill: an idle org's holds go back. */
  lastUsed: number;
}

/** The fewest holds a refill asks for. */
const MIN_REFILL = 8;

export interface HoldPoolOptions {
  /**
   * The most holds of an org the pool keeps. It asks for twice the calls it saw since it last asked
   * (at least 8, at most this), and asks again when fewer than half of those are left.
   */
  size: number;
  /** The holds granted together stay within 1/share of the org's free balance. */
  share: number;
  /** How long a hold lives in the store (HOLD_TTL_MS). */
  ttlMs: number;
  /** A pooled hold older than this is not given to a call, so a call's hold still lives ≥ ttlMs − maxAgeMs. */
  maxAgeMs: number;
  /** An org's unused holds are released after this long without a call. */
  idleMs: number;
}

export type PoolStore = Pick<MeteringStore, "release" | "reachable"> &
  Required<Pick<MeteringStore, "reserveMany">>;

/**
 * Holds made ahead of the calls that use them, so that a call whose org has credit to spare is
 * admitted without a round trip to the store before it goes upstream. The money rule is reserve's,
 * applied a little earlier: each pooled hold was made only while balance − held covered it (and the
 * monthly budget counted it), and a call takes one only if it is at least the call's own estimate.
 * The call then settles against that hold (settle's `holdId`), exactly as against its own.
 *
 * What it changes, and its bounds:
 * - A pool takes at most 1/share of the free balance, so an org near its last credits is admitted
 *   call by call, exactly; a call refused while this instance pools holds of the org gets them back
 *   first and is asked again (see admission.ts). Other instances' pools can still stand in its way,
 *   by at most 1/share of the free balance each.
 * - Unused holds count in `held` until they are used, released (after `idleMs` without a call, or at
 *   shutdown) or, if the gateway died, reclaimed after HOLD_TTL_MS like any call's hold. The holds
 *   of one refill share one expiry entry. The settle of its last hold removes it when every hold of
 *   the batch was used by a call; a batch with a hold given back keeps it until reclaim expands it
 *   after HOLD_TTL_MS, so a give-back that fails (Redis down) never leaves a hold without an entry.
 * - While the store is unreachable, pooled holds are not used: calls are refused as before.
 * - If the store loses its data (Redis restarted empty), the pool's holds are gone with it; calls
 *   may be admitted on them for up to `maxAgeMs`, at most `size` per org and instance. Each is still
 *   settled and debited in full (settle finds no hold and debits), so nothing goes unpaid: the
 *   balance can only go below zero by those calls' costs, as after a reclaim.
 */
export class HoldPool {
  private readonly pools = new Map<string, OrgPool>();
  private timer: ReturnType<typeof setInterval> | undefined;
  private readonly inFlight = new Set<Promise<unknown>>();
  /**
   * Holds of each batch not yet settled: the settle of the last removes the batch's expiry entry. A
   * batch is no longer followed once a hold of it is given back (reclaim ends its entry).
   */
  private readonly batches = new Map<string, number>();
  /** Batch ids: this instance's tag and a counter (short: they are in every pooled hold's name). */
  private readonly tag = crypto.randomUUID().slice(0, 8);
  private batchSeq = 0;
  private closed = false;

  constructor(
    private readonly store: PoolStore,
    private readonly clock: Clock,
    private readonly log: Logger,
    private readonly opts: HoldPoolOptions,
  ) {}

  /** The id of a pooled hold of at least `amount` for a call of `orgId`; undefined: reserve as usual. */
  take(orgId: string, amount: Nanos): string | undefined {
    const pool = this.pools.get(orgId);
    if (!pool) return undefined;
    pool.demand += 1;
    // While the store is down nothing is admitted: the call reserves, and is refused with 503.
    if (pool.holds.length === 0 || this.store.reachable?.() === false) return undefined;
    this.dropStale(orgId, pool);
    pool.lastUsed = performance.now();
    const i = pool.holds.findIndex((h) => h.amount >= amount);
    if (i < 0) return undefined;
    const [hold] = pool.holds.splice(i, 1);
    return hold?.id;
  }

  /**
   * Asks the store for more holds of the org in the background when fewer than half the pool's are
   * left (or the calls have grown past their amount). Never in a call's way: a failure is logged and
   * the calls reserve one by one meanwhile.
   */
  refill(orgId: string, amount: Nanos, budget: { monthStart: number; max: Nanos } | undefined): void {
    if (this.closed) return;
    let pool = this.pools.get(orgId);
    if (!pool) {
      pool = { holds: [], amount: 0, refilling: false, demand: 1, lastUsed: performance.now() };
      this.pools.set(orgId, pool);
      this.arm();
    }
    let fitting = 0;
    for (const h of pool.holds) if (h.amount >= amount) fitting++;
    const target = Math.min(this.opts.size, Math.max(MIN_REFILL, 2 * pool.demand));
    if (pool.refilling || (fitting * 2 > target && amount <= pool.amount)) return;
    if (fitting >= target) return;
    // The largest call seen: a larger one reserves alone and raises it for the next refill.
    pool.amount = Math.max(pool.amount, amount);
    pool.refilling = true;
    pool.demand = 0;
    const batchId = `${this.tag}${(++this.batchSeq).toString(36)}`;
    const madeAt = this.clock.now();
    const each = pool.amount;
    const asked = this.store
      .reserveMany({
        orgId,
        batchId,
        count: target - fitting,
        amount: each,
        share: this.opts.share,
        ttlMs: this.opts.ttlMs,
        nowMs: madeAt,
        budget,
      })
      .then(async (outcome) => {
        const current = this.pools.get(orgId);
        if (!outcome.ok) {
          // The store lost the org: so are its holds. The next call loads the balance.
          if (current) this.forget(current.holds.splice(0));
          return;
        }
        const n = outcome.granted;
        if (n === 0) return;
        this.batches.set(`hpb:${batchId}:${n}`, n);
        const granted = Array.from({ length: n }, (_, i) => ({
          id: pooledHoldId(batchId, n, i + 1),
          amount: each,
          madeAt,
        }));
        if (this.closed || current !== pool) {
          await this.giveBack(orgId, granted);
          return;
        }
        pool.holds.push(...granted);
      })
      .catch((err: unknown) => this.log.warn("hold pool refill failed", { orgId, err: String(err) }))
      .finally(() => {
        pool.refilling = false;
      });
    this.track(asked);
  }

  /**
   * A call admitted with this pooled hold is being settled: says whether it is the last hold of its
   * batch still out, every other one settled by its call (then the settle removes the batch's
   * expiry entry; a settle is journaled until it applies, so none of them can be left behind).
   */
  done(holdId: string): boolean {
    const batch = pooledBatchOf(holdId);
    const left = batch === undefined ? undefined : this.batches.get(batch);
    if (batch === undefined || left === undefined) return false;
    if (left > 1) {
      this.batches.set(batch, left - 1);
      return false;
    }
    this.batches.delete(batch);
    return true;
  }

  /** Gives the org's unused holds back to the store (a refused call asks again without them). */
  async release(orgId: string): Promise<boolean> {
    const pool = this.pools.get(orgId);
    if (!pool || pool.holds.length === 0) return false;
    const holds = pool.holds;
    pool.holds = [];
    await this.giveBack(orgId, holds);
    return true;
  }

  /** Unused holds of every org go back; no more are made. */
  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await Promise.all([...this.inFlight]);
    await Promise.all([...this.pools.keys()].map((orgId) => this.release(orgId)));
    this.pools.clear();
  }

  /** Resolves when the refills and releases started so far are done (tests). */
  async idle(): Promise<void> {
    while (this.inFlight.size > 0) await Promise.all([...this.inFlight]);
  }

  /** Holds too old to give a call are given back. */
  private dropStale(orgId: string, pool: OrgPool): void {
    const oldest = this.clock.now() - this.opts.maxAgeMs;
    if ((pool.holds[0]?.madeAt ?? oldest) > oldest) return;
    const stale = pool.holds.filter((h) => h.madeAt <= oldest);
    pool.holds = pool.holds.filter((h) => h.madeAt > oldest);
    this.track(this.giveBack(orgId, stale));
  }

  /** Holds the store no longer has, or that go back: their batches are not followed any more (reclaim ends them). */
  private forget(holds: Pooled[]): void {
    for (const h of holds) {
      const batch = pooledBatchOf(h.id);
      if (batch) this.batches.delete(batch);
    }
  }

  /**
   * Releases holds. Their batches' expiry entries stay (reclaim removes them): a release is not
   * journaled, and one that fails must not leave its hold with no entry to be reclaimed by.
   */
  private async giveBack(orgId: string, holds: Pooled[]): Promise<void> {
    if (holds.length === 0) return;
    this.forget(holds);
    try {
      await Promise.all(holds.map((h) => this.store.release({ orgId, requestId: h.id })));
    } catch (err) {
      // They expire with HOLD_TTL_MS and are reclaimed like a dead gateway's.
      this.log.warn("could not release pooled holds; they expire", { orgId, err: String(err) });
    }
  }

  private track(p: Promise<unknown>): void {
    this.inFlight.add(p);
    void p.finally(() => this.inFlight.delete(p));
  }

  /** One timer for all orgs while any has a pool: idle orgs' holds go back. */
  private arm(): void {
    if (this.timer) return;
    this.timer = setInterval(
      () => {
        const now = performance.now();
        for (const [orgId, pool] of this.pools) {
          if (pool.refilling || now - pool.lastUsed < this.opts.idleMs) continue;
          this.pools.delete(orgId);
          this.track(this.giveBack(orgId, pool.holds));
        }
        if (this.pools.size === 0 && this.timer) {
          clearInterval(this.timer);
          this.timer = undefined;
        }
      },
      Math.max(1, this.opts.idleMs / 2),
    );
    unrefTimer(this.timer);
  }
}
