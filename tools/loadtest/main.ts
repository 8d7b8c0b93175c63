import { randomBytes } from "node:crypto";
import { checkBooks } from "./books.ts";
import { renderHtml } from "./html.ts";
import { billingApi, ledgerAfterRun, snapshotLedger } from "./ledger.ts";
import { type LoadtestOptions, loadtestUsage, OptionsError, parseOptions } from "./options.ts";
import { type BooksSection, buildReport, reportPaths, writeReports } from "./report.ts";
import { startLoad } from "./runner.ts";
import { Recorder } from "./stats.ts";
import { progressText, progressWriter, summaryText } from "./summary.ts";
import { selfContainedTarget, type Target, urlTarget } from "./target.ts";

export interface LoadtestIo {
  out: (text: string) => void;
  err: NodeJS.WriteStream;
}

const defaultIo: LoadtestIo = { out: (t) => process.stdout.write(t), err: process.stderr };

/** `planto-gateway loadtest …` / `npm run loadtest -- …`; resolves with the exit status. */
export async function loadtest(argv: string[], io: LoadtestIo = defaultIo): Promise<number> {
  let opts: LoadtestOptions | "help";
  try {
    opts = parseOptions(argv);
  } catch (err) {
    if (!(err instanceof OptionsError)) throw err;
    io.err.write(`loadtest: ${err.message}\n(planto-gateway loadtest --help lists the options)\n`);
    return 2;
  }
  if (opts === "help") {
    io.out(`${loadtestUsage}\n`);
    return 0;
  }
  const options = opts;
  // On a terminal, a message first clears the progress line it would otherwise run into.
  const clear = io.err.isTTY ? "\r\x1b[2K" : "";
  const log = (line: string) => io.err.write(`${clear}loadtest: ${line}\n`);
  const runId = `lt_${new Date().toISOString().replace(/\D/g, "").slice(0, 14)}_${randomBytes(3).toString("hex")}`;

  // Ctrl-C while starting or tearing down exits at once (exit handlers kill the children);
  // during the run the first one stops sending and lets the calls in flight finish.
  let stopRun: (() => void) | undefined;
  const onSigint = () => {
    if (stopRun) {
      log("stopping: the calls in flight finish, then the report (Ctrl-C again to quit now)");
      stopRun();
      stopRun = undefined;
      return;
    }
    process.exit(130);
  };
  process.on("SIGINT", onSigint);

  let target: Target;
  try {
    target = options.selfContained
      ? await selfContainedTarget(options, runId, log)
      : await urlTarget(options, runId, log);
  } catch (err) {
    process.off("SIGINT", onSigint);
    log(`could not start: ${err instanceof Error ? err.message : String(err)}`);
    return 3;
  }
  for (const note of target.notes) log(note);

  let booksFailed = false;
  try {
    const api = target.books.enabled ? billingApi(target.url, target.key) : undefined;
    const snapshot = api ? await snapshotLedger(api) : undefined;
    const recorder = new Recorder(api !== undefined);
    const progress = options.quiet ? undefined : progressWriter(io.err);
    const goal = { requests: options.requests, durationMs: options.durationMs };
    let lastLine: string | undefined;
    log(
      `${options.stream ? "streaming" : "plain"} load, concurrency ${options.concurrency}, ${options.requests !== undefined ? `${options.requests} calls` : `${(options.durationMs ?? 0) / 1000} s`}`,
    );
    const run = startLoad(
      { url: target.url, key: target.key },
      { ...options, runId },
      recorder,
      (point, totals) => {
        lastLine = progressText(point, totals, goal);
        progress?.update(lastLine);
      },
    );
    stopRun = () => run.stop();
    const { startedAt, elapsedS, generatorCpu } = await run.done;
    stopRun = undefined;
    progress?.end(lastLine);

    let books: BooksSection = { checked: false, reason: target.books.reason };
    if (api && snapshot) {
      const priced = recorder.booked.filter((c) => c.status === 200 && (c.cost ?? 0) > 0).length;
      const unpriced = recorder.booked.filter((c) => c.status === 200 && c.cost === null).length;
      log(
        `checking the books: waiting for the ledger to show ${priced} debits${unpriced ? ` (and up to ${unpriced} of unpriced calls)` : ""}`,
      );
      try {
        const expected = { atLeast: priced, atMost: priced + unpriced };
        const after = await ledgerAfterRun(api, snapshot, expected, options.flushTimeoutMs);
        const result = checkBooks({
          calls: recorder.booked,
          ledger: after.entries,
          balanceBefore: snapshot.balance,
          balanceAfter: after.balance,
        });
        books = {
          checked: true,
          reason: target.books.reason,
          ledgerWaitMs: after.waitedMs,
          ledgerCaughtUp: after.caughtUp,
          ...result,
        };
        booksFailed = !result.pass;
      } catch (err) {
        booksFailed = true;
        books = {
          checked: false,
          reason: `could not read the books: ${err instanceof Error ? err.message : String(err)}`,
        };
      }
    }

    const report = buildReport({
      runId,
      options,
      target: { kind: target.kind, url: target.url, backends: target.backends, orgId: target.orgId ?? null },
      recorder,
      startedAt,
      elapsedS,
      generatorCpu,
      books,
      notes:
        generatorCpu >= 90
          ? [
              ...target.notes,
              `the load generator used ${generatorCpu}% of a core: throughput may be limited by it, not by the gateway`,
            ]
          : target.notes,
    });
    const paths = reportPaths(options.out, startedAt);
    writeReports(report, renderHtml(report), paths);
    io.out(summaryText(report, paths));
    if (booksFailed) return 1;
    if (recorder.ok === 0) {
      log("no call succeeded");
      return 1;
    }
    return 0;
  } catch (err) {
    log(`the run failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
    return 3;
  } finally {
    stopRun = undefined;
    try {
      const notes = await target.close({ keepOrg: options.keepOrg || booksFailed });
      for (const note of notes) log(note);
    } catch (err) {
      log(`teardown: ${err instanceof Error ? err.message : String(err)}`);
    }
    process.off("SIGINT", onSigint);
  }
}
