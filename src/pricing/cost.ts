import type { Usage } from "../core/usage.ts";
import type { CatalogModel } from "./catalog.ts";
import { type Nanos, usdNumberToNanos } from "./money.ts";

const PICOS_PER_NANO = 1000n;

export interface Cost {
  /** What the provider charges, rounded up to the nanodollar. */
  base: Nanos;
  /** The markup: ceil(base × MARKUP_BPS / 10000). */
  surcharge: Nanos;
  /** base + surcharge: what the org pays. */
  total: Nanos;
  /** What the cached prompt tokens saved against the input price (before markup). */
  cacheDiscount: Nanos;
  /** Prompt tokens billed at the full input price (cache writes included). */
  inputTokens: number;
  cachedTokens: number;
  outputTokens: number;
  /** USD per token as exact decimal strings, for the ledger row. */
  inputPricePerToken: string;
  outputPricePerToken: string;
}

const ceilDiv = (a: bigint, b: bigint) => (a + b - 1n) / b;

/** USD-per-1M in microdollars → USD per token as an exact decimal (1e-12 USD resolution). */
function perToken(microPerMillion: number): string {
  // microdollars per 1M tokens = picodollars per token
  const s = microPerMillion.toString().padStart(13, "0");
  const whole = s.slice(0, -12).replace(/^0+(?=\d)/, "");
  const frac = s.slice(-12).replace(/0+$/, "");
  return frac ? `${whole}.${frac}` : whole;
}

/**
 * Prices one call. The rounding rule (per call, towards the house):
 * - the exact base is an integer of picodollars: Σ tokens × price per 1M tokens in microdollars;
 * - base = ceil(exact / 1000) nanodollars; on OpenRouter routes the upstream's `usage.cost`, when
 *   reported, is the base instead (its shortest decimal, half up to the nanodollar);
 * - surcharge = ceil(base × markupBps / 10000) nanodollars; total = base + surcharge.
 * So any call that used tokens costs at least one nanodollar, and one that used none costs 0.
 *
 * Token rules: OpenAI's prompt_tokens include cached_tokens, which bill at the cached rate and the
 * rest at the input rate (cache writes, reported by OpenRouter for Anthropic, at the cache-write
 * rate); completion_tokens include reasoning tokens, which bill as output.
 */
export function computeCost(
  model: CatalogModel,
  usage: Usage,
  opts: { markupBps: number; upstreamCostUsd?: number | undefined },
): Cost {
  const { micro } = model;
  const cached = Math.min(usage.cachedTokens, usage.promptTokens);
  const cacheWrite = Math.min(usage.cacheWriteTokens, usage.promptTokens - cached);
  const plainInput = usage.promptTokens - cached - cacheWrite;
  const output = usage.completionTokens;
  const exactPicos =
    BigInt(plainInput) * BigInt(micro.input) +
    BigInt(cacheWrite) * BigInt(micro.cacheWrite) +
    BigInt(cached) * BigInt(micro.cachedInput) +
    BigInt(output) * BigInt(micro.output);
  let base = Number(ceilDiv(exactPicos, PICOS_PER_NANO));
  // OpenRouter's own figure wins. A reported 0 is believed only for a `:free` variant (OpenRouter
  // charges nothing for those, so neither do we); for a paid model it is an anomaly, priced from the
  // catalogue instead.
  const reported = opts.upstreamCostUsd;
  if (
    model.provider === "openrouter" &&
    reported !== undefined &&
    (reported > 0 || (reported === 0 && model.upstreamModel.endsWith(":free")))
  ) {
    base = usdNumberToNanos(reported);
  }
  const surcharge = Number(ceilDiv(BigInt(base) * BigInt(opts.markupBps), 10_000n));
  const discountPicos = BigInt(cached) * BigInt(Math.max(0, micro.input - micro.cachedInput));
  return {
    base,
    surcharge,
    total: base + surcharge,
    cacheDiscount: Number(discountPicos / PICOS_PER_NANO),
    inputTokens: plainInput + cacheWrite,
    cachedTokens: cached,
    outputTokens: output,
    inputPricePerToken: perToken(micro.input),
    outputPricePerToken: perToken(micro.output),
  };
}

/**
 * The tokens a call may use, estimated high before it runs: the prompt at 2.5 bytes per token and
 * the output at its max_tokens (or the default), capped by the model. The credit hold prices it;
 * the tokens-per-minute limit counts it at admission.
 */
export function estimateTokens(
  model: CatalogModel,
  opts: { promptBytes: number; maxTokens: number | undefined; defaultMaxTokens: number },
): { promptTokens: number; outputTokens: number } {
  return {
    promptTokens: Math.ceil((opts.promptBytes * 2) / 5),
    outputTokens: Math.min(opts.maxTokens ?? opts.defaultMaxTokens, model.maxOutput),
  };
}

/**
 * The hold for a call before it runs: a cheap estimate that errs high. No tokenizer runs here (a
 * 200k-token prompt would cost milliseconds): prompt tokens are taken as bytes / 2.5 — BPE tokens of
 * prose, code and JSON average 3.5–4.5 bytes, and byte-per-token ratios below 2.5 need text like
 * long runs of CJK or emoji — plus the output at max_tokens (capped by the model's maximum) or the
 * configured default, all at full input and output prices, plus markup.
 */
export function estimateReservation(
  model: CatalogModel,
  opts: { promptBytes: number; maxTokens: number | undefined; defaultMaxTokens: number; markupBps: number },
): Nanos {
  const { promptTokens, outputTokens } = estimateTokens(model, opts);
  const picos =
    BigInt(promptTokens) * BigInt(Math.max(model.micro.input, model.micro.cacheWrite)) +
    BigInt(outputTokens) * BigInt(model.micro.output);
  const base = ceilDiv(picos, PICOS_PER_NANO);
  return Number(base + ceilDiv(base * BigInt(opts.markupBps), 10_000n));
}
