import { parseArgs } from "node:util";
import { parseUsd } from "../../src/pricing/money.ts";

/** The options of the load tester (`npm run loadtest`), checked and with their defaults filled in. */
export interface LoadtestOptions {
  /** Base URL of the gateway under test; undefined in self-contained mode. */
  url: string | undefined;
  key: string | undefined;
  adminToken: string | undefined;
  selfContained: boolean;
  concurrency: number;
  /** Total calls; when unset the run lasts `durationMs`. */
  requests: number | undefined;
  durationMs: number | undefined;
  rampMs: number;
  stream: boolean;
  models: ModelWeight[];
  promptBytes: number;
  maxTokens: number;
  timeoutMs: number;
  /** Sent in each body as the mock upstream's knobs; undefined: none sent (a real provider behind). */
  mock: { chunks: number; delayMs: number } | undefined;
  /** USD of admin credit for the org the tool creates. */
  credits: string;
  markupBps: number;
  embedded: boolean;
  flushTimeoutMs: number;
  keepOrg: boolean;
  /** Report path without extension. */
  out: string | undefined;
  quiet: boolean;
}

export interface ModelWeight {
  model: string;
  weight: number;
}

export const loadtestUsage = `npm run loadtest -- [options]: drives /v1/chat/completions, reports latency and errors,
and checks that every answered call was debited exactly once.

Target (self-contained when no --url is given):
  --url URL             the gateway's base URL, e.g. https://gateway.example.com
  --key KEY             an org api key to call with (or PLANTO_API_KEY)
  --admin-token TOKEN   the gateway's ADMIN_TOKEN (or PLANTO_ADMIN_TOKEN): the tool makes an org
                        of its own with --credits, and checks its books after the run; with --key
                        too, the books of the key's org are checked (it must see no other traffic)
  --self-contained      start the mock upstream, Redis, Postgres, a gateway and an org here
  --embedded            self-contained, but with the gateway's embedded defaults (PGlite, in-process
                        metering) instead of Redis and Postgres
  --credits USD         credit of the org the tool makes (default 1000)
  --markup-bps N        MARKUP_BPS of the self-contained gateway (default 0)
  --keep-org            do not delete the org the tool made on a --url gateway

Load:
  --concurrency N       calls in flight at once (default 32)
  --duration D          how long to send calls, e.g. 30s, 2m (default 10s)
  --requests N          send exactly N calls instead of running for a duration
  --ramp D              grow concurrency linearly from 1 to N over D (default 0)
  --stream | --plain    streaming SSE (default) or plain JSON answers
  --models LIST         model=weight,… (default gpt-4.1-mini)
  --prompt-bytes N      size of the user message (default 256)
  --max-tokens N        max_tokens of each call (default 256)
  --timeout D           per-call limit, counted as a 'timeout' error (default 60s)
  --mock-chunks N       mock upstream: content chunks per answer (default 20 self-contained;
                        with --url, sent only when given: for a gateway in front of the mock)
  --mock-delay-ms N     mock upstream: delay before each chunk (default 0)

Output:
  --out PATH            report path without extension, or a directory (default ./loadtest-results/)
  --flush-timeout D     how long the books check waits for the ledger to catch up (default 30s)
  --quiet               no progress line

Exit status: 0 done (books PASS or not checked), 1 books FAIL or no call succeeded, 2 bad options,
3 the run could not start.`;

export class OptionsError extends Error {
  override name = "OptionsError";
}

/** "30", "30s", "1.5m", "500ms", "1h" → ms. */
export function parseDuration(text: string, name: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(text.trim());
  if (!m) throw new OptionsError(`--${name}: a duration like 30s, 2m or 500ms, not '${text}'`);
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[(m[2] ?? "s") as "ms" | "s" | "m" | "h"];
  return Math.round(Number(m[1]) * unit);
}

function positiveInt(text: string | undefined, name: string, fallback: number, min = 1): number {
  if (text === undefined) return fallback;
  const n = Number(text);
  if (!Number.isInteger(n) || n < min) {
    throw new OptionsError(`--${name}: an integer of at least ${min}, not '${text}'`);
  }
  return n;
}

/** "gpt-4.1-mini=3,anthropic/claude-sonnet-4=1" (a weight defaults to 1). */
export function parseModels(text: string): ModelWeight[] {
  const out: ModelWeight[] = [];
  for (const part of text.split(",")) {
    const item = part.trim();
    if (!item) continue;
    const eq = item.lastIndexOf("=");
    const model = (eq < 0 ? item : item.slice(0, eq)).trim();
    const weight = eq < 0 ? 1 : Number(item.slice(eq + 1));
    if (!model || !Number.isInteger(weight) || weight < 1) {
      throw new OptionsError(`--models: model=weight with a positive integer weight, not '${item}'`);
    }
    const known = out.find((m) => m.model === model);
    if (known) known.weight += weight;
    else out.push({ model, weight });
  }
  if (out.length === 0) throw new OptionsError("--models: name at least one model");
  return out;
}

/**
 * The order calls take models in: smooth weighted round robin (as nginx balances upstreams), so
 * `a=3,b=1` sends a,a,b,a — the mix holds over any window, not only over the whole run.
 */
