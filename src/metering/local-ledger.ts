/**
 * Ledger events this instance writes to Postgres itself, without the metering store's stream: a
 * non-trial BYO call's usage record, which moves no money and needs no atomic step with a balance.
 * Through the stream it cost Redis an XADD, the flusher's read and ack of it (~18 µs of Redis CPU
 * per BYO call in `npm run bench`), and the gateway the commands. Here it is a string in an array
 * until this instance's flusher takes it into its next batch.
 *
 * Durability is the settle journal's (src/metering/spool.ts): the call is journaled before it is
 * queued here and kept until the ledger has it, so a crash replays it from the journal file at the
 * next start. What a kill -9 can lose is what the journal can: the usage records of the last
 * `syncMs` (50 ms) before it. Money never goes this way: debits and trial calls stay on the stream.
 *
 * It is also how settlement tells this instance's flusher that it wrote to the ledger at all (a
 * push, or an event put on the stream), so that a flusher idling on a quiet stream reads at once.
 */
export class LocalLedger {
  private queue: string[] = [];
  private onWrite: (() => void) | undefined;

  push(event: string): void {
    this.queue.push(event);
    this.onWrite?.();
  }

  /**
   * This instance put an event on the store's stream (a debit, a trial call's end). Like a push, it
   * tells this instance's flusher, which reads at once if it was idling in its slow poll of a quiet
   * stream instead of up to a second later.
   */
  streamed(): void {
    this.onWrite?.();
  }

  /** Told of every push and every event streamed (the flusher's nudge). */
  listen(onWrite: () => void): void {
    this.onWrite = onWrite;
  }

  /** Takes up to `max` events, oldest first; the caller owns them from then on. */
  take(max: number): string[] {
    if (this.queue.length === 0) return [];
    if (this.queue.length <= max) {
      const all = this.queue;
      this.queue = [];
      return all;
    }
    return this.queue.splice(0, max);
  }

  get size(): number {
    return this.queue.length;
  }
}

/** The shard number local entries carry in a flusher batch (no stream shard is negative). */
export const LOCAL_SHARD = -1;
