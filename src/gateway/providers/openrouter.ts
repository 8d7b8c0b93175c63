import {
  bearer,
  type JsonObject,
  type ProviderAdapter,
  prepareOpenAiChat,
  prepareResponsesModel,
  readOpenAiUsage,
  readResponsesApiUsage,
} from "./types.ts";

/**
 * OpenRouter speaks OpenAI's wire format and adds `usage.cost`, the USD it charged, which is the
 * base amount of the debit when present. `usage: {include: true}` asks for it on every response.
 */
export const openrouter: ProviderAdapter = {
  name: "openrouter",
  baseUrl: (config) => config.OPENROUTER_BASE_URL,
  integratedKey: (config) => config.OPENROUTER_API_KEY,
  authHeaders: bearer,
  prepareChat(body: JsonObject, upstreamModel: string, stream: boolean): boolean {
    let changed = prepareOpenAiChat(body, upstreamModel, stream);
    const usage = body.usage;
    if (typeof usage !== "object" || usage === null || (usage as JsonObject).include !== true) {
      body.usage = { include: true };
      changed = true;
    }
    return changed;
  },
  readUsage: readOpenAiUsage,
  // Its Responses API (beta) reports usage, with `cost`, on every response without being asked.
  prepareResponses: prepareResponsesModel,
  readResponsesUsage: readResponsesApiUsage,
};
