export type ProviderName = "openai" | "openrouter" | "relace";

/** Token counts as a provider reports them, normalised. `completionTokens` includes reasoning tokens. */
export interface Usage {
  promptTokens: number;
  cachedTokens: number;
  cacheWriteTokens: number;
  completionTokens: number;
  reasoningTokens: number;
  /** OpenRouter's own charge for the call, in USD, when it reports one. */
  upstreamCostUsd?: number;
}

export type JsonObject = Record<string, unknown>;
