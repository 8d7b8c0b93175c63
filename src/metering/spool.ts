import { appendFileSync, mkdirSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { type FileHandle, open, readdir, readFile, rm } from "node:fs/promises";
import { basename, join } from "node:path";
import { unrefTimer } from "../core/clock.ts";
import type { Logger } from "../core/log.ts";
import type { Nanos } from "../pricing/money.ts";

/** A settle (or a BYO usage event) of a served call, as the journal keeps it until Postgres has it. */
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
  /** The pooled hold the call was admitted with, when not its own (./hold-pool.ts). */
  holdId?: string;
  /** That pooled hold is the last of its batch: its settle removes the batch's expiry entry. */
  lastOfBatch?: boolean;
}

/**
 * applying: the store is being asked; applied: the store took it (it is in the store's stream, or
 * was); pending: it must be (re)applied — the store refused it, or lost it (its epoch changed).
 */
type State = "applying" | "applied" | "pending";

interface Entry {
  p: PendingSettle;
  /** The store epoch this instance knew when the settle was sent. */
  epoch: string | undefined;
  state: State;
  /** When the store took it (or last took a replay of it): how long Postgres has been waited for. */
  appliedAt: number;
}

export interface JournalDeps {
  /**
   * Applies a settle again. It must be idempotent: the meter first asks the Postgres ledger (a call
   * recorded there is not charged again, and "recorded" says so: the journal lets go of it at once),
   * and the store's done marker catches the rest.
   */
  // biome-ignore lint/suspicious/noConfusingVoidType: an apply with nothing to tell returns nothing
  apply(p: PendingSettle): Promise<void | "recorded">;
  /** Which of these request ids the Postgres ledger has (a usage record: every settle writes one). */
  inLedger(ids: string[]): Promise<Set<string>>;
  /** The store's data epoch: it changes when the store lost its data (Redis restarted empty). */
  epoch?(): Promise<string>;
  /**
   * The store never loses what it took (a Durable Object's storage): a settle is let go as soon as
   * the store takes it, with no epoch to watch and no Postgres to ask (on Workers the object writes
   * the ledger itself, and an isolate's timers run outside any request's database client).
   */
  durable?: boolean;
  /** Told of a settle that can never be applied (the dead-letter path); without it it stays pending. */
  deadLetter?(p: PendingSettle, err: unknown): Promise<boolean>;
  log: Logger;
  /** Directory of the journal files (DATA_DIR/spool); without it the journal lives in memory only. */
  dir?: string;
  /** How long a settle may sit in the write buffer before it is written and fsync'd (default 50 ms). */
  syncMs?: number;
  /** How often the store epoch is polled (default 250 ms). */
  epochPollMs?: number;
  /** How often applied settles are looked for in Postgres, to let go of them (default 1 s). */
  confirmMs?: number;
  /**
   * Only settles applied at least this long ago are looked for (default 5 s): a younger one is most
   * likely on its way through this instance's own flusher, which lets go of it without a lookup
   * (`committed`). Asking about those too cost ~7% of Postgres's CPU per call under load.
   */
  confirmAfterMs?: number;
  /**
   * An applied settle Postgres still lacks after this long is replayed (default 5 min): the store
   * may have lost it without its epoch changing (a failover to a replica that had not received it).
   * A replay the store still has is a no-op (its done marker), so the cost is a lookup.
   */
  replayUnconfirmedMs?: number;
  /** The time, in ms (default Date.now). */
  now?: () => number;
}

/** Journals made by this process, to tell their files apart. */
let journalsMade = 0;

