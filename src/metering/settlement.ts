import type { JsonObject, Usage } from "../core/usage.ts";
import { callRecorded } from "../db/ledger.ts";
import { insertDeadLetter, recordedCalls } from "../db/served.ts";
import type { CatalogModel } from "../pricing/catalog.ts";
import { computeCost } from "../pricing/cost.ts";
import { collectGeneratedText } from "../pricing/generated-text.ts";
import type { Nanos } from "../pricing/money.ts";
import { tokenCounter } from "../pricing/tokens.ts";
import type { MeteredAdmission } from "./admission.ts";
import type { MeterParts } from "./balances.ts";
import { type CallEvent, encodeCallEvent } from "./events.ts";
import type { HoldPool } from "./hold-pool.ts";
import type { LocalLedger } from "./local-ledger.ts";
import type { Admission, CallEnd, CallStart, Settlement } from "./meter.ts";
import { type PendingSettle, SettleJournal } from "./spool.ts";

/**
 * Settlement: exactly one settle per call after it ended — the hold released, the cost debited and
 * the ledger event appended in one atomic store step — journaled from before the store is asked
 * until Postgres has it (src/metering/spool.ts), so no served call goes undebited whatever the
 * store loses.
 */
export function createSettlement(
  deps: MeterParts & {
    /** A settle took the balance below the auto-recharge threshold and holds the recharge lease. */
    onRebuy(orgId: string, requestId: string): void;
    /** Where the journal lives over a restart (DATA_DIR/spool). */
    spoolDir?: string;
    /** Where BYO usage events go when this instance's flusher writes them itself (local-ledger.ts). */
    localLedger?: LocalLedger;
    /** The hold pool calls may have been admitted from: it says when a batch's last hold is settled. */
    pool?: HoldPool;
    faults?: { noReplay?: boolean };
  },
): {
  price(admission: Admission, usage: Usage, servedBy?: CatalogModel): Nanos;
  settle(admission: Admission, end: CallEnd): Promise<Settlement>;
  /** The flusher of this instance committed these calls to Postgres (see SettleJournal.committed). */
  committed(ids: readonly string[]): void;
  close(): Promise<void>;
} {
  const { config, store, database, clock, log, loadBalance } = deps;
  const markupBps = config.MARKUP_BPS;

  /** Applies a settle (or a BYO usage event); returns the balance after it. */
  const applySettle = async (p: PendingSettle): Promise<Nanos | undefined> => {
    if (p.kind === "append") {
      if (deps.localLedger) deps.localLedger.push(p.event);
      else await store.appendEvent({ orgId: p.orgId, event: p.event });
      return undefined;
    }
    if (p.kind === "trial") {
      await store.endTrialResponse({
        orgId: p.orgId,
        requestId: p.requestId,
        answered: p.answered === true,
        event: p.event,
      });
      deps.localLedger?.streamed();
      return undefined;
    }
    const settle = () =>
      store.settle({
        orgId: p.orgId,
        requestId: p.requestId,
        cost: p.cost,
        event: p.event,
        monthStart: p.monthStart,
        rebuyBelow: p.rebuyBelow,
        rebuyLease: { nowMs: clock.now(), ttlMs: config.REBUY_LEASE_MS },
        ...(p.holdId ? { holdId: p.holdId } : {}),
        ...(p.lastOfBatch ? { lastOfBatch: true } : {}),
      });
    let result = await settle();
    if (!result.ok) {
      // Redis lost the balance mid-call (restarted empty): rebuild it, then charge.
      await loadBalance(p.orgId, p.monthStart);
      result = await settle();
    }
    if (!result.ok) throw new Error(`settle of ${p.requestId} found no balance after a reload`);
    deps.localLedger?.streamed();
    if (result.rebuy) deps.onRebuy(p.orgId, p.requestId);
    return result.balance;
  };
  // A settle is replayed when the store failed to answer (which does not prove it was not applied)
  // or lost its data; the store's own memory of it (the done marker) lives DONE_TTL_SECONDS, or not
  // at all after Redis restarted empty. A replay therefore first asks the ledger: a call already
  // recorded there was charged, and is not charged again. Postgres unreachable: the replay waits.
  const journal = new SettleJournal({
    async apply(p) {
      if (await callRecorded(database.db, p.requestId)) return "recorded";
      await applySettle(p);
    },
    inLedger: (ids) => recordedCalls(database.db, ids),
    epoch: deps.faults?.noReplay ? undefined : () => store.epoch(),
    durable: store.kind === "durable_object",
    async deadLetter(p, err) {
      const inserted = await insertDeadLetter(database.db, {
        id: p.requestId,
        source: "spool",
        orgId: p.orgId,
        payload: JSON.stringify(p),
        error: err instanceof Error ? err.message : String(err),
        at: new Date(clock.now()),
      });
      deps.metrics?.deadLetters.inc({ source: "spool" });
      log.error("a settle that can never be applied went to dead_letters", {
        requestId: p.requestId,
        orgId: p.orgId,
        err: err instanceof Error ? err.message : String(err),
        inserted,
      });
      return true;
    },
    log,
    dir: deps.spoolDir,
  });
  journal.start();
  journal.recover().catch((err) => log.error("spool recovery failed", { err: String(err) }));

  const settle = async (admission: Admission, end: CallEnd): Promise<Settlement> => {
    const { start, byo, monthStart, trial, rated, holdId } = admission as MeteredAdmission;
    // A provider charges nothing for a call it refused or never answered; a call it answered
    // without a usage report is counted from what it sent.
    const answered = end.upstreamStatus !== undefined && end.upstreamStatus < 400;
    const usage = end.usage ?? (answered ? await countUsage(start, end) : NO_USAGE);
    // Charged at the price of the route that served the call (a fallback may be priced otherwise).
    const served = end.servedBy ?? start.model;
    const cost = computeCost(served, usage, { markupBps, upstreamCostUsd: usage.upstreamCostUsd });
    const event: CallEvent = {
      id: start.requestId,
      orgId: start.org.id,
      keyId: start.keyId,
      amount: byo ? 0 : cost.total,
      base: cost.base,
      surcharge: cost.surcharge,
      cacheDiscount: cost.cacheDiscount,
      listPrice: cost.total,
      inputTokens: cost.inputTokens,
      cachedTokens: cost.cachedTokens,
      cacheWriteTokens: usage.cacheWriteTokens,
      outputTokens: cost.outputTokens,
      reasoningTokens: usage.reasoningTokens,
      inputPricePerToken: cost.inputPricePerToken,
      outputPricePerToken: cost.outputPricePerToken,
      provider: served.provider,
      model: start.model.id,
      route: start.route,
      byo,
      tags: start.tags,
      startedAt: start.startedAt,
      firstTokenAt: end.firstTokenAt ?? null,
      endedAt: end.endedAt,
      stoppedEarly: end.stoppedEarly,
      clientCancelled: end.clientCancelled,
      upstreamError: end.upstreamError,
      noReportedUsage: end.usage === undefined,
      attempts: end.attempts ?? 1,
    };
    const pending: PendingSettle = {
      kind: trial ? "trial" : byo ? "append" : "settle",
      orgId: start.org.id,
      requestId: start.requestId,
      cost: byo ? 0 : cost.total,
      event: encodeCallEvent(event),
      monthStart,
      rebuyBelow: start.org.autoRebuy?.threshold,
      ...(trial ? { answered } : {}),
      ...(holdId ? { holdId } : {}),
      ...(holdId && deps.pool?.done(holdId) ? { lastOfBatch: true } : {}),
    };
    // The rate window counted the estimate; it now counts what was used. Sent next to the settle
    // (no wait of its own), and never in the way of the money: a failure is only logged.
    const usedTokens = usage.promptTokens + usage.completionTokens;
    const corrected =
      rated && usedTokens !== rated.tokens
        ? store
            .settleRate({
              orgId: start.org.id,
              keyId: start.keyId,
              windowStart: rated.windowStart,
              tokens: usedTokens - rated.tokens,
            })
            .catch((err: unknown) => log.warn("rate correction failed", { err: String(err) }))
        : undefined;
    // Journaled before the store is asked: kept until Postgres has it, whatever the store loses.
    journal.record(pending);
    try {
      const balance = await applySettle(pending);
      await corrected;
      journal.applied(pending.requestId);
      return { cost: pending.cost, balance };
    } catch (err) {
      // The store is unreachable: the charge is kept and applied when it is back, never dropped.
      deps.metrics?.storeErrors.inc();
      journal.hold(pending, err);
      return { cost: pending.cost, balance: undefined };
    }
  };

  return {
    price(admission, usage, servedBy) {
      return computeCost(servedBy ?? admission.start.model, usage, {
        markupBps,
        upstreamCostUsd: usage.upstreamCostUsd,
      }).total;
    },
    settle,
    committed: (ids) => {
      journal.committed(ids);
    },
    close: () => journal.close(),
  };
}

