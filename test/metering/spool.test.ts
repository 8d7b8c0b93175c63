import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { createLogger } from "../../src/core/log.ts";
import { type PendingSettle, SettleJournal } from "../../src/metering/spool.ts";
import { waitUntil } from "../../tools/servers/ports.ts";

const log = createLogger("silent");
const settle = (requestId: string): PendingSettle => ({
  kind: "settle",
  orgId: "org_1",
  requestId,
  cost: 1_000,
  event: "[]",
  monthStart: 0,
});
const storeDown = async () => {
  throw new Error("redis unreachable");
};
/** A journal whose applied settles Postgres has at once (the unit tests have no Postgres). */
const journal = (
  apply: (p: PendingSettle) => Promise<void>,
  applied: Set<string> = new Set(),
  now?: () => number,
) =>
  new SettleJournal({
    async apply(p) {
      await apply(p);
      applied.add(p.requestId);
    },
    inLedger: async (ids) => new Set(ids.filter((id) => applied.has(id))),
    log,
    dir,
    now,
  });

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "planto-spool-unit-"));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

describe("the settle journal (spool)", () => {
  it("lets go of applied settles its flusher committed, without asking Postgres; not of one in flight", async () => {
    let asked = 0;
    const spool = new SettleJournal({
      apply: async () => {},
      inLedger: async () => {
        asked++;
        return new Set();
      },
      log,
      dir,
    });
    for (const id of ["req_a", "req_b", "req_c"]) spool.record(settle(id));
    spool.applied("req_a");
    spool.applied("req_b");
    // req_c is still being applied: the store has not answered, so it stays whatever Postgres has.
    expect(spool.committed(["req_a", "req_b", "req_c", "req_unknown"])).toBe(2);
    expect(spool.kept).toBe(1);
    expect(asked).toBe(0);
    spool.applied("req_c");
    expect(spool.committed(["req_c"])).toBe(1);
    expect(spool.kept).toBe(0);
    await spool.close();
    expect(readdirSync(dir)).toEqual([]);
  });

  it("lets go at once of a replay whose call the ledger already has", async () => {
    const dying = journal(storeDown);
    dying.hold(settle("req_a"), new Error("redis unreachable"));
    let asked = 0;
    const next = new SettleJournal({
      apply: async () => "recorded" as const,
      inLedger: async () => {
        asked++;
        return new Set();
      },
      log,
      dir,
    });
    expect(await next.recover()).toBe(0);
    expect(next.kept).toBe(0);
    expect(asked).toBe(0);
    await next.close();
    expect(readdirSync(dir)).toEqual([]);
  });

  it("at shutdown, asks Postgres about every applied settle however young, so that its file can go", async () => {
    const dying = journal(storeDown);
    dying.hold(settle("req_a"), new Error("redis unreachable"));
    const next = journal(
      async () => {},
      undefined,
      () => 1_000_000,
    );
    expect(await next.recover()).toBe(0);
    expect(await next.confirm()).toBe(0); // too young to ask about while running
    await next.close();
    expect(readdirSync(dir)).toEqual([]);
  });

  it("has a kept settle on disk at once, so a process killed before its shutdown loses nothing", async () => {
    const dying = journal(storeDown);
    dying.hold(settle("req_a"), new Error("redis unreachable"));
    const [file] = readdirSync(dir);
    expect(JSON.parse(readFileSync(join(dir, file as string), "utf8").trim())).toEqual(settle("req_a"));
    // No close(): the process died. The next one takes the file over and applies it.
    const applied: string[] = [];
    let now = 1_000_000;
    const next = journal(
      async (p) => void applied.push(p.requestId),
      undefined,
      () => now,
    );
    expect(await next.recover()).toBe(0);
    expect(applied).toEqual(["req_a"]);
    // Applied, it is kept until Postgres is seen to have it; then the file goes. Postgres is asked
    // once the settle is 5 s old: before that, this instance's own flusher is the likely writer.
    expect(readdirSync(dir)).toHaveLength(1);
    expect(await next.confirm()).toBe(0);
    now += 5_000;
    expect(await next.confirm()).toBe(1);
    await next.close();
    expect(readdirSync(dir)).toEqual([]);
  });

  it("drops its file once nothing is pending, and keeps in it at shutdown only what still is", async () => {
    let up = false;
    const applied: string[] = [];
    const spool = journal(async (p) => {
      if (!up || p.requestId === "req_b") throw new Error("redis unreachable");
      applied.push(p.requestId);
    });
    spool.hold(settle("req_a"), new Error("down"));
    spool.hold(settle("req_b"), new Error("down"));
    up = true;
    expect(await spool.retry()).toBe(1); // req_a applied, req_b still refused
    await spool.close();
    const [file] = readdirSync(dir);
    expect(
      readFileSync(join(dir, file as string), "utf8")
        .trim()
        .split("\n")
        .map((l) => JSON.parse(l)),
    ).toEqual([settle("req_b")]);
    expect(applied).toEqual(["req_a"]);

    const again = journal(async (p) => void applied.push(p.requestId));
    expect(await again.recover()).toBe(0);
    expect(applied).toEqual(["req_a", "req_b"]);
    await again.close();
    expect(readdirSync(dir)).toEqual([]);
  });

  it("once its file went, writes the next settles to a new one, which a killed process leaves for the next start", async () => {
    const onDisk = () =>
      readdirSync(dir).flatMap((f) =>
        readFileSync(join(dir, f), "utf8")
          .trim()
          .split("\n")
          .filter(Boolean)
          .map((l) => (JSON.parse(l) as PendingSettle).requestId),
      );
    const dying = new SettleJournal({
      apply: async () => {},
      inLedger: async () => new Set(),
      log,
      dir,
      syncMs: 1,
    });
    dying.record(settle("req_a"));
    await waitUntil("req_a on disk", async () => onDisk().includes("req_a"));
    dying.applied("req_a");
    dying.committed(["req_a"]);
    await waitUntil("the emptied file removed", async () => readdirSync(dir).length === 0);
    dying.record(settle("req_b"));
    await waitUntil("req_b on disk", async () => onDisk().includes("req_b"));
    // No close(): the process died with req_b unconfirmed. The next start applies it.
    const applied: string[] = [];
    const next = journal(async (p) => void applied.push(p.requestId));
    await next.recover();
    expect(applied).toEqual(["req_b"]);
    await next.close();
  });

  it("skips the cut last line a kill mid-write leaves, and recovers the rest", async () => {
    const whole = JSON.stringify(settle("req_a"));
    writeFileSync(join(dir, "settles-1-1.jsonl"), `${whole}\n${whole.slice(0, 20)}`);
    const applied: string[] = [];
    const spool = journal(async (p) => void applied.push(p.requestId));
    expect(await spool.recover()).toBe(0);
    expect(applied).toEqual(["req_a"]);
  });

  it("while the store is still down, keeps the recovered settles in its own file", async () => {
    writeFileSync(join(dir, "settles-1-1.jsonl"), `${JSON.stringify(settle("req_a"))}\n`);
    const spool = journal(storeDown);
    expect(await spool.recover()).toBe(1);
    const files = readdirSync(dir);
    expect(files).toHaveLength(1);
    expect(files[0]).not.toBe("settles-1-1.jsonl");
    expect(JSON.parse(readFileSync(join(dir, files[0] as string), "utf8").trim())).toEqual(settle("req_a"));
    await spool.close();
  });
  it("replays a settle it applied before it knew the store's epoch, and one of an epoch since lost", async () => {
    const applied: string[] = [];
    const spool = journal(async (p) => void applied.push(p.requestId), new Set());
    // Applied while the epoch was still unknown (the store was down at start, or the first poll had
    // not answered yet): the store that took it may be the one that is later found lost.
    spool.record(settle("req_early"));
    spool.applied("req_early");
    expect(spool.epochSeen("epoch-1")).toBe(1);
    expect(await spool.retry()).toBe(0);
    expect(applied).toEqual(["req_early"]);
    // Applied in a known epoch: kept as it is while the epoch holds, replayed when it changes.
    spool.record(settle("req_late"));
    spool.applied("req_late");
    expect(spool.epochSeen("epoch-1")).toBe(0);
    expect(spool.epochSeen("epoch-2")).toBe(2);
    expect(await spool.retry()).toBe(0);
    expect(applied).toEqual(["req_early", "req_early", "req_late"]);
    await spool.close();
  });
  it("replays an applied settle Postgres still lacks after replayUnconfirmedMs, as a store that lost it without a new epoch", async () => {
    let now = 0;
    const applied: string[] = [];
    const spool = new SettleJournal({
      apply: async (p) => void applied.push(p.requestId),
      inLedger: async () => new Set(), // a failover to a replica that never had it: Postgres never will
      epoch: async () => "epoch-1",
      replayUnconfirmedMs: 60_000,
      now: () => now,
      log,
      dir,
    });
    await spool.maintain();
    spool.record(settle("req_a"));
    spool.applied("req_a");
    now = 59_999;
    await spool.confirm();
    expect(spool.size).toBe(0);
    now = 60_000;
    await spool.confirm();
    expect(spool.size).toBe(1);
    expect(await spool.retry()).toBe(0);
    expect(applied).toEqual(["req_a"]);
    // Replayed, it waits for Postgres afresh: no second replay until as long again.
    now = 119_999;
    await spool.confirm();
    expect(spool.size).toBe(0);
    await spool.close();
  });
});
