import type { ModelSpec } from "./catalog.ts";

/**
 * OpenRouter's model list (`GET {OPENROUTER_BASE_URL}/models`) as catalogue entries. Each entry of
 * its `data` gives `id`, `context_length`, `pricing.{prompt,completion,input_cache_read,
 * input_cache_write}` as USD-per-token decimal strings and `top_provider.max_completion_tokens`.
 * Entries the gateway cannot price (a negative price marks OpenRouter's own routers, whose price is
 * the routed model's) are skipped, not guessed.
 */
export function parseOpenRouterModels(
  json: unknown,
): { models: ModelSpec[]; skipped: number } | { error: string } {
  const data = objectOf(json)?.data;
  if (!Array.isArray(data)) return { error: "OpenRouter's model list has no data array" };
  const models: ModelSpec[] = [];
  let skipped = 0;
  for (const entry of data) {
    const spec = toSpec(objectOf(entry));
    if (spec) models.push(spec);
    else skipped += 1;
  }
  if (models.length === 0) return { error: "OpenRouter's model list has no model the gateway can price" };
  return { models, skipped };
}

function toSpec(entry: Record<string, unknown> | undefined): ModelSpec | undefined {
  const id = entry?.id;
  if (typeof id !== "string" || !/^[^\s/]+\/\S+$/.test(id)) return undefined;
  const pricing = objectOf(entry?.pricing);
  const input = perMillion(pricing?.prompt);
  const output = perMillion(pricing?.completion);
  if (input === undefined || output === undefined) return undefined;
  const cachedInput = perMillion(pricing?.input_cache_read) ?? input;
  const cacheWrite = perMillion(pricing?.input_cache_write);
  const contextWindow = positiveInt(entry?.context_length);
  if (contextWindow === undefined) return undefined;
  const maxOutput = positiveInt(objectOf(entry?.top_provider)?.max_completion_tokens) ?? contextWindow;
  return {
    id,
    aliases: [],
    provider: "openrouter",
    upstreamModel: id,
    ownedBy: id.slice(0, id.indexOf("/")),
    contextWindow,
    maxOutput,
    // OpenRouter's models use their vendors' tokenizers; o200k_base only counts unreported usage.
    encoding: "o200k_base",
    prices: { input, cachedInput, output, ...(cacheWrite !== undefined ? { cacheWrite } : {}) },
  };
}

/**
 * USD per token (a decimal string, as OpenRouter sends it, or a number) → USD per 1M tokens with at
 * most 6 decimals, the catalogue's resolution (1e-12 USD per token); finer prices round up.
 */
export function perMillion(value: unknown): string | undefined {
  const text = typeof value === "number" && Number.isFinite(value) ? numberText(value) : value;
  if (typeof text !== "string") return undefined;
  const m = /^(\d*)(?:\.(\d*))?$/.exec(text.trim());
  if (!m || (m[1] === "" && !m[2])) return undefined;
  const whole = m[1] ?? "";
  const frac = m[2] ?? "";
  // × 1e6: six digits move from the fraction to the whole part.
  const digits = `${whole}${frac.slice(0, 6).padEnd(6, "0")}`;
  const rest = frac.slice(6);
  let micro = BigInt(digits || "0") * 1_000_000n + BigInt(rest.slice(0, 6).padEnd(6, "0") || "0");
  if (/[1-9]/.test(rest.slice(6))) micro += 1n;
  const int = micro / 1_000_000n;
  const fraction = (micro % 1_000_000n).toString().padStart(6, "0").replace(/0+$/, "");
  return fraction ? `${int}.${fraction}` : `${int}`;
}

/** A number's plain decimal digits (no exponent), e.g. 3e-7 → "0.0000003". */
function numberText(n: number): string | undefined {
  if (n < 0) return undefined;
  const s = n.toString();
  if (!s.includes("e")) return s;
  return n.toFixed(20).replace(/0+$/, "");
}

function positiveInt(v: unknown): number | undefined {
  return typeof v === "number" && Number.isSafeInteger(v) && v > 0 ? v : undefined;
}

function objectOf(v: unknown): Record<string, unknown> | undefined {
  return typeof v === "object" && v !== null && !Array.isArray(v)
    ? (v as Record<string, unknown>)
    : undefined;
}
