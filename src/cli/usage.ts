import { parseArgs } from "node:util";

/**
 * `planto-gateway usage`: the report `planto usage` shows, read from a running gateway's billing API
 * with the org's api key (PLANTO_API_KEY; PLANTO_GATEWAY_URL, default http://localhost:8080).
 *
 *   usage --org ID [--today|--month|--plan ID|--session ID] [--log [--debits|--purchases]] [--page N]
 */
export const usageHelp =
  "usage --org ID [--today|--month|--plan ID|--session ID] [--log [--debits|--purchases]] [--page N]";

type Json = Record<string, unknown>;

export async function usage(argv: string[], out: (line: string) => void): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      org: { type: "string" },
      today: { type: "boolean" },
      month: { type: "boolean" },
      plan: { type: "string" },
      session: { type: "string" },
      log: { type: "boolean" },
      debits: { type: "boolean" },
      purchases: { type: "boolean" },
      page: { type: "string" },
    },
  });
  const key = process.env.PLANTO_API_KEY;
  const base = (process.env.PLANTO_GATEWAY_URL ?? "http://localhost:8080").replace(/\/$/, "");
  if (!values.org || !key) {
    out(`${usageHelp}\n(needs --org and the org's api key in PLANTO_API_KEY)`);
    return 2;
  }
  const scopes = [values.today, values.month, values.plan, values.session].filter(Boolean).length;
  if (scopes > 1) {
    out("choose one of --today, --month, --plan, --session");
    return 2;
  }
  const startOfToday = new Date();
  startOfToday.setHours(0, 0, 0, 0);
  const request: Json = {
    ...(values.today ? { dayStart: startOfToday.toISOString() } : {}),
    ...(values.month ? { month: true } : {}),
    ...(values.plan ? { planId: values.plan } : {}),
    ...(values.session ? { sessionId: values.session } : {}),
  };
  const post = async (path: string, body: Json): Promise<Json> => {
    const res = await fetch(`${base}${path}`, {
      method: "POST",
      headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
      body: JSON.stringify(body),
    });
    const json = (await res.json()) as Json;
    if (!res.ok) throw new Error(String((json.error as Json | undefined)?.message ?? res.status));
    return json;
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

  if (values.log) {
    const page = Number(values.page ?? 1);
    const type = values.debits ? "debit" : values.purchases ? "credit" : undefined;
    const log = await post(`/billing/credits_transactions?size=20&page=${page}`, {
      ...request,
      ...(type ? { transactionType: type } : {}),
    });
    const rows = log.transactions as Json[];
    out(`Transactions (${scopeName}), page ${page} of ${log.numPages}`);
    out(
      ["when", "type", "amount", "balance", "model", "tokens in/out", "price in/out per 1M", "purpose"].join(
        "\t",
      ),
    );
    for (const t of rows) {
      if (t.orgId !== values.org) continue;
      const isDebit = t.transactionType === "debit";
      const perMillion = (s: unknown) => (typeof s === "string" ? (Number(s) * 1e6).toFixed(4) : "");
      out(
        [
          String(t.createdAt).replace("T", " ").slice(0, 19),
          isDebit ? "debit" : `credit (${t.creditType})`,
          `${isDebit ? "-" : "+"}$${t.amount}`,
          `$${t.endBalance}`,
          // As the Planto CLI shows it: the provider's name, prefixed by the provider unless OpenAI.
          isDebit
            ? t.debitModelProvider === "openai"
              ? String(t.debitModelName)
              : `${t.debitModelProvider}/${t.debitModelName}`
            : "",
          isDebit ? `${t.debitInputTokens}/${t.debitOutputTokens}` : "",
          isDebit
            ? `$${perMillion(t.debitModelInputPricePerToken)}/$${perMillion(t.debitModelOutputPricePerToken)}`
            : "",
          isDebit ? String(t.debitPurpose) : "",
        ].join("\t"),
      );
    }
    return 0;
  }

  const s = await post("/billing/credits_summary", request);
  const names = (s.planNamesById ?? {}) as Record<string, string>;
  const section = (title: string, rows: Record<string, string>, label: (k: string) => string = (k) => k) => {
    const entries = Object.entries(rows).sort((a, b) => Number(b[1]) - Number(a[1]));
    if (entries.length === 0) return;
    out(`${title}:`);
    for (const [k, v] of entries) out(`  ${label(k).padEnd(40)} $${v}`);
  };
  out(`Org ${values.org}`);
  out(`Balance:            $${s.balance}`);
  out(`Spend (${scopeName}):${" ".repeat(Math.max(1, 12 - scopeName.length))}$${s.totalSpend}`);
  out(`Cache savings:      $${s.cacheSavings}`);
  out(`Billing month from: ${s.monthStart}`);
  section("By plan", s.byPlanId as Record<string, string>, (id) => (names[id] ? `${names[id]} (${id})` : id));
  section("By purpose", s.byPurpose as Record<string, string>);
  section("By model", s.byModelName as Record<string, string>);
  return 0;
}
