import { mkdir, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { Logger } from "../gateway/log.ts";
import type { Nanos } from "../pricing/money.ts";

/** A settle (or a BYO usage event) the metering store could not take when the call ended. */
export interface PendingSettle {
  /** settle: an integrated call's debit; append: a BYO call's usage; trial: a BYO trial call's end. */
  kind: "settle" | "append" | "trial";
  orgId: string;
  requestId: string;
  cost: Nanos;
  event: string;
  /** The billing month the call was admitted in. */
  monthStart?: number;
  /** The org's auto-recharge threshold when the call was admitted. */
  rebuyBelow?: number;
  /** A trial call: the upstream answered (its slot is confirmed) or not (released). */
  answered?: boolean;
}

/**
 * Keeps what the metering store refused (Redis unreachable) and applies it when the store is back.
 * Settles are idempotent by request id, so a retry can never charge twice. At shutdown whatever is
 * still pending is written to a file under `dir`, which the next start of this instance replays:
 * a debit survives a Redis outage and a restart of the gateway in the middle of it.
 */
export class SettleSpool {
  private readonly pending = new Map<string, PendingSettle>();
  private timer: NodeJS.Timeout | undefined;
  private backoff = 200;

  constructor(
    private readonly apply: (p: PendingSettle) => Promise<void>,
    private readonly log: Logger,
    private readonly dir: string | undefined,
  ) {}

  get size(): number {
    return this.pending.size;
  }

  /** Keeps a settle that failed, and schedules retries. */
  hold(p: PendingSettle, err: unknown): void {
    this.log.error("metering store refused a settle; kept for retry", {
      requestId: p.requestId,
      orgId: p.orgId,
      err: err instanceof Error ? err.message : String(err),
    });
    this.pending.set(p.requestId, p);
    this.schedule();
  }

  /** Tries every pending settle now; returns how many are still pending. */
  async retry(): Promise<number> {
    for (const [id, p] of this.pending) {
      try {
        await this.apply(p);
        this.pending.delete(id);
      } catch {
        break; // the store is still down; try again later
      }
    }
    return this.pending.size;
  }

  /** Replays the spool files an earlier run of this instance left. */
  async recover(): Promise<number> {
    if (!this.dir) return 0;
    const files = (await readdir(this.dir).catch(() => [] as string[])).filter((f) => f.endsWith(".jsonl"));
    for (const file of files) {
      const text = await readFile(join(this.dir, file), "utf8");
      for (const line of text.split("\n")) {
        if (line.trim()) {
          const p = JSON.parse(line) as PendingSettle;
          this.pending.set(p.requestId, p);
        }
      }
      await this.retry();
      if (this.pending.size > 0) {
        this.schedule();
        // Keep the file until its settles are applied; a crash now replays it again, harmlessly.
        return this.pending.size;
      }
      await rm(join(this.dir, file));
    }
    return this.pending.size;
  }

  /** Last tries at shutdown; what is left is written to the spool directory. */
  async close(): Promise<void> {
    clearTimeout(this.timer);
    if ((await this.retry()) === 0) return;
    if (!this.dir) {
      this.log.error("unsettled calls lost at shutdown (no spool directory)", {
        settles: [...this.pending.values()],
      });
      return;
    }
    await mkdir(this.dir, { recursive: true });
    const file = join(this.dir, `settles-${process.pid}-${Date.now()}.jsonl`);
    await writeFile(file, `${[...this.pending.values()].map((p) => JSON.stringify(p)).join("\n")}\n`);
    this.log.warn("unsettled calls spooled for the next start", { file, count: this.pending.size });
  }

  private schedule(): void {
    if (this.timer) return;
    this.timer = setTimeout(async () => {
      this.timer = undefined;
      if ((await this.retry()) > 0) {
        this.backoff = Math.min(this.backoff * 2, 5_000);
        this.schedule();
      } else {
        this.backoff = 200;
      }
    }, this.backoff);
    this.timer.unref();
  }
}
