import { parseArgs } from "node:util";
import { CliError, DEFAULT_GATEWAY_URL, type GatewayClient, gatewayClient } from "./gateway.ts";
import { type Column, renderPairs, renderTable } from "./table.ts";

/**
 * `planto-gateway usage`: the report `planto usage` shows, read from a running gateway's billing
 * API with an org's api key. The key says which org: there is nothing else to name.
 */
export const usageSummary = "the org's balance and spend, or its transactions (--log)";

export const usageHelp = `Usage: planto-gateway usage [scope] [--log [--debits | --purchases] [--page N | --all]]

The balance, spend, spend by plan, purpose and model, and prompt-cache savings of the org that
owns the api key; with --log, its credits and debits, newest first.

Scope (one at most; default: all time):
  --today               since local midnight
  --month               this billing month
  --plan ID             one plan (x-planto-plan-id)
  --session ID          one session (x-planto-session-id)

Transactions:
  --log                 list transactions instead of the summary
  --debits              only debits (calls)
  --purchases           only credits (trial, grants, purchases)
  --page N              page N (default 1)
  --page-size N         rows per page, 1 to 500 (default 20)
  --all                 every page, one after another

Other:
  --org ID              fail unless the key belongs to this org (id or name); never needed
  --url URL             the gateway (default: PLANTO_GATEWAY_URL, else ${DEFAULT_GATEWAY_URL})
  -h, --help            this help

Environment:
  PLANTO_API_KEY        the org's api key (required)
  PLANTO_GATEWAY_URL    the gateway's address; an SDK base URL ending in /v1 works too

Exit status: 0 done, 1 the gateway could not be read, 2 bad options (or a page that does not exist).`;

type Json = Record<string, unknown>;

const str = (v: unknown): string => (v === undefined || v === null ? "" : String(v));
const usd = (v: unknown): string => `$${str(v) || "0"}`;
const count = (v: unknown): string => (typeof v === "number" ? v.toLocaleString("en-US") : str(v));
/** USD per token on the wire, USD per 1M tokens on screen (how price lists read). */
const perMillion = (v: unknown): string => {
  const n = Number(v);
  return typeof v === "string" && Number.isFinite(n) ? `$${+(n * 1e6).toFixed(6)}` : "";
};
const when = (v: unknown): string => str(v).replace("T", " ").slice(0, 19);

function options(argv: string[]) {
  try {
    return parseArgs({
      args: argv,
      allowPositionals: false,
      options: {
        help: { type: "boolean", short: "h" },
        org: { type: "string" },
        url: { type: "string" },
        today: { type: "boolean" },
        month: { type: "boolean" },
        plan: { type: "string" },
        session: { type: "string" },
        log: { type: "boolean" },
        debits: { type: "boolean" },
        purchases: { type: "boolean" },
        page: { type: "string" },
        "page-size": { type: "string" },
        all: { type: "boolean" },
      },
    }).values;
  } catch (err) {
    throw new CliError(
      `${err instanceof Error ? err.message : String(err)}\n(planto-gateway usage --help lists the options)`,
      2,
    );
  }
}

function positiveInt(
  name: string,
  raw: string | undefined,
  def: number,
  max = Number.MAX_SAFE_INTEGER,
): number {
  if (raw === undefined) return def;
  const n = Number(raw);
  if (!/^\d+$/.test(raw.trim()) || !Number.isSafeInteger(n) || n < 1 || n > max) {
    throw new CliError(
      `--${name} must be a whole number from 1${max < Number.MAX_SAFE_INTEGER ? ` to ${max}` : ""}, not ${JSON.stringify(raw)}`,
      2,
    );
  }
  return n;
}

