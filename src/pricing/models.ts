import type { ModelSpec } from "./model-spec.ts";

/**
 * The models Planto uses, with the providers' list prices in USD per 1M tokens (exact decimals).
 * Sources: OpenAI's API pricing page (gpt-4.1 family, o3 after the June 2025 price cut, o4-mini);
 * Anthropic's pricing page (cache reads at 0.1×, 5-minute cache writes at 1.25× the input price);
 * Google's Gemini API pricing (2.5 Pro at the ≤200k-token tier); OpenRouter's model pages for
 * DeepSeek; Relace's pricing for instant apply. An operator overrides or adds prices with
 * PRICES_FILE, no code change.
 */
export const builtinModels: ModelSpec[] = [
  // OpenAI: reached directly; the bare id is an alias.
  openai("gpt-4.1", "2", "0.5", "8", 1_047_576, 32_768),
  openai("gpt-4.1-mini", "0.4", "0.1", "1.6", 1_047_576, 32_768),
  openai("gpt-4.1-nano", "0.1", "0.025", "0.4", 1_047_576, 32_768),
  openai("o3", "2", "0.5", "8", 200_000, 100_000),
  openai("o4-mini", "1.1", "0.275", "4.4", 200_000, 100_000),
  // Anthropic, through OpenRouter.
  vendor("anthropic/claude-sonnet-4", "anthropic", "3", "0.3", "3.75", "15", 200_000, 64_000),
  vendor("anthropic/claude-opus-4", "anthropic", "15", "1.5", "18.75", "75", 200_000, 32_000),
  vendor("anthropic/claude-3.7-sonnet", "anthropic", "3", "0.3", "3.75", "15", 200_000, 64_000),
  vendor("anthropic/claude-3.5-haiku", "anthropic", "0.8", "0.08", "1", "4", 200_000, 8_192),
  // Google, through OpenRouter.
  vendor("google/gemini-2.5-pro", "google", "1.25", "0.31", undefined, "10", 1_048_576, 65_536),
  vendor("google/gemini-2.5-flash", "google", "0.3", "0.075", undefined, "2.5", 1_048_576, 65_535),
  // DeepSeek, through OpenRouter.
  vendor("deepseek/deepseek-chat-v3-0324", "deepseek", "0.27", "0.07", undefined, "1.1", 163_840, 16_384, [
    "deepseek/deepseek-v3",
    "deepseek/deepseek-chat",
  ]),
  vendor("deepseek/deepseek-r1", "deepseek", "0.55", "0.14", undefined, "2.19", 163_840, 32_768),
  // Relace instant apply.
  {
    id: "relace-apply-3",
    aliases: ["relace-apply"],
    provider: "relace",
    upstreamModel: "relace-apply-3",
    ownedBy: "relace",
    contextWindow: 256_000,
    maxOutput: 128_000,
    encoding: "o200k_base",
    prices: { input: "0.85", cachedInput: "0.85", output: "1.25" },
  },
];

function openai(
  id: string,
  input: string,
  cachedInput: string,
  output: string,
  contextWindow: number,
  maxOutput: number,
): ModelSpec {
  return {
    id: `openai/${id}`,
    aliases: [id],
    provider: "openai",
    upstreamModel: id,
    ownedBy: "openai",
    contextWindow,
    maxOutput,
    encoding: "o200k_base",
    prices: { input, cachedInput, output },
  };
}

function vendor(
  id: string,
  ownedBy: string,
  input: string,
  cachedInput: string,
  cacheWrite: string | undefined,
  output: string,
  contextWindow: number,
  maxOutput: number,
  aliases: string[] = [],
): ModelSpec {
  return {
    id,
    aliases,
    provider: "openrouter",
    upstreamModel: id,
    ownedBy,
    contextWindow,
    maxOutput,
    // Their tokenizers are not public; o200k_base is the stand-in for counting unreported usage.
    encoding: "o200k_base",
    prices: { input, cachedInput, output, ...(cacheWrite ? { cacheWrite } : {}) },
  };
}
