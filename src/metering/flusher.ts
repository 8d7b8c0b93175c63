import type { Logger } from "../core/log.ts";
import type { Database } from "../db/client.ts";
import { type LedgerRecord, writeLedgerBatch } from "../db/ledger.ts";
import { hasEventTag, isEncodedEvent } from "./events.ts";
import type { LedgerEntry, MeteringStore } from "./store.ts";

export const FLUSH_GROUP = "flusher";

/**
 * Moves ledger events from the metering store's stream to Postgres. Entries are acked only after
 * the transaction that wrote them committed, so a crash between the two replays them, and the
 * unique ids make the replay a no-op. A batch that fails to commit (Postgres down) is kept and
 * retried until it goes through: nothing is dropped. Entries left pending by a dead consumer are
 * claimed after `claimIdleMs`. Two lanes write at once, so reading the next batch from Redis
 * overlaps the Postgres commit of the last one.
 *
 * A lane whose read came back short of a full batch waits out `intervalMs` before reading again:
 * under load a read then takes hundreds of events at once instead of a handful, and the fixed cost
 * of a batch (the stream reads and acks, a Postgres transaction) stops being paid per event. A
 * full batch means more is waiting, so the lane goes again at once.
 */
export class Flusher {
  private running = false;
  private loops: Promise<void>[] = [];
  private readonly pending: LedgerEntry[][];
  private readonly sleepers = new Set<() => void>();
  flushed = 0;

  constructor(
    private readonly store: MeteringStore,
    private readonly database: Database,
    private readonly log: Logger,
    private readonly opts: {
      consumer: string;
      batchSize?: number;
      blockMs?: number;
      claimIdleMs?: number;
      lanes?: number;
      /** How long a lane waits after a short read (default 100 ms). */
      intervalMs?: number;
      /** Told of every failed flush (the metrics count them). */
      onError?: (err: unknown) => void;
    },
  ) {
    this.pending = Array.from({ length: opts.lanes ?? 2 }, () => []);
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    this.loops = this.pending.map((_, lane) => this.run(lane));
  }

  /** Stops after the batches in hand are written (or their retry window ends). */
  async stop(): Promise<void> {
    this.running = false;
    for (const wake of this.sleepers) wake();
    await Promise.all(this.loops);
  }

  /**
   * Flushes until the stream has nothing more for this consumer, including the batches the loops
   * had in hand; for shutdown and tests. The loops are paused meanwhile and resumed after.
   */
  async drain(): Promise<void> {
    const wasRunning = this.running;
    await this.stop();
    try {
      await Promise.all(
        this.pending.map(async (_, lane) => {
          for (;;) {
            if (this.pending[lane]?.length === 0) this.pending[lane] = await this.read(0);
            const batch = this.pending[lane] ?? [];
            if (batch.length === 0) return;
            await this.write(batch);
            this.pending[lane] = [];
          }
        }),
      );
    } finally {
      if (wasRunning) this.start();
    }
  }

  private async run(lane: number): Promise<void> {
    let lastClaim = 0;
    let backoff = 100;
    const claimIdleMs = this.opts.claimIdleMs ?? 30_000;
    const intervalMs = this.opts.intervalMs ?? 100;
    const batchSize = this.opts.batchSize ?? 2000;
    // The lanes read half an interval apart, so one reads while the other commits.
    if (lane > 0) await this.pause((intervalMs * lane) / this.pending.length);
    let idleReads = 0;
    while (this.running) {
      const started = Date.now();
      let full = false;
      let empty = false;
      try {
        let batch = this.pending[lane] ?? [];
        if (batch.length === 0) {
          if (lane === 0 && Date.now() - lastClaim > claimIdleMs / 2) {
            lastClaim = Date.now();
            batch = await this.store.claimStaleLedger({
              group: FLUSH_GROUP,
              consumer: this.opts.consumer,
              minIdleMs: claimIdleMs,
              count: this.opts.batchSize ?? 2000,
            });
          }
          if (batch.length === 0) batch = await this.read(this.opts.blockMs ?? 0);
          this.pending[lane] = batch;
        }
        full = batch.length >= batchSize;
        empty = batch.length === 0;
        if (batch.length > 0) {
          await this.write(batch);
          this.pending[lane] = [];
        }
        backoff = 100;
      } catch (err) {
        this.opts.onError?.(err);
        this.log.error("flush failed; will retry", {
          err: String(err),
          pending: this.pending[lane]?.length ?? 0,
        });
        await new Promise((r) => setTimeout(r, backoff));
        backoff = Math.min(backoff * 2, 5_000);
        continue;
      }
      // An idle stream is polled less and less often, up to once a second; the first event after
      // a quiet spell waits at most that long, and the interval is back as soon as one comes.
      idleReads = empty ? idleReads + 1 : 0;
      const wait = Math.min(intervalMs * 2 ** Math.min(idleReads, 4), Math.max(intervalMs, 1_000));
      if (!full) await this.pause(started + wait - Date.now());
    }
  }

  /** Sleeps up to `ms`, cut short by stop(). */
  private pause(ms: number): Promise<void> {
    if (ms <= 0 || !this.running) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.sleepers.delete(done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.sleepers.add(done);
    });
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
    // Postgres reads the events by position and would skip an entry without a known tag: such an
    // entry is logged whole (it holds ids and amounts, never keys or prompts) instead of lost.
    const tagged = this.readable(entries, hasEventTag);
    try {
      await writeLedgerBatch(this.database.db, tagged.map(record));
    } catch (err) {
      // Postgres refused the batch's data (a field missing or of the wrong type): find the entries
      // it cannot read and write the rest. Anything else (Postgres down) is for the caller to retry.
      if (!isDataError(err)) throw err;
      await writeLedgerBatch(this.database.db, this.readable(tagged, isEncodedEvent).map(record));
    }
    await this.store.ackLedger(FLUSH_GROUP, entries);
    this.flushed += entries.length;
  }

  /** The entries whose event passes `check`; the others are logged whole. */
  private readable(entries: LedgerEntry[], check: (event: string) => boolean): LedgerEntry[] {
    const out: LedgerEntry[] = [];
    for (const entry of entries) {
      if (check(entry.event)) out.push(entry);
      else
        this.log.error("unreadable ledger entry skipped", {
          shard: entry.shard,
          id: entry.id,
          entry: entry.event,
        });
    }
    return out;
  }
}

function record(entry: LedgerEntry): LedgerRecord {
  return { event: entry.event, balanceAfter: entry.balance };
}

/** Postgres's data exceptions (class 22) and not-null violations (23502): bad data, not an outage. */
function isDataError(err: unknown): boolean {
  const e = err as { code?: unknown; cause?: { code?: unknown } } | undefined;
  const code = e?.code ?? e?.cause?.code;
  return typeof code === "string" && (code.startsWith("22") || code === "23502");
}
