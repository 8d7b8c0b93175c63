import { bearer, type ProviderAdapter, readOpenAiUsage } from "./types.ts";

/**
 * Relace instant apply: `{initialCode, editSnippet, stream?}` → `{mergedCode, usage}`. Its usage
 * object has OpenAI's field names, so it is read the same way.
 */
export const relace: ProviderAdapter = {
  name: "relace",
  baseUrl: (config) => config.RELACE_BASE_URL,
  integratedKey: (config) => config.RELACE_API_KEY,
  authHeaders: bearer,
  readUsage: readOpenAiUsage,
};
