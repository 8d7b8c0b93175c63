import type { Database } from "../db/client.ts";
import { type AppliedEvent, writeLedgerBatch } from "../db/ledger.ts";
import type { Logger } from "../gateway/log.ts";
import type { LedgerEvent } from "./events.ts";
import type { LedgerEntry, MeteringStore } from "./store.ts";

export const FLUSH_GROUP = "flusher";

/**
 * Moves ledger events from the metering store's stream to Postgres. Entries are acked only after
 * the transaction that wrote them committed, so a crash between the two replays them, and the
 * unique ids make the replay a no-op. A batch that fails to commit (Postgres down) is kept and
 * retried until it goes through: nothing is dropped. Entries left pending by a dead consumer are
 * claimed after `claimIdleMs`.
 */
export class Flusher {
  private running = false;
  private loop: Promise<void> | undefined;
  private pending: LedgerEntry[] = [];
  flushed = 0;

  constructor(
    private readonly store: MeteringStore,
    private readonly database: Database,
    private readonly log: Logger,
    private readonly opts: { consumer: string; batchSize?: number; blockMs?: number; claimIdleMs?: number },
  ) {}

  start(): void {
    if (this.running) return;
    this.running = true;
    this.loop = this.run();
  }

  /** Stops after the batch in hand is written (or its retry window ends). */
  async stop(): Promise<void> {
    this.running = false;
    await this.loop;
  }

  /**
   * Flushes until the stream has nothing more for this consumer, including the batch the loop had
   * in hand; for shutdown and tests. The loop is paused meanwhile and resumed after.
   */
  async drain(): Promise<void> {
    const wasRunning = this.running;
    await this.stop();
    try {
      for (;;) {
        if (this.pending.length === 0) this.pending = await this.read(0);
        if (this.pending.length === 0) return;
        await this.write(this.pending);
        this.pending = [];
      }
    } finally {
      if (wasRunning) this.start();
    }
  }

  private async run(): Promise<void> {
    let lastClaim = 0;
    let backoff = 100;
    while (this.running) {
      try {
        if (this.pending.length === 0) {
          const claimIdleMs = this.opts.claimIdleMs ?? 30_000;
          if (Date.now() - lastClaim > claimIdleMs / 2) {
            lastClaim = Date.now();
            this.pending = await this.store.claimStaleLedger({
              group: FLUSH_GROUP,
              consumer: this.opts.consumer,
              minIdleMs: claimIdleMs,
              count: this.opts.batchSize ?? 2000,
            });
          }
          if (this.pending.length === 0) this.pending = await this.read(this.opts.blockMs ?? 200);
        }
        if (this.pending.length > 0) {
          await this.write(this.pending);
          this.pending = [];
        }
        backoff = 100;
      } catch (err) {
        this.log.error("flush failed; will retry", { err: String(err), pending: this.pending.length });
        await new Promise((r) => setTimeout(r, backoff));
        backoff = Math.min(backoff * 2, 5_000);
      }
    }
  }

  private read(blockMs: number): Promise<LedgerEntry[]> {
    return this.store.readLedger({
      group: FLUSH_GROUP,
      consumer: this.opts.consumer,
      count: this.opts.batchSize ?? 2000,
      blockMs,
    });
  }

  private async write(entries: LedgerEntry[]): Promise<void> {
    const batch: AppliedEvent[] = [];
    for (const entry of entries) {
      try {
        batch.push({ event: JSON.parse(entry.event) as LedgerEvent, balanceAfter: entry.balance });
      } catch {
        this.log.error("unreadable ledger entry skipped", { shard: entry.shard, id: entry.id });
      }
    }
    await writeLedgerBatch(this.database.db, batch);
    await this.store.ackLedger(FLUSH_GROUP, entries);
    this.flushed += entries.length;
  }
}
