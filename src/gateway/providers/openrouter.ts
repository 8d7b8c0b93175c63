import {
  bearer,
  type ProviderAdapter,
  prepareOpenAiChat,
  prepareResponsesModel,
  readOpenAiUsage,
  readResponsesApiUsage,
} from "./types.ts";

/**
 * OpenRouter speaks OpenAI's wire format and adds `usage.cost`, the USD it charged, which is the
 * base amount of the debit when present. It reports usage, cost included, on every response now
 * (its `usage: {include: true}` is deprecated and has no effect), so the body goes up as the
 * client sent it: a drop-in client's bytes reach OpenRouter unchanged.
 */
export const openrouter: ProviderAdapter = {
  name: "openrouter",
  baseUrl: (config) => config.OPENROUTER_BASE_URL,
  integratedKey: (config) => config.OPENROUTER_API_KEY,
  authHeaders: bearer,
  prepareChat: prepareOpenAiChat,
  readUsage: readOpenAiUsage,
  // Its Responses API (beta) reports usage, with `cost`, on every response without being asked.
  prepareResponses: prepareResponsesModel,
  readResponsesUsage: readResponsesApiUsage,
};
