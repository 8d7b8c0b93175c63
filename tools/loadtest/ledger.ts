import { type Nanos, parseUsd } from "../../src/pricing/money.ts";
import type { LedgerEntry } from "./books.ts";

/**
 * The org's books as its own billing API shows them (the org's key, the Planto CLI's shapes):
 * `GET /billing/balance` is the live balance (the metering store), and
 * `POST /billing/credits_transactions` the Postgres ledger, which the flusher fills a moment after
 * each call settles.
 */
export interface BillingApi {
  balance(): Promise<Nanos>;
  /** Every ledger entry created at or after `since`. */
  entriesSince(since: Date): Promise<LedgerEntry[]>;
  /** How many debits were created at or after `since`. */
  debitCountSince(since: Date): Promise<number>;
}

const PAGE_SIZE = 500;

type Json = Record<string, unknown>;

function usd(value: unknown, what: string): Nanos {
  const n = typeof value === "string" ? parseUsd(value) : null;
  if (n === null) throw new Error(`billing API: ${what} is not a USD amount: ${JSON.stringify(value)}`);
  return n;
}

export function billingApi(baseUrl: string, key: string): BillingApi {
  const base = baseUrl.replace(/\/+$/, "");
  const call = async (path: string, init: RequestInit): Promise<Json> => {
    const res = await fetch(`${base}${path}`, {
      ...init,
      headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
      signal: AbortSignal.timeout(30_000),
    });
    const text = await res.text();
    let body: Json;
    try {
      body = JSON.parse(text) as Json;
    } catch {
      throw new Error(`billing API ${path}: ${res.status} ${text.slice(0, 200)}`);
    }
    if (!res.ok) {
      const message = (body.error as Json | undefined)?.message ?? text.slice(0, 200);
      throw new Error(`billing API ${path}: ${res.status} ${String(message)}`);
    }
    return body;
  };
  const page = (since: Date, size: number, n: number, type?: "debit") =>
    call(`/billing/credits_transactions?size=${size}&page=${n}`, {
      method: "POST",
      body: JSON.stringify({ dayStart: since.toISOString(), ...(type ? { transactionType: type } : {}) }),
    });

  return {
    async balance() {
      return usd((await call("/billing/balance", { method: "GET" })).balance, "balance");
    },
    async entriesSince(since) {
      const out: LedgerEntry[] = [];
      // Rows are keyed by their own id: a row written while paging pushes older ones a page on,
      // so one can be listed twice. (Two rows with one debitId stay two: that is a double debit.)
      const rowIds = new Set<string>();
      for (let n = 1; ; n++) {
        const body = await page(since, PAGE_SIZE, n);
        const rows = Array.isArray(body.transactions) ? (body.transactions as Json[]) : [];
        for (const t of rows) {
          if (rowIds.has(String(t.id))) continue;
          rowIds.add(String(t.id));
          const type = t.transactionType === "credit" ? "credit" : "debit";
          out.push({
            // The CLI's shape names a debit's id `debitId` (the call's request id); `id` is the same.
            id: String(type === "debit" ? (t.debitId ?? t.id) : t.id),
            type,
            amount: usd(t.amount, `amount of ${String(t.id)}`),
            creditType: type === "credit" ? String(t.creditType) : undefined,
          });
        }
        if (rows.length < PAGE_SIZE || n >= Number(body.numPages ?? 1)) return out;
      }
    },
    async debitCountSince(since) {
      // With a page size of 1, the number of pages is the number of debits (1 when there are none).
      const body = await page(since, 1, 1, "debit");
      const rows = Array.isArray(body.transactions) ? body.transactions.length : 0;
      return rows === 0 ? 0 : Number(body.numPages ?? 0);
    },
  };
}

export interface LedgerSnapshot {
  since: Date;
  /** Ids of the entries already there before the run: they are not the run's. */
  ids: Set<string>;
  debits: number;
  balance: Nanos;
}

/**
 * How far back the run's entries are looked for: entries carry the gateway's clock, which may be
 * behind ours; what was already there at the start is left out by id.
 */
const CLOCK_MARGIN_MS = 5 * 60_000;

export async function snapshotLedger(api: BillingApi, now = new Date()): Promise<LedgerSnapshot> {
  const since = new Date(now.getTime() - CLOCK_MARGIN_MS);
  const [entries, balance] = await Promise.all([api.entriesSince(since), api.balance()]);
  return {
    since,
    ids: new Set(entries.map((e) => e.id)),
    debits: entries.filter((e) => e.type === "debit").length,
    balance,
  };
}

export interface LedgerAfter {
  entries: LedgerEntry[];
  balance: Nanos;
  /** How long it took the ledger to show the run's debits, ms. */
  waitedMs: number;
  caughtUp: boolean;
}

/** How many debits the run can have left: `atLeast` priced calls, up to `atMost` with the unpriced. */
export interface ExpectedDebits {
  atLeast: number;
  atMost: number;
}

/**
 * Waits (at most `timeoutMs`) for the ledger to show the run's debits, then reads the run's entries
 * and the balance (last: once the ledger has every debit, every settle is done). Caught up means
 * every debit the run can have is there and the count held still for a poll, so a late extra debit
 * is seen too; or at least the priced ones are there and the count held still for `quietMs` (a
 * stream that broke off may or may not have been debited, so their number is not known).
 */
export async function ledgerAfterRun(
  api: BillingApi,
  snapshot: LedgerSnapshot,
  expected: ExpectedDebits,
  timeoutMs: number,
  pollMs = 250,
  quietMs = 1_500,
): Promise<LedgerAfter> {
  const started = Date.now();
  let last = -1;
  let stillSince = started;
  let caughtUp = false;
  for (;;) {
    const count = (await api.debitCountSince(snapshot.since)) - snapshot.debits;
    const now = Date.now();
    if (count !== last) stillSince = now;
    const still = count === last;
    if (still && (count >= expected.atMost || (count >= expected.atLeast && now - stillSince >= quietMs))) {
      caughtUp = true;
      break;
    }
    if (now - started > timeoutMs) break;
    last = count;
    await new Promise((resolve) => setTimeout(resolve, pollMs));
  }
  const waitedMs = Date.now() - started;
  const all = await api.entriesSince(snapshot.since);
  const balance = await api.balance();
  return { entries: all.filter((e) => !snapshot.ids.has(e.id)), balance, waitedMs, caughtUp };
}