/**
 * The settle journal: every settle this instance makes, from the moment it is sent to the metering
 * store until this instance sees it in the Postgres ledger. It is what makes "every served call is
 * debited exactly once in Postgres" hold whatever the store loses:
 *
 * - the store refused a settle (Redis unreachable): the settle is pending and retried (with jittered
 *   backoff) until the store takes it — this was the spool;
 * - the store took it but then lost its data before a flusher wrote it to Postgres (Redis restarted
 *   empty, `SHUTDOWN NOSAVE`): the epoch key the store keeps changes, and every settle of an older
 *   epoch not yet in Postgres becomes pending and is replayed. A replay asks Postgres first and the
 *   store's done marker catches the rest, so nothing is charged twice. The replay goes through the
 *   store's settle (which rebuilds a lost balance from Postgres first when needed), so the debit lands
 *   in Postgres through the stream and in the live balance whether or not the balance was rebuilt
 *   before it.
 *
 * Nothing here is on the hot path's network: a settle costs a line in memory, written with others to
 * this process's file and fsync'd within `syncMs` (group commit). The exposure that remains: the
 * settles of the last `syncMs` before this process dies, if the store also loses them before they
 * reach Postgres; and nothing at all while the process lives.
 *
 * A new start takes over the files earlier runs left (killed or not) and replays them; a line cut by
 * a kill mid-write was never acknowledged and is skipped.
 */
export class SettleJournal {
  private readonly entries = new Map<string, Entry>();
  private buffer: string[] = [];
  private timer: ReturnType<typeof setTimeout> | undefined;
  private maintenance: ReturnType<typeof setInterval> | undefined;
  private backoff = 200;
  private epoch: string | undefined;
  private writing: Promise<void> = Promise.resolve();
  private linesInFile = 0;
  private retrying: Promise<number> | undefined;
  private lastConfirm = 0;
  private closed = false;
  /** This process's journal file. */
  private readonly file: string | undefined;
  /**
   * The file, open for appends from its first write until it is removed or replaced (an open and a
   * close per write were ~2% of the gateway's CPU under load).
   */
  private handle: FileHandle | undefined;

  constructor(private readonly deps: JournalDeps) {
    // Unique within the process too: two journals made in the same millisecond (a test's dying
    // instance and its successor) shared a name, and the second took the first's file for its own.
    journalsMade++;
    this.file = deps.dir
      ? join(deps.dir, `settles-${process.pid}-${Date.now()}-${journalsMade}.jsonl`)
      : undefined;
  }

  private now(): number {
    return this.deps.now?.() ?? Date.now();
  }

  /** Settles to (re)apply. */
  get size(): number {
    let n = 0;
    for (const e of this.entries.values()) if (e.state === "pending") n++;
    return n;
  }

  /** Settles kept: pending, or applied and not yet seen in Postgres. */
  get kept(): number {
    return this.entries.size;
  }

  /** Starts watching the store's epoch and confirming applied settles against Postgres. */
  start(): void {
    if (this.maintenance || this.closed || this.deps.durable) return;
    const every = Math.min(this.deps.epochPollMs ?? 250, this.deps.confirmMs ?? 1_000);
    this.maintenance = setInterval(() => void this.maintain().catch(() => undefined), every);
    unrefTimer(this.maintenance);
    // The epoch is learnt at once, not a poll later: what settles before it is known cannot be
    // told apart from a store that was lost (see epochSeen).
    void this.maintain().catch(() => undefined);
  }

  /** The epoch this instance knows (undefined before the first poll). */
  get knownEpoch(): string | undefined {
    return this.epoch;
  }

  /** Keeps a settle before it is sent to the store. Synchronous: in memory now, on disk within syncMs. */
  record(p: PendingSettle): void {
    this.entries.set(p.requestId, { p, epoch: this.epoch, state: "applying", appliedAt: 0 });
    this.append(p);
  }

  /** The store took the settle: it now waits to be seen in Postgres. */
  applied(requestId: string): void {
    const e = this.entries.get(requestId);
    if (e?.state !== "applying") return;
    if (this.deps.durable) {
      this.entries.delete(requestId);
      return;
    }
    // The epoch moved while the settle was in flight: it may have gone to the store that was lost.
    if (this.epoch !== undefined && e.epoch !== this.epoch) {
      e.state = "pending";
      this.schedule();
    } else {
      e.state = "applied";
      e.appliedAt = this.now();
    }
  }