export function modelSchedule(models: ModelWeight[]): string[] {
  const total = models.reduce((n, m) => n + m.weight, 0);
  const current = models.map(() => 0);
  const out: string[] = [];
  for (let i = 0; i < total; i++) {
    let best = 0;
    for (let j = 0; j < models.length; j++) {
      current[j] = (current[j] ?? 0) + (models[j]?.weight ?? 0);
      if ((current[j] ?? 0) > (current[best] ?? 0)) best = j;
    }
    current[best] = (current[best] ?? 0) - total;
    out.push(models[best]?.model ?? "");
  }
  return out;
}

/** Parses argv (after the `loadtest` word); env supplies the key and admin token when not given. */
export function parseOptions(
  argv: string[],
  env: Record<string, string | undefined> = process.env,
): LoadtestOptions | "help" {
  let values: ReturnType<typeof parse>["values"];
  try {
    values = parse(argv).values;
  } catch (err) {
    throw new OptionsError(err instanceof Error ? err.message : String(err));
  }
  if (values.help) return "help";
  const url = values.url?.replace(/\/+$/, "");
  if (url !== undefined) {
    let parsed: URL;
    try {
      parsed = new URL(url);
    } catch {
      throw new OptionsError(`--url: not a URL: '${values.url}'`);
    }
    if (parsed.protocol !== "http:" && parsed.protocol !== "https:") {
      throw new OptionsError("--url: an http:// or https:// URL");
    }
  }
  const selfContained = values["self-contained"] === true || values.embedded === true || url === undefined;
  if (selfContained && url !== undefined) {
    throw new OptionsError("--self-contained starts its own gateway: leave out --url");
  }
  const key = values.key ?? (url !== undefined ? env.PLANTO_API_KEY : undefined);
  const adminToken = values["admin-token"] ?? (url !== undefined ? env.PLANTO_ADMIN_TOKEN : undefined);
  if (url !== undefined && !key && !adminToken) {
    throw new OptionsError("--url needs --key (an org api key) or --admin-token (the tool makes an org)");
  }
  if (values.stream && values.plain) throw new OptionsError("choose one of --stream and --plain");
  if (values.requests !== undefined && values.duration !== undefined) {
    throw new OptionsError("choose one of --duration and --requests");
  }
  const requests = values.requests === undefined ? undefined : positiveInt(values.requests, "requests", 0);
  const durationMs = requests !== undefined ? undefined : parseDuration(values.duration ?? "10s", "duration");
  if (durationMs !== undefined && durationMs <= 0) throw new OptionsError("--duration: more than 0");
  const credits = values.credits ?? "1000";
  const creditNanos = parseUsd(credits);
  if (creditNanos === null || creditNanos <= 0) {
    throw new OptionsError(`--credits: a positive USD amount like 1000 or 2.5, not '${credits}'`);
  }
  const mockGiven = values["mock-chunks"] !== undefined || values["mock-delay-ms"] !== undefined;
  return {
    url,
    key: selfContained ? undefined : key,
    adminToken: selfContained ? undefined : adminToken,
    selfContained,
    concurrency: positiveInt(values.concurrency, "concurrency", 32),
    requests,
    durationMs,
    rampMs: values.ramp === undefined ? 0 : parseDuration(values.ramp, "ramp"),
    stream: values.plain !== true,
    models: parseModels(values.models ?? "gpt-4.1-mini"),
    promptBytes: positiveInt(values["prompt-bytes"], "prompt-bytes", 256),
    maxTokens: positiveInt(values["max-tokens"], "max-tokens", 256),
    timeoutMs: parseDuration(values.timeout ?? "60s", "timeout"),
    mock:
      selfContained || mockGiven
        ? {
            chunks: positiveInt(values["mock-chunks"], "mock-chunks", 20, 0),
            delayMs: positiveInt(values["mock-delay-ms"], "mock-delay-ms", 0, 0),
          }
        : undefined,
    credits,
    markupBps: positiveInt(values["markup-bps"], "markup-bps", 0, 0),
    embedded: values.embedded === true,
    flushTimeoutMs: parseDuration(values["flush-timeout"] ?? "30s", "flush-timeout"),
    keepOrg: values["keep-org"] === true,
    out: values.out,
    quiet: values.quiet === true,
  };
}

function parse(argv: string[]) {
  return parseArgs({
    args: argv,
    strict: true,
    allowPositionals: false,
    options: {
      url: { type: "string" },
      key: { type: "string" },
      "admin-token": { type: "string" },
      "self-contained": { type: "boolean" },
      embedded: { type: "boolean" },
      credits: { type: "string" },
      "markup-bps": { type: "string" },
      "keep-org": { type: "boolean" },
      concurrency: { type: "string", short: "c" },
      duration: { type: "string", short: "d" },
      requests: { type: "string", short: "n" },
      ramp: { type: "string" },
      stream: { type: "boolean" },
      plain: { type: "boolean" },
      models: { type: "string" },
      "prompt-bytes": { type: "string" },
      "max-tokens": { type: "string" },
      timeout: { type: "string" },
      "mock-chunks": { type: "string" },
      "mock-delay-ms": { type: "string" },
      out: { type: "string", short: "o" },
      "flush-timeout": { type: "string" },
      quiet: { type: "boolean", short: "q" },
      help: { type: "boolean", short: "h" },
    },
  });
}
