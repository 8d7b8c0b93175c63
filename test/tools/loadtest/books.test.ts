import { describe, expect, it } from "vitest";
import { type BooksInput, checkBooks, type LedgerEntry } from "../../../tools/loadtest/books.ts";
import { type BillingApi, ledgerAfterRun, snapshotLedger } from "../../../tools/loadtest/ledger.ts";
import type { BookedCall } from "../../../tools/loadtest/stats.ts";

const BEFORE = 1_000_000_000_000; // $1000 in nanodollars

/** A consistent run: three priced 200s, a free one, a refused one, and their debits. */
function books(): BooksInput {
  const calls: BookedCall[] = [
    { requestId: "req_a", status: 200, cost: 120_000 },
    { requestId: "req_b", status: 200, cost: 75_001 },
    { requestId: "req_c", status: 200, cost: 1 },
    { requestId: "req_free", status: 200, cost: 0 },
    { requestId: "req_refused", status: 402, cost: null },
  ];
  const ledger: LedgerEntry[] = [
    { id: "req_a", type: "debit", amount: 120_000 },
    { id: "req_b", type: "debit", amount: 75_001 },
    { id: "req_c", type: "debit", amount: 1 },
  ];
  return { calls, ledger, balanceBefore: BEFORE, balanceAfter: BEFORE - 195_002 };
}

const kinds = (input: BooksInput) => checkBooks(input).differences.map((d) => d.kind);

describe("books check", () => {
  it("passes when every priced 200 has its one debit and the ledger explains the balance", () => {
    const result = checkBooks(books());
    expect(result).toMatchObject({
      pass: true,
      verified: 4,
      unverified: 0,
      refused: 1,
      unanswered: 0,
      debits: 3,
      expectedTotal: "0.000195002",
      debitedTotal: "0.000195002",
      balanceChange: "0.000195002",
      ledgerNet: "0.000195002",
      differenceCount: 0,
    });
  });

  it("detects a missing debit (and the balance it leaves unexplained)", () => {
    const input = books();
    input.ledger = input.ledger.filter((e) => e.id !== "req_b");
    const result = checkBooks(input);
    expect(result.pass).toBe(false);
    expect(result.differences[0]).toMatchObject({
      kind: "missing_debit",
      requestId: "req_b",
      expected: "0.000075001",
    });
    expect(kinds(input)).toEqual(["missing_debit", "balance_mismatch"]);
  });

  it("detects a double debit of one call", () => {
    const input = books();
    input.ledger.push({ id: "req_a", type: "debit", amount: 120_000 });
    input.balanceAfter -= 120_000; // the balance paid twice too: only the duplicate tells
    const result = checkBooks(input);
    expect(result.pass).toBe(false);
    expect(result.differences).toEqual([
      expect.objectContaining({ kind: "double_debit", requestId: "req_a", actual: "0.00012 + 0.00012" }),
    ]);
  });

  it("detects a debit of the wrong amount, to the nanodollar", () => {
    const input = books();
    input.ledger[1] = { id: "req_b", type: "debit", amount: 75_000 };
    input.balanceAfter += 1;
    const result = checkBooks(input);
    expect(result.differences).toEqual([
      expect.objectContaining({
        kind: "wrong_amount",
        requestId: "req_b",
        expected: "0.000075001",
        actual: "0.000075",
      }),
    ]);
  });

  it("detects a ledger that does not match the balance change", () => {
    const input = books();
    input.balanceAfter -= 500; // the balance moved by more than the ledger says
    const result = checkBooks(input);
    expect(result.pass).toBe(false);
    expect(result.differences).toEqual([
      expect.objectContaining({ kind: "balance_mismatch", expected: "0.000195002", actual: "0.000195502" }),
    ]);
    expect(result.differences[0]?.detail).toContain("off by 0.0000005");
  });

  it("counts credits of the run in the ledger's net", () => {
    const input = books();
    input.ledger.push({ id: "grant_x", type: "credit", amount: 20_000_000_000, creditType: "grant" });
    input.balanceAfter += 20_000_000_000;
    const result = checkBooks(input);
    expect(result.pass).toBe(true);
    expect(result).toMatchObject({ credits: 1, creditedTotal: "20", ledgerNet: "-19.999804998" });
  });

  it("refuses debits for free, refused and unknown calls", () => {
    const input = books();
    input.ledger.push(
      { id: "req_free", type: "debit", amount: 3 },
      { id: "req_refused", type: "debit", amount: 4 },
      { id: "req_someone_else", type: "debit", amount: 5 },
    );
    input.balanceAfter -= 12;
    expect(kinds(input)).toEqual(["debit_for_free_call", "debit_for_failed_call", "unexpected_debit"]);
  });

  it("lets a stream that broke off before its price have one debit of any amount, not two", () => {
    const input = books();
    input.calls.push({ requestId: "req_cut", status: 200, cost: null });
    input.ledger.push({ id: "req_cut", type: "debit", amount: 9 });
    input.balanceAfter -= 9;
    expect(checkBooks(input)).toMatchObject({ pass: true, unverified: 1, verified: 4 });
    input.ledger.push({ id: "req_cut", type: "debit", amount: 9 });
    input.balanceAfter -= 9;
    expect(kinds(input)).toEqual(["double_debit"]);
  });

  it("counts calls without a request id, and a 200 without one is a difference", () => {
    const input = books();
    input.calls.push(
      { requestId: undefined, status: 402, cost: null },
      { requestId: undefined, status: 402, cost: null },
      { requestId: undefined, status: 0, cost: null },
    );
    expect(checkBooks(input)).toMatchObject({ pass: true, refused: 3, unanswered: 1 });
    // A debit nobody can claim, in a run where a call got no answer: still a difference, explained.
    input.ledger.push({ id: "req_ghost", type: "debit", amount: 5 });
    input.balanceAfter -= 5;
    const ghost = checkBooks(input).differences[0];
    expect(ghost).toMatchObject({ kind: "unexpected_debit", requestId: "req_ghost" });
    expect(ghost?.detail).toContain("1 got no answer");
    input.calls.push({ requestId: undefined, status: 200, cost: 10 });
    expect(kinds(input)).toEqual(["no_request_id", "unexpected_debit"]);
  });

  it("lists at most 200 differences but counts them all", () => {
    const input = books();
    for (let i = 0; i < 300; i++) input.calls.push({ requestId: `req_m${i}`, status: 200, cost: 10 });
    const result = checkBooks(input);
    expect(result.differenceCount).toBe(300);
    expect(result.differences).toHaveLength(200);
  });
});