  /** The store refused the settle: kept for retry, and on disk before this returns. */
  hold(p: PendingSettle, err: unknown): void {
    this.deps.log.error("metering store refused a settle; kept for retry", {
      requestId: p.requestId,
      orgId: p.orgId,
      err: err instanceof Error ? err.message : String(err),
    });
    const known = this.entries.get(p.requestId);
    if (known) known.state = "pending";
    else {
      this.entries.set(p.requestId, { p, epoch: this.epoch, state: "pending", appliedAt: 0 });
      this.append(p);
    }
    this.writeNow();
    this.schedule();
  }

  /**
   * Tells the journal the store's epoch. A change means the store lost its data: every settle of an
   * older epoch that Postgres has not confirmed becomes pending and is replayed. Returns how many.
   */
  epochSeen(epoch: string): number {
    const before = this.epoch;
    this.epoch = epoch;
    if (before === epoch) return 0;
    let replays = 0;
    for (const e of this.entries.values()) {
      // A settle applied before this instance first knew the epoch (just started, or the store was
      // down since) may have gone to a store that has since been lost: it is replayed too. Replays
      // are idempotent, so one that was not lost costs a ledger lookup, never a second charge.
      if (e.state === "applied" && e.epoch !== epoch && (before !== undefined || e.epoch === undefined)) {
        e.state = "pending";
        replays++;
      }
    }
    if (before !== undefined)
      this.deps.log.warn("the metering store lost its data; replaying the settles Postgres does not have", {
        settles: replays,
      });
    else if (replays > 0)
      this.deps.log.info("replaying the settles made before the store's epoch was known", {
        settles: replays,
      });
    if (replays > 0) this.schedule();
    return replays;
  }

  /** One maintenance round: the epoch, then (every confirmMs) what Postgres now has. */
  async maintain(): Promise<void> {
    if (this.deps.epoch) this.epochSeen(await this.deps.epoch());
    if (Date.now() - this.lastConfirm >= (this.deps.confirmMs ?? 1_000)) {
      this.lastConfirm = Date.now();
      await this.confirm();
    }
  }

  /**
   * This instance's flusher committed these request ids to Postgres: their applied settles are let
   * go now, without the lookup confirm() makes for the ones other instances' flushers wrote.
   */
  committed(ids: readonly string[]): number {
    let dropped = 0;
    for (const id of ids) {
      if (this.entries.get(id)?.state === "applied") {
        this.entries.delete(id);
        dropped++;
      }
    }
    if (dropped > 0) this.compact();
    return dropped;
  }

  /**
   * Lets go of the applied settles Postgres has; returns how many. Only those applied at least
   * confirmAfterMs ago, unless `all` (at shutdown, so that the file can go).
   */
  async confirm(all = false): Promise<number> {
    const ids: string[] = [];
    const before = all ? Number.POSITIVE_INFINITY : this.now() - (this.deps.confirmAfterMs ?? 5_000);
    for (const [id, e] of this.entries) if (e.state === "applied" && e.appliedAt <= before) ids.push(id);
    let dropped = 0;
    for (let i = 0; i < ids.length; i += 1000) {
      const found = await this.deps.inLedger(ids.slice(i, i + 1000));
      for (const id of found) {
        if (this.entries.get(id)?.state === "applied") {
          this.entries.delete(id);
          dropped++;
        }
      }
    }
    if (dropped > 0) this.compact();
    // What Postgres still lacks long after the store took it was lost by the store all the same.
    const overdue = this.now() - (this.deps.replayUnconfirmedMs ?? 300_000);
    let replays = 0;
    for (const e of this.entries.values()) {
      if (e.state === "applied" && e.appliedAt <= overdue) {
        e.state = "pending";
        replays++;
      }
    }
    if (replays > 0) {
      this.deps.log.warn("settles the store took long ago are still not in Postgres; replaying them", {
        settles: replays,
      });
      this.schedule();
    }
    return dropped;
  }

