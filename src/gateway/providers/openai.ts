import {
  bearer,
  type ProviderAdapter,
  prepareOpenAiChat,
  prepareResponsesModel,
  readOpenAiUsage,
  readResponsesApiUsage,
} from "./types.ts";

export const openai: ProviderAdapter = {
  name: "openai",
  baseUrl: (config) => config.OPENAI_BASE_URL,
  integratedKey: (config) => config.OPENAI_API_KEY,
  authHeaders: bearer,
  prepareChat: prepareOpenAiChat,
  readUsage: readOpenAiUsage,
  prepareResponses: prepareResponsesModel,
  readResponsesUsage: readResponsesApiUsage,
};
