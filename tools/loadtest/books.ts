import { formatUsd, type Nanos } from "../../src/pricing/money.ts";
import type { BookedCall } from "./stats.ts";

/**
 * The books check, on data alone (fetching it is ledger.ts's job), so it can be tested with
 * crafted ledgers. A debit's id is the call's request id (the gateway's `x-request-id`), so every
 * call can be matched with its debit:
 * - a 200 the gateway priced above zero has exactly one debit, of exactly the price it told the
 *   caller (the usage frame's `cost`, or `x-planto-cost`);
 * - a 200 priced at zero, and any call answered with an error, has none;
 * - a 200 always carries its request id (without it, its debit cannot be found);
 * - a stream that broke off before its usage frame has at most one (its amount was never told);
 * - no debit is left over that belongs to none of the run's calls;
 * - the ledger's net (debits − credits of the run) equals the balance before − the balance after.
 */
export interface LedgerEntry {
  id: string;
  type: "debit" | "credit";
  amount: Nanos;
  /** Credits: trial, grant, admin_grant, purchase, switch. */
  creditType?: string;
}

export interface BooksInput {
  calls: BookedCall[];
  /** The org's ledger entries written during the run (what was there before it left out). */
  ledger: LedgerEntry[];
  balanceBefore: Nanos;
  balanceAfter: Nanos;
}

export type DifferenceKind =
  | "missing_debit"
  | "double_debit"
  | "wrong_amount"
  | "debit_for_free_call"
  | "debit_for_failed_call"
  | "unexpected_debit"
  | "no_request_id"
  | "balance_mismatch";

export interface BooksDifference {
  kind: DifferenceKind;
  requestId?: string;
  /** USD. */
  expected?: string;
  actual?: string;
  detail: string;
}

export interface BooksResult {
  pass: boolean;
  /** 200s whose debit was checked to the nanodollar (or checked absent, for a zero price). */
  verified: number;
  /** 200s without a price (a stream that broke off): at most one debit, amount unchecked. */
  unverified: number;
  /** Calls answered with an error status (none may have a debit). */
  refused: number;
  /** Calls that got no answer at all (network, timeout before the headers): their ids are unknown. */
  unanswered: number;
  debits: number;
  /** USD: what the callers were told, and what the ledger debited. */
  expectedTotal: string;
  debitedTotal: string;
  credits: number;
  creditedTotal: string;
  balanceBefore: string;
  balanceAfter: string;
  /** before − after, USD. */
  balanceChange: string;
  /** debits − credits, USD. */
  ledgerNet: string;
  differences: BooksDifference[];
  /** All differences, when `differences` is cut to its first MAX_LISTED. */
  differenceCount: number;
}

export const MAX_LISTED = 200;

export function checkBooks(input: BooksInput): BooksResult {
  const debitsById = new Map<string, Nanos[]>();
  let debitedTotal = 0;
  let creditedTotal = 0;
  let debitCount = 0;
  let creditCount = 0;
  for (const entry of input.ledger) {
    if (entry.type === "credit") {
      creditCount += 1;
      creditedTotal += entry.amount;
      continue;
    }
    debitCount += 1;
    debitedTotal += entry.amount;
    const list = debitsById.get(entry.id);
    if (list) list.push(entry.amount);
    else debitsById.set(entry.id, [entry.amount]);
  }

  const differences: BooksDifference[] = [];
  let count = 0;
  const differ = (d: BooksDifference) => {
    count += 1;
    if (differences.length < MAX_LISTED) differences.push(d);
  };
  let verified = 0;
  let unverified = 0;
  let refused = 0;
  let unanswered = 0;
  let expectedTotal = 0;
  const seen = new Set<string>();
  for (const call of input.calls) {
    const requestId = call.requestId;
    if (requestId === undefined) {
      // Error bodies carry no request id; a refused call is covered by "no debit left unmatched".
      if (call.status === 0) unanswered += 1;
      else if (call.status !== 200) refused += 1;
      else differ({ kind: "no_request_id", detail: "a 200 without x-request-id: its debit cannot be found" });
      continue;
    }
    if (seen.has(requestId)) continue; // a request id answers one call
    seen.add(requestId);
    const found = debitsById.get(requestId) ?? [];
    const debited = found.map(formatUsd).join(" + ");
    /** A call that must have no debit: any it has is a difference of `kind`. */
    const noDebit = (kind: DifferenceKind, detail: string) => {
      if (found.length > 0) differ({ kind, requestId, expected: "0", actual: debited, detail });
    };
    if (found.length > 1) {
      differ({
        kind: "double_debit",
        requestId,
        expected: call.cost === null ? undefined : formatUsd(call.cost),
        actual: debited,
        detail: `${found.length} debits for one call`,
      });
    }
    if (call.status !== 200) {
      refused += 1;
      noDebit("debit_for_failed_call", `the call was answered ${call.status} but debited`);
      continue;
    }
    if (call.cost === null) {
      unverified += 1;
      continue;
    }
    verified += 1;
    expectedTotal += call.cost;
    if (call.cost === 0) {
      noDebit("debit_for_free_call", "the caller was told it cost nothing, yet it was debited");
      continue;
    }
    if (found.length === 0) {
      differ({
        kind: "missing_debit",
        requestId,
        expected: formatUsd(call.cost),
        detail: "a 200 priced above zero has no debit",
      });
    } else if (found.length === 1 && found[0] !== call.cost) {
      differ({
        kind: "wrong_amount",
        requestId,
        expected: formatUsd(call.cost),
        actual: formatUsd(found[0] ?? 0),
        detail: "the debit differs from the cost the caller was told",
      });
    }
  }
  for (const [id, amounts] of debitsById) {
    if (seen.has(id)) continue;
    differ({
      kind: "unexpected_debit",
      requestId: id,
      actual: amounts.map(formatUsd).join(" + "),
      detail:
        unanswered > 0
          ? `a debit that matches none of the run's answered calls (${unanswered} got no answer: a call the gateway finished after the caller gave up looks like this)`
          : "a debit that matches none of the run's answered calls",
    });
  }

  const balanceChange = input.balanceBefore - input.balanceAfter;
  const ledgerNet = debitedTotal - creditedTotal;
  if (balanceChange !== ledgerNet) {
    differ({
      kind: "balance_mismatch",
      expected: formatUsd(ledgerNet),
      actual: formatUsd(balanceChange),
      detail: `balance before − after is ${formatUsd(balanceChange)}, the ledger's debits − credits are ${formatUsd(ledgerNet)} (off by ${formatUsd(balanceChange - ledgerNet)})`,
    });
  }

  return {
    pass: count === 0,
    verified,
    unverified,
    refused,
    unanswered,
    debits: debitCount,
    expectedTotal: formatUsd(expectedTotal),
    debitedTotal: formatUsd(debitedTotal),
    credits: creditCount,
    creditedTotal: formatUsd(creditedTotal),
    balanceBefore: formatUsd(input.balanceBefore),
    balanceAfter: formatUsd(input.balanceAfter),
    balanceChange: formatUsd(balanceChange),
    ledgerNet: formatUsd(ledgerNet),
    differences,
    differenceCount: count,
  };
}