  /** Tries every pending settle now; returns how many are still pending. */
  async retry(): Promise<number> {
    this.retrying ??= this.retryOnce().finally(() => {
      this.retrying = undefined;
    });
    return this.retrying;
  }

  private async retryOnce(): Promise<number> {
    for (const [id, e] of this.entries) {
      if (e.state !== "pending") continue;
      const epoch = this.epoch;
      let recorded = false;
      try {
        recorded = (await this.deps.apply(e.p)) === "recorded";
      } catch (err) {
        if (isPoison(err) && (await this.deps.deadLetter?.(e.p, err).catch(() => false))) {
          this.entries.delete(id);
          continue;
        }
        break; // the store (or Postgres) is still down; try again later
      }
      if (this.entries.get(id) === e && (this.deps.durable || recorded)) this.entries.delete(id);
      else if (this.entries.get(id) === e) {
        e.epoch = epoch;
        // Applied in the epoch it was sent in; if that moved meanwhile it goes round again.
        e.state = this.epoch !== undefined && epoch !== this.epoch ? "pending" : "applied";
        e.appliedAt = this.now();
      }
    }
    this.compact();
    return this.size;
  }

  /**
   * Takes over the journal files an earlier run left (a clean shutdown's, or a crashed process's):
   * their settles move into this process's file as pending, then are replayed as the store allows.
   */
  async recover(): Promise<number> {
    const dir = this.deps.dir;
    if (!dir) return 0;
    const own = this.file ? basename(this.file) : undefined;
    const files = (await readdir(dir).catch(() => [] as string[])).filter(
      (f) => f.endsWith(".jsonl") && f !== own,
    );
    for (const file of files) {
      const path = join(dir, file);
      let moved = true;
      for (const line of (await readFile(path, "utf8")).split("\n")) {
        if (!line.trim()) continue;
        let p: PendingSettle;
        try {
          p = JSON.parse(line) as PendingSettle;
        } catch {
          // A process killed mid-append leaves a cut last line: it was never acknowledged as kept.
          this.deps.log.error("unreadable spool line skipped", { file, line });
          continue;
        }
        if (this.entries.has(p.requestId)) continue;
        this.entries.set(p.requestId, { p, epoch: undefined, state: "pending", appliedAt: 0 });
        this.buffer.push(JSON.stringify(p));
      }
      // A file is let go only once its settles are in ours: a crash before that replays it again,
      // harmlessly (replays are idempotent).
      moved = this.writeNow() && moved;
      if (moved) await rm(path, { force: true });
    }
    if (this.size > 0 && (await this.retry()) > 0) this.schedule();
    return this.size;
  }