describe("reading the ledger after the run", () => {
  /** A billing API whose ledger fills in `lagPolls` polls after the run, as the flusher does. */
  function fakeApi(
    before: LedgerEntry[],
    run: LedgerEntry[],
    lagPolls: number,
  ): BillingApi & { polls: number; setBalance(n: number): void } {
    let balance = BEFORE;
    const api = {
      polls: 0,
      async balance() {
        return balance;
      },
      async entriesSince() {
        return api.polls >= lagPolls ? [...before, ...run] : before;
      },
      async debitCountSince() {
        api.polls += 1;
        const visible = api.polls >= lagPolls ? [...before, ...run] : before;
        return visible.filter((e) => e.type === "debit").length;
      },
      setBalance(n: number) {
        balance = n;
      },
    };
    return api;
  }

  it("waits for the run's debits, leaves out what was there before, and reads the balance after", async () => {
    const earlier: LedgerEntry[] = [
      { id: "cr_initial", type: "credit", amount: BEFORE },
      { id: "req_old", type: "debit", amount: 7 },
    ];
    const run: LedgerEntry[] = [
      { id: "req_1", type: "debit", amount: 10 },
      { id: "req_2", type: "debit", amount: 20 },
    ];
    const api = fakeApi(earlier, run, 3);
    const snapshot = await snapshotLedger(api);
    expect(snapshot).toMatchObject({ debits: 1, balance: BEFORE });
    api.setBalance(BEFORE - 30);
    const after = await ledgerAfterRun(api, snapshot, { atLeast: 2, atMost: 2 }, 5_000, 5);
    expect(after.caughtUp).toBe(true);
    expect(after.entries.map((e) => e.id)).toEqual(["req_1", "req_2"]);
    expect(after.balance).toBe(BEFORE - 30);
    expect(api.polls).toBeGreaterThanOrEqual(4); // caught up, then one more poll to see it stay still
  });

  it("waits out a quiet spell for debits of unpriced calls that may never come", async () => {
    // Two priced calls visible from the start, two unpriced ones never debited.
    const api = fakeApi(
      [],
      [
        { id: "req_1", type: "debit", amount: 10 },
        { id: "req_2", type: "debit", amount: 20 },
      ],
      0,
    );
    const snapshot = { since: new Date(0), ids: new Set<string>(), debits: 0, balance: BEFORE };
    const started = Date.now();
    const after = await ledgerAfterRun(api, snapshot, { atLeast: 2, atMost: 4 }, 5_000, 5, 100);
    expect(after.caughtUp).toBe(true);
    expect(Date.now() - started).toBeGreaterThanOrEqual(100);
    expect(after.entries).toHaveLength(2);
  });

  it("gives up after the timeout and says so", async () => {
    const api = fakeApi([], [{ id: "req_1", type: "debit", amount: 10 }], 1_000_000);
    const snapshot = await snapshotLedger(api);
    const after = await ledgerAfterRun(api, snapshot, { atLeast: 1, atMost: 1 }, 50, 5);
    expect(after.caughtUp).toBe(false);
    expect(after.entries).toEqual([]);
    expect(after.waitedMs).toBeGreaterThanOrEqual(50);
  });
});