export async function usage(
  argv: string[],
  out: (line: string) => void,
  env: Record<string, string | undefined> = process.env,
): Promise<number> {
  const values = options(argv);
  if (values.help) {
    out(usageHelp);
    return 0;
  }
  const scopes = [values.today, values.month, values.plan, values.session].filter(Boolean).length;
  if (scopes > 1) throw new CliError("choose one scope at most: --today, --month, --plan or --session", 2);
  if (values.debits && values.purchases) throw new CliError("--debits and --purchases exclude each other", 2);
  if (
    !values.log &&
    (values.debits || values.purchases || values.page || values["page-size"] || values.all)
  ) {
    throw new CliError("--debits, --purchases, --page, --page-size and --all go with --log", 2);
  }
  if (values.all && values.page) throw new CliError("--all and --page exclude each other", 2);
  const page = positiveInt("page", values.page, 1);
  const size = positiveInt("page-size", values["page-size"], 20, 500);
  const key = env.PLANTO_API_KEY?.trim();
  if (!key) {
    throw new CliError(
      "PLANTO_API_KEY is not set: it must hold the org's api key (the org comes from the key)",
      2,
    );
  }
  const gateway = gatewayClient(values.url ?? env.PLANTO_GATEWAY_URL ?? DEFAULT_GATEWAY_URL, key);

  // The balance call names the key's org, and is the cheapest proof that the URL is a gateway.
  const balance = await gateway.get("/billing/balance");
  const orgId = str(balance.orgId);
  const orgName = str(balance.orgName);
  if (values.org !== undefined && values.org !== orgId && values.org !== orgName) {
    throw new CliError(
      `--org ${values.org} is not this key's org: PLANTO_API_KEY belongs to ${orgName ? `"${orgName}" ` : ""}(${orgId}). ` +
        "Drop --org (the key names the org), or use that org's key.",
      2,
    );
  }

  const startOfToday = new Date();
  startOfToday.setHours(0, 0, 0, 0);
  const scope: Json = {
    ...(values.today ? { dayStart: startOfToday.toISOString() } : {}),
    ...(values.month ? { month: true } : {}),
    ...(values.plan ? { planId: values.plan } : {}),
    ...(values.session ? { sessionId: values.session } : {}),
  };
  const scopeName = values.today
    ? "today"
    : values.month
      ? "this billing month"
      : values.plan
        ? `plan ${values.plan}`
        : values.session
          ? `session ${values.session}`
          : "all time";
  const orgLine = `Org ${orgName ? `${orgName} (${orgId})` : orgId}`;

  if (values.log) {
    const type = values.debits ? "debit" : values.purchases ? "credit" : undefined;
    const what = type === "debit" ? "Debits" : type === "credit" ? "Credits" : "Transactions";
    return log(gateway, out, {
      body: { ...scope, ...(type ? { transactionType: type } : {}) },
      title: `${orgLine} · ${what}, ${scopeName}, newest first`,
      what: `${what.toLowerCase()}, ${scopeName}`,
      page,
      size,
      all: values.all ?? false,
    });
  }

  const s = await gateway.post("/billing/credits_summary", scope);
  out(orgLine);
  for (const line of renderPairs([
    ["Balance", usd(s.balance)],
    [`Spend, ${scopeName}`, usd(s.totalSpend)],
    ["Saved by cached input tokens", usd(s.cacheSavings)],
    ["Billing month since", when(s.monthStart)],
  ])) {
    out(line);
  }
  const names = (s.planNamesById ?? {}) as Record<string, string>;
  const section = (title: string, rows: unknown, label: (k: string) => string = (k) => k) => {
    const entries = Object.entries((rows ?? {}) as Record<string, string>).sort(
      (a, b) => Number(b[1]) - Number(a[1]),
    );
    if (entries.length === 0) return;
    out("");
    out(`${title}:`);
    for (const line of renderPairs(
      entries.map(([k, v]) => [label(k), usd(v)]),
      "  ",
    )) {
      out(line);
    }
  };
  section("By plan", s.byPlanId, (id) => (names[id] ? `${names[id]} (${id})` : id));
  section("By purpose", s.byPurpose);
  section("By model", s.byModelName);
  return 0;
}

const LOG_COLUMNS: Column[] = [
  { title: "when (UTC)" },
  { title: "type" },
  { title: "amount", align: "right" },
  { title: "balance after", align: "right" },
  { title: "model" },
  { title: "input tokens", align: "right" },
  { title: "cached tokens", align: "right" },
  { title: "output tokens", align: "right" },
  { title: "input $/1M", align: "right" },
  { title: "output $/1M", align: "right" },
  { title: "purpose" },
  { title: "plan" },
];

function logRow(t: Json, planNames: Record<string, string>): string[] {
  const isDebit = t.transactionType === "debit";
  if (!isDebit) {
    const kind = t.creditIsAutoRebuy ? `${str(t.creditType)}, auto-recharge` : str(t.creditType);
    return [when(t.createdAt), `credit (${kind})`, `+${usd(t.amount)}`, usd(t.endBalance)];
  }
  const provider = str(t.debitModelProvider);
  const model =
    provider && provider !== "openai" ? `${provider}/${str(t.debitModelName)}` : str(t.debitModelName);
  const planId = str(t.debitPlanId);
  const planName = str(t.debitPlanName) || planNames[planId];
  return [
    when(t.createdAt),
    "debit",
    `-${usd(t.amount)}`,
    usd(t.endBalance),
    model,
    count(t.debitInputTokens),
    count(t.debitCachedTokens),
    count(t.debitOutputTokens),
    perMillion(t.debitModelInputPricePerToken),
    perMillion(t.debitModelOutputPricePerToken),
    str(t.debitPurpose),
    planName ? `${planName} (${planId})` : planId,
  ];
}

async function log(
  gateway: GatewayClient,
  out: (line: string) => void,
  p: { body: Json; title: string; what: string; page: number; size: number; all: boolean },
): Promise<number> {
  const fetchPage = (n: number) =>
    gateway.post(`/billing/credits_transactions?size=${p.size}&page=${n}`, p.body);
  let page = p.page;
  let res = await fetchPage(page);
  const pages = Number(res.numPages) || 1;
  if (page > pages) {
    throw new CliError(
      `there is no page ${page}: the ${p.what} fill${pages === 1 ? " 1 page" : ` ${pages} pages`} of ${p.size}` +
        (pages === 1 ? " (--page 1)" : ` (--page 1 to ${pages})`),
      2,
    );
  }
  out(p.title);
  for (;;) {
    const rows = (res.transactions ?? []) as Json[];
    out(
      p.all
        ? `page ${page} of ${pages}`
        : `page ${page} of ${pages} (${p.size} per page; --page N for another)`,
    );
    if (rows.length === 0) out("(no transactions)");
    else {
      const names = (res.planNamesById ?? {}) as Record<string, string>;
      for (const line of renderTable(
        LOG_COLUMNS,
        rows.map((t) => logRow(t, names)),
      ))
        out(line);
    }
    if (!p.all || page >= pages) return 0;
    page++;
    out("");
    res = await fetchPage(page);
  }
}