  /** Last tries at shutdown; what Postgres does not have yet stays in the file, for the next start. */
  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.timer);
    clearInterval(this.maintenance);
    this.maintenance = undefined;
    await this.retry();
    await this.confirm(true).catch(() => 0);
    const pending = this.size;
    if (this.entries.size === 0) {
      this.compact();
      await this.writing;
      this.releaseHandle();
      return;
    }
    if (!this.file || !this.deps.dir) {
      this.deps.log.error("unsettled calls lost at shutdown (no spool directory)", {
        settles: [...this.entries.values()].filter((e) => e.state !== "applied").map((e) => e.p),
      });
      return;
    }
    await this.writing;
    this.rewrite();
    this.deps.log.warn("unsettled calls spooled for the next start", {
      file: this.file,
      count: this.entries.size,
      pending,
    });
  }

  private append(p: PendingSettle): void {
    if (!this.file) return;
    this.buffer.push(JSON.stringify(p));
    if (this.buffer.length === 1) {
      const t = setTimeout(() => this.sync(), this.deps.syncMs ?? 50);
      unrefTimer(t);
    }
  }

  /** Writes the buffer and fsyncs it, off the event loop; one write at a time. */
  private sync(): void {
    if (this.buffer.length === 0 || !this.file || !this.deps.dir) return;
    const lines = this.buffer;
    this.buffer = [];
    const file = this.file;
    const dir = this.deps.dir;
    this.writing = this.writing.then(async () => {
      try {
        if (!this.handle) {
          mkdirSync(dir, { recursive: true });
          this.handle = await open(file, "a");
        }
        await this.handle.appendFile(`${lines.join("\n")}\n`);
        await this.handle.datasync();
        this.linesInFile += lines.length;
        // A write after close() (its timer was already set) leaves no file open.
        if (this.closed) this.releaseHandle();
      } catch (err) {
        this.releaseHandle();
        this.deps.log.error("could not write settles to the journal; they are only in memory", {
          settles: lines.length,
          err: err instanceof Error ? err.message : String(err),
        });
      }
    });
  }

  /** Writes the buffer synchronously (a settle the store refused is on disk before we go on). */
  private writeNow(): boolean {
    if (!this.file || !this.deps.dir) return false;
    if (this.buffer.length === 0) return true;
    try {
      mkdirSync(this.deps.dir, { recursive: true });
      appendFileSync(this.file, `${this.buffer.join("\n")}\n`);
      this.linesInFile += this.buffer.length;
      this.buffer = [];
      return true;
    } catch (err) {
      this.deps.log.error("could not write a kept settle to the spool; it is only in memory", {
        err: err instanceof Error ? err.message : String(err),
      });
      return false;
    }
  }

  /** Keeps the file about as long as what is kept: removed when empty, rewritten when mostly let go. */
  private compact(): void {
    if (!this.file) return;
    if (this.entries.size === 0 && this.buffer.length === 0) {
      this.writing = this.writing.then(() => {
        if (this.entries.size === 0 && this.buffer.length === 0 && this.file) {
          this.releaseHandle();
          rmSync(this.file, { force: true });
          this.linesInFile = 0;
        }
      });
      return;
    }
    if (this.linesInFile > 2 * this.entries.size + 1000) {
      this.writing = this.writing.then(() => this.rewrite());
    }
  }

  private releaseHandle(): void {
    const handle = this.handle;
    this.handle = undefined;
    handle?.close().catch(() => undefined);
  }

  /** Replaces the file with the settles still kept (written aside, fsync'd and renamed: never half). */
  private rewrite(): void {
    if (!this.file) return;
    const tmp = `${this.file}.tmp`;
    const lines = [...this.entries.values()].map((e) => JSON.stringify(e.p));
    try {
      writeFileSync(tmp, lines.length ? `${lines.join("\n")}\n` : "", { flush: true });
      renameSync(tmp, this.file);
      // The handle is of the file just replaced.
      this.releaseHandle();
      this.linesInFile = lines.length;
      this.buffer = [];
    } catch (err) {
      this.deps.log.error("could not compact the settle journal", { err: String(err) });
    }
  }

  private schedule(): void {
    if (this.timer || this.closed) return;
    // Jitter: instances that lost the same store do not all replay in step.
    const wait = this.backoff / 2 + Math.random() * this.backoff;
    this.timer = setTimeout(async () => {
      this.timer = undefined;
      if ((await this.retry()) > 0) {
        this.backoff = Math.min(this.backoff * 2, 5_000);
        this.schedule();
      } else {
        this.backoff = 200;
      }
    }, wait);
    unrefTimer(this.timer);
  }
}

/**
 * An error that no retry can cure (the settle itself is malformed: an unsafe amount, a event the
 * store or Postgres cannot read), as opposed to an unreachable store.
 */
export class PoisonSettleError extends Error {
  readonly poison = true;
}

export function isPoison(err: unknown): boolean {
  return err instanceof RangeError || (err instanceof Error && "poison" in err && err.poison === true);
}
