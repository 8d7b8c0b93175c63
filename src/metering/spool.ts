import { appendFileSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import { readdir, readFile, rm } from "node:fs/promises";
import { basename, join } from "node:path";
import { unrefTimer } from "../core/clock.ts";
import type { Logger } from "../core/log.ts";
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
 * Replays are idempotent (by request id, and the meter checks the ledger first), so a retry can
 * never charge twice. Each settle is appended to this process's file under `dir` the moment it is
 * kept, and the file goes once nothing is pending: a debit survives a Redis outage and the gateway
 * dying in the middle of it, killed or not. The next start replays the files it finds.
 */
export class SettleSpool {
  private readonly pending = new Map<string, PendingSettle>();
  private timer: ReturnType<typeof setTimeout> | undefined;
  private backoff = 200;
  /** This process's spool file, written while settles are pending. */
  private readonly file: string | undefined;

  constructor(
    private readonly apply: (p: PendingSettle) => Promise<void>,
    private readonly log: Logger,
    private readonly dir: string | undefined,
  ) {
    this.file = dir ? join(dir, `settles-${process.pid}-${Date.now()}.jsonl`) : undefined;
  }

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
    this.persist(p);
    this.schedule();
  }

  /** Appends a kept settle to this process's file, synchronously: it is on disk before we go on. */
  private persist(p: PendingSettle): boolean {
    if (!this.dir || !this.file) return false;
    try {
      mkdirSync(this.dir, { recursive: true });
      appendFileSync(this.file, `${JSON.stringify(p)}\n`);
      return true;
    } catch (err) {
      this.log.error("could not write a kept settle to the spool; it is only in memory", {
        requestId: p.requestId,
        err: err instanceof Error ? err.message : String(err),
      });
      return false;
    }
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
    if (this.pending.size === 0 && this.file) rmSync(this.file, { force: true });
    return this.pending.size;
  }

  /**
   * Takes over the spool files an earlier run left (a clean shutdown's, or a crashed process's):
   * their settles move into this process's file, then are applied as the store allows.
   */
  async recover(): Promise<number> {
    if (!this.dir) return 0;
    const own = this.file ? basename(this.file) : undefined;
    const files = (await readdir(this.dir).catch(() => [] as string[])).filter(
      (f) => f.endsWith(".jsonl") && f !== own,
    );
    for (const file of files) {
      const path = join(this.dir, file);
      let moved = true;
      for (const line of (await readFile(path, "utf8")).split("\n")) {
        if (!line.trim()) continue;
        let p: PendingSettle;
        try {
          p = JSON.parse(line) as PendingSettle;
        } catch {
          // A process killed mid-append leaves a cut last line: it was never acknowledged as kept.
          this.log.error("unreadable spool line skipped", { file, line });
          continue;
        }
        this.pending.set(p.requestId, p);
        moved = this.persist(p) && moved;
      }
      // A file is let go only once its settles are in ours: a crash before that replays it again,
      // harmlessly (replays are idempotent).
      if (moved) await rm(path, { force: true });
    }
    if (this.pending.size > 0 && (await this.retry()) > 0) this.schedule();
    return this.pending.size;
  }

  /** Last tries at shutdown; what is left stays in the spool file, for the next start. */
  async close(): Promise<void> {
    clearTimeout(this.timer);
    if ((await this.retry()) === 0) return;
    if (!this.file) {
      this.log.error("unsettled calls lost at shutdown (no spool directory)", {
        settles: [...this.pending.values()],
      });
      return;
    }
    // The file has every settle kept since it was started; leave only those still pending.
    writeFileSync(this.file, `${[...this.pending.values()].map((p) => JSON.stringify(p)).join("\n")}\n`);
    this.log.warn("unsettled calls spooled for the next start", {
      file: this.file,
      count: this.pending.size,
    });
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
    unrefTimer(this.timer);
  }
}
