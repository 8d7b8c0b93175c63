import type { Logger } from "../core/log.ts";
import type { Database } from "../db/client.ts";
import { sqlState } from "../db/guard.ts";
import { type LedgerRecord, writeLedgerBatch } from "../db/ledger.ts";
import { insertDeadLetter } from "../db/served.ts";
import { hasEventTag, isEncodedEvent } from "./events.ts";
import { LOCAL_SHARD, type LocalLedger } from "./local-ledger.ts";
import type { LedgerEntry, MeteringStore } from "./store.ts";

export const FLUSH_GROUP = "flusher";
/** The least time between the start of an empty read and a read a nudge brings on. */
const NUDGED_READ_GAP_MS = 10;

/**
 * Moves ledger events from the metering store's stream to Postgres. Entries are acked only after
 * the transaction that wrote them committed, so a crash between the two replays them, and the
 * unique ids make the replay a no-op. A batch that fails to commit (Postgres down) is kept and
 * retried until it goes through: nothing is dropped. Entries left pending by a dead consumer are
 * claimed after `claimIdleMs`. While the stream has a backlog (a read came back full), two lanes
 * write at once, so reading the next batch from Redis overlaps the Postgres commit of the last one;
 * while events come in without one, only the first lane reads. Two lanes reading in turn would halve
 * every batch, and a batch's fixed cost in Postgres (its transaction and the statement's start-up
 * over two tables and six indexes, ~0.5 ms) is a large part of its cost below a few hundred events:
 * 50 µs of Postgres CPU per debit at 75-event batches, 40 at 150, 32 at 300 (bench/ledger-pg.ts).
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
  /**
   * What the last read found: a full batch (more is waiting) or nothing (the stream is quiet, and
   * each lane polls it, so the first event after a quiet spell waits half as long); in either case
   * every lane reads. Between the two, only the first lane does.
   */
  private lastRead: "full" | "short" | "empty" = "empty";
  /** This instance wrote to the ledger since a lane last started a read (see nudge). */
  private nudged = false;
  /** Shortens the sleeps of the lanes in the slow poll of a quiet stream. */
  private readonly idleSleepers = new Set<() => void>();
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
      /** Told of every entry set aside in dead_letters (the metrics count them). */
      onDeadLetter?: () => void;
      /**
       * Told, after each commit, the ids of the events it wrote (the meter's settle journal lets go
       * of them without asking Postgres: that lookup was ~4.5 µs of Postgres CPU per call).
       */
      onCommitted?: (ids: string[]) => void;
      /** Events this instance queued for itself to write (BYO usage records; local-ledger.ts). */
      local?: LocalLedger;
    },
  ) {
    this.pending = Array.from({ length: opts.lanes ?? 2 }, () => []);
    opts.local?.listen(() => this.nudge());
  }

  /**
   * This instance just wrote a ledger event (on the store's stream, or queued here). A lane that
   * found the stream empty and is waiting out its slow poll (up to a second) reads now: the first
   * call after a quiet spell reaches Postgres within a read, not a poll later (in `npm run bench`,
   * each round's first events waited for it: the flusher lag's p99 went from 490–600 ms to 126).
   * Under load no read comes back empty, and this costs a flag.
   */
  nudge(): void {
    this.nudged = true;
    if (this.idleSleepers.size === 0) return;
    for (const shorten of [...this.idleSleepers]) shorten();
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
      if (lane > 0 && this.lastRead === "short" && this.pending[lane]?.length === 0) {
        await this.pause(intervalMs);
        continue;
      }
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
          if (batch.length === 0) {
            // Cleared before the read: a write made while it is out leaves the flag set for after.
            this.nudged = false;
            batch = await this.read(this.opts.blockMs ?? 0);
            this.lastRead = batch.length >= batchSize ? "full" : batch.length > 0 ? "short" : "empty";
          }
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
        // Jitter: the lanes and instances that failed together do not retry in step.
        await new Promise((r) => setTimeout(r, backoff / 2 + Math.random() * backoff));
        backoff = Math.min(backoff * 2, 5_000);
        continue;
      }
      // An idle stream is polled less and less often, up to once a second, and the interval is
      // back as soon as an event comes; this instance's own settles nudge it (nudge()), so only
      // other events (another instance's calls, credits) wait up to that second after a quiet spell.
      idleReads = empty ? idleReads + 1 : 0;
      const wait = Math.min(intervalMs * 2 ** Math.min(idleReads, 4), Math.max(intervalMs, 1_000));
      // After an empty read a nudge ends the wait, though not sooner than NUDGED_READ_GAP_MS after
      // that read began: a lane whose reads keep coming back empty however often it is nudged
      // (another instance's flusher took the events first) reads at most 100 times a second.
      if (!full)
        await this.pause(started + wait - Date.now(), empty ? started + NUDGED_READ_GAP_MS : undefined);
    }
  }

  /**
   * Sleeps up to `ms`, cut short by stop(), and, when `nudgedUntil` is given, by a nudge (made
   * meanwhile, or since the last read began): then it sleeps only until `nudgedUntil`.
   */
  private pause(ms: number, nudgedUntil?: number): Promise<void> {
    if (ms <= 0 || !this.running) return Promise.resolve();
    return new Promise((resolve) => {
      let timer = setTimeout(() => done(), ms);
      const shorten = () => {
        this.idleSleepers.delete(shorten);
        clearTimeout(timer);
        timer = setTimeout(() => done(), Math.max(0, (nudgedUntil ?? 0) - Date.now()));
      };
      const done = () => {
        clearTimeout(timer);
        this.sleepers.delete(done);
        this.idleSleepers.delete(shorten);
        resolve();
      };
      this.sleepers.add(done);
      if (nudgedUntil === undefined) return;
      if (this.nudged) shorten();
      else this.idleSleepers.add(shorten);
    });
  }

  private async read(blockMs: number): Promise<LedgerEntry[]> {
    const count = this.opts.batchSize ?? 2000;
    // Queued events wait for nothing: no blocking read when there are some.
    const waiting = (this.opts.local?.size ?? 0) > 0;
    const entries = await this.store.readLedger({
      group: FLUSH_GROUP,
      consumer: this.opts.consumer,
      count,
      blockMs: waiting ? 0 : blockMs,
    });
    // Taken only once the stream answered: a batch that fails stays in this lane's hands and is
    // retried whole, local events included.
    for (const event of this.opts.local?.take(count) ?? []) {
      entries.push({ shard: LOCAL_SHARD, id: idOf(event), event, balance: undefined });
    }
    return entries;
  }

  private async write(entries: LedgerEntry[]): Promise<void> {
    // Postgres reads the events by position and would skip an entry without a known tag: such an
    // entry is set aside whole (it holds ids and amounts, never keys or prompts) instead of lost.
    const tagged = await this.readable(entries, hasEventTag);
    try {
      await writeLedgerBatch(this.database.db, tagged.map(record));
      if (this.opts.onCommitted) this.opts.onCommitted(tagged.map((e) => idOf(e.event)));
    } catch (err) {
      // Postgres refused the batch (its data, or a constraint): isolate what it refuses and write
      // the rest. Anything else (Postgres down) is for the caller to retry.
      if (!isRejected(err)) throw err;
      await this.isolate(await this.readable(tagged, isEncodedEvent));
    }
    const streamed = entries.filter((e) => e.shard !== LOCAL_SHARD);
    if (streamed.length > 0) await this.store.ackLedger(FLUSH_GROUP, streamed);
    this.flushed += entries.length;
  }

  /**
   * Writes a batch Postgres refused by halves, down to the single entries it refuses, which go to
   * dead_letters: one poison entry costs about 2·log2(batch) statements, and the rest goes on.
   */
  private async isolate(batch: LedgerEntry[]): Promise<void> {
    if (batch.length === 0) return;
    try {
      await writeLedgerBatch(this.database.db, batch.map(record));
    } catch (err) {
      if (!isRejected(err)) throw err;
      const [only] = batch;
      if (batch.length === 1 && only) return this.deadLetter(only, err);
      const mid = batch.length >> 1;
      await this.isolate(batch.slice(0, mid));
      await this.isolate(batch.slice(mid));
    }
  }

  /** Sets an entry aside in dead_letters (before it is acked: a crash here sets it aside again). */
  private async deadLetter(entry: LedgerEntry, err: unknown): Promise<void> {
    // Drizzle wraps Postgres's error in a "Failed query" with the whole statement (the batch itself
    // goes to postgres.js unwrapped): keep the reason.
    const cause = err instanceof Error && err.cause instanceof Error ? err.cause : err;
    const error = cause instanceof Error ? cause.message : String(cause);
    const orgId = orgOf(entry.event);
    await insertDeadLetter(this.database.db, {
      id: `ledger:${entry.shard}:${entry.id}`,
      source: "ledger",
      orgId,
      payload: entry.event,
      error,
      at: new Date(),
    });
    this.opts.onDeadLetter?.();
    this.log.error("a ledger entry Postgres refuses went to dead_letters", {
      shard: entry.shard,
      id: entry.id,
      entry: entry.event,
      err: error,
    });
  }

  /** The entries whose event passes `check`; the others go to dead_letters. */
  private async readable(entries: LedgerEntry[], check: (event: string) => boolean): Promise<LedgerEntry[]> {
    const out: LedgerEntry[] = [];
    for (const entry of entries) {
      if (check(entry.event)) out.push(entry);
      else await this.deadLetter(entry, new Error("unreadable ledger entry (not an encoded event)"));
    }
    return out;
  }
}

function record(entry: LedgerEntry): LedgerRecord {
  return { event: entry.event, balanceAfter: entry.balance };
}

/**
 * Postgres answered and refused the statement (an SQLSTATE outside the classes of an outage or a
 * transient conflict): retrying the same entries cannot help. Connection errors carry no SQLSTATE.
 */
function isRejected(err: unknown): boolean {
  const code = sqlState(err);
  if (code === undefined || !/^[0-9A-Z]{5}$/.test(code)) return false;
  return !["08", "40", "53", "55", "57", "58", "XX"].includes(code.slice(0, 2));
}

/**
 * The id of an encoded event (position 1), read from its first bytes without parsing it: the tag is
 * one letter, so the id starts at byte 6 (`["c","`). Ids are ours (request and credit ids, never
 * escaped); an id read wrong only means the journal asks Postgres about that call, as it would anyway.
 */
function idOf(event: string): string {
  return event.slice(6, event.indexOf('"', 6));
}

/** The org id of an encoded event, if it can be read (position 2 for both kinds). */
function orgOf(event: string): string | null {
  try {
    const value: unknown = JSON.parse(event);
    return Array.isArray(value) && typeof value[2] === "string" ? value[2] : null;
  } catch {
    return null;
  }
}