const NO_USAGE: Usage = {
  promptTokens: 0,
  cachedTokens: 0,
  cacheWriteTokens: 0,
  completionTokens: 0,
  reasoningTokens: 0,
};

/** Counts what the upstream did not report: the prompt as sent and the text actually delivered. */
export async function countUsage(start: CallStart, end: CallEnd): Promise<Usage> {
  const counter = await tokenCounter(start.model.encoding);
  const request = start.request();
  const promptTokens =
    start.route === "chat"
      ? counter.chat(request.messages as JsonObject[])
      : start.route === "responses"
        ? responsesPromptTokens(counter, request)
        : counter.text(`${String(request.initialCode ?? "")}${String(request.editSnippet ?? "")}`);
  let text = "";
  if (end.streamedText) {
    text = end.streamedText();
  } else if (end.responseText) {
    const texts: string[] = [];
    collectGeneratedText(end.responseText, texts);
    text = texts.join("");
  }
  const completionTokens = text ? counter.text(text) : 0;
  return { promptTokens, cachedTokens: 0, cacheWriteTokens: 0, completionTokens, reasoningTokens: 0 };
}

/** A Responses API prompt: `instructions` and `input`, a string or a list of message-like items. */
function responsesPromptTokens(
  counter: Awaited<ReturnType<typeof tokenCounter>>,
  request: Record<string, unknown>,
): number {
  const instructions = typeof request.instructions === "string" ? counter.text(request.instructions) : 0;
  const input = request.input;
  if (typeof input === "string") return instructions + counter.chat([{ role: "user", content: input }]);
  return instructions + (Array.isArray(input) ? counter.chat(input as JsonObject[]) : 0);
}
