import { type Clock, unrefTimer } from "../core/clock.ts";
import type { Logger } from "../core/log.ts";
import type { ClaimedNotification, Outbox } from "../db/notifications.ts";
import type { NotificationKind } from "../db/schema/notifications.ts";
import { renderNotification } from "./messages.ts";
import type { Notifier } from "./notifier.ts";

export type DispatchOutcome = "sent" | "skipped" | "failed" | "retry";

/** Delay before attempt n + 1 after n failed ones: 30 s, 1 min, 2 min, … at most an hour. */
export function retryDelayMs(attempts: number): number {
  return Math.min(30_000 * 2 ** Math.max(0, attempts - 1), 3_600_000);
}

/**
 * Delivers the notifications outbox through the notifier: claims due rows under a lease (several
 * gateway instances each take different rows: skip locked), sends each with its row id as the
 * idempotency key, then marks it sent. A failed delivery is retried with backoff up to maxAttempts.
 * A crash between sending and marking leaves the row pending; once its lease runs out another
 * dispatcher sends it again with the same key, and the provider does not send it twice.
 * An org without a billing email gets nothing: its row is kept as `skipped`.
 */
export class NotificationDispatcher {
  private timer: ReturnType<typeof setTimeout> | undefined;
  private current: Promise<unknown> | undefined;
  private running = false;

  constructor(
    private readonly deps: {
      outbox: Outbox;
      notifier: Notifier;
      clock: Clock;
      log: Logger;
      /** How often the outbox is looked at. */
      intervalMs: number;
      /** Attempts after which a notification is given up (failed). */
      maxAttempts: number;
      /** How long a claimed batch stays this dispatcher's (default 2 min: a batch's sends take at most 5 × 10 s). */
      leaseMs?: number;
      /** Rows claimed at once (default 5). */
      batchSize?: number;
      /** The longest a send may take (the notifier's timeout): no send starts closer than this to a lease's end. */
      sendTimeoutMs?: number;
      onOutcome?: (kind: NotificationKind, outcome: DispatchOutcome) => void;
    },
  ) {}

  get leaseMs(): number {
    return this.deps.leaseMs ?? 120_000;
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    this.schedule(this.deps.intervalMs);
  }

  /** Stops the loop after the delivery in hand. */
  async stop(): Promise<void> {
    this.running = false;
    clearTimeout(this.timer);
    await this.current;
  }

  /** One pass: claims due rows and delivers them; returns what became of each. */
  async runOnce(): Promise<Record<DispatchOutcome, number>> {
    const counts: Record<DispatchOutcome, number> = { sent: 0, skipped: 0, failed: 0, retry: 0 };
    const claimed = await this.deps.outbox.claim({
      now: new Date(this.deps.clock.now()),
      leaseMs: this.leaseMs,
      limit: this.deps.batchSize ?? 5,
    });
    for (const row of claimed) {
      const outcome = await this.deliver(row);
      if (outcome) {
        counts[outcome] += 1;
        this.deps.onOutcome?.(row.kind, outcome);
      }
    }
    return counts;
  }

  private schedule(delayMs: number): void {
    if (!this.running) return;
    this.timer = setTimeout(() => {
      const run = this.runOnce().then(
        (c) => c.sent + c.skipped + c.failed + c.retry >= (this.deps.batchSize ?? 5),
        (err: unknown) => {
          this.deps.log.error("notification dispatch failed; will retry", { err: String(err) });
          return false;
        },
      );
      this.current = run;
      // A full batch means more are due: go on at once.
      run.then((more) => this.schedule(more ? 0 : this.deps.intervalMs));
    }, delayMs);
    unrefTimer(this.timer);
  }

  /** Delivers one claimed row and marks it; undefined when the mark did not land (see below). */
  private async deliver(row: ClaimedNotification): Promise<DispatchOutcome | undefined> {
    const { outbox, notifier, log, clock } = this.deps;
    const fields = { notificationId: row.id, orgId: row.orgId, kind: row.kind, attempt: row.attempts };
    if (clock.now() + (this.deps.sendTimeoutMs ?? 10_000) > row.claimedUntil.getTime()) {
      // Sending now could outlast the lease, and another dispatcher could send it at the same time:
      // leave it to be claimed again.
      return undefined;
    }
    try {
      if (row.orgDeleted || !row.recipient) {
        const reason = row.orgDeleted ? "org deleted" : "no billing email";
        await outbox.markDone(row.id, { status: "skipped", reason });
        log.info("notification skipped", { ...fields, reason });
        return "skipped";
      }
      const { subject, text } = renderNotification(row.kind, row.payload);
      const result = await notifier.send({ to: row.recipient, subject, text, idempotencyKey: row.id });
      const now = clock.now();
      if (result.ok) {
        await outbox.markSent(row.id, { providerMessageId: result.messageId, at: new Date(now) });
        log.info("notification sent", { ...fields, via: notifier.kind });
        return "sent";
      }
      if (result.retryable && row.attempts < this.deps.maxAttempts) {
        const at = new Date(now + retryDelayMs(row.attempts));
        await outbox.retryLater(row.id, { at, error: result.reason });
        log.warn("notification delivery failed; will retry", {
          ...fields,
          reason: result.reason,
          next: at.toISOString(),
        });
        return "retry";
      }
      await outbox.markDone(row.id, { status: "failed", reason: result.reason });
      log.error("notification given up", { ...fields, reason: result.reason });
      return "failed";
    } catch (err) {
      // The outbox could not be written (Postgres down), perhaps after a delivery: the row stays
      // pending under its lease and is taken up again after it, with the same idempotency key.
      log.error("notification outcome not recorded; it is retried after its lease", {
        ...fields,
        err: String(err),
      });
      return undefined;
    }
  }
}
