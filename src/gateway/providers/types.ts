import type { Config } from "../../config.ts";

export type { JsonObject, ProviderName, Usage } from "../../core/usage.ts";

import type { JsonObject, ProviderName, Usage } from "../../core/usage.ts";

/**
 * A provider, declared: where it lives, how it is authenticated, how a request is shaped for it and
 * how usage is read back. Adding a provider is one file like this plus a line in the registry.
 */
export interface ProviderAdapter {
  readonly name: ProviderName;
  baseUrl(config: Config): string;
  /** The key used in integrated mode (BYO orgs pass their own). */
  integratedKey(config: Config): string | undefined;
  authHeaders(key: string): Record<string, string>;
  /**
   * Shapes a chat request for this upstream, in place: the upstream's model id, and the request for
   * a usage report so every call can be metered. Returns whether the body changed.
   */
  prepareChat?(body: JsonObject, upstreamModel: string, stream: boolean): boolean;
  /** Reads usage from a response body or a stream's usage frame; undefined when there is none. */
  readUsage(payload: JsonObject): Usage | undefined;
  /**
   * Shapes a Responses API request (`/responses`) for this upstream, in place; absent when the
   * provider does not serve the Responses API. Returns whether the body changed.
   */
  prepareResponses?(body: JsonObject, upstreamModel: string): boolean;
  /** Reads usage from a Responses API response object (a plain body, or `response.completed`'s `response`). */
  readResponsesUsage?(response: JsonObject): Usage | undefined;
}

/**
 * Where a usage object keeps its counts, as paths of field names. The two OpenAI wire formats
 * name the same numbers differently; providers that extend them (OpenRouter's `cost`) add fields.
 */
export interface UsageFields {
  prompt: readonly string[];
  cached: readonly string[];
  cacheWrite: readonly string[];
  completion: readonly string[];
  reasoning: readonly string[];
  /** The provider's own charge in USD (OpenRouter). */
  cost: readonly string[];
}

/** Chat Completions: `prompt_tokens`, `completion_tokens` and their details. */
export const CHAT_USAGE: UsageFields = {
  prompt: ["prompt_tokens"],
  cached: ["prompt_tokens_details", "cached_tokens"],
  cacheWrite: ["prompt_tokens_details", "cache_write_tokens"],
  completion: ["completion_tokens"],
  reasoning: ["completion_tokens_details", "reasoning_tokens"],
  cost: ["cost"],
};

/** The Responses API: `input_tokens`, `output_tokens` and their details. */
export const RESPONSES_USAGE: UsageFields = {
  prompt: ["input_tokens"],
  cached: ["input_tokens_details", "cached_tokens"],
  cacheWrite: ["input_tokens_details", "cache_write_tokens"],
  completion: ["output_tokens"],
  reasoning: ["output_tokens_details", "reasoning_tokens"],
  cost: ["cost"],
};

function at(obj: JsonObject, path: readonly string[]): unknown {
  let v: unknown = obj;
  for (const key of path) {
    const o = objectOf(v);
    if (!o) return undefined;
    v = o[key];
  }
  return v;
}

/** Reads a usage object by its field map. */
export function readUsageFields(usage: JsonObject, fields: UsageFields): Usage {
  const result: Usage = {
    promptTokens: count(at(usage, fields.prompt)),
    cachedTokens: count(at(usage, fields.cached)),
    cacheWriteTokens: count(at(usage, fields.cacheWrite)),
    completionTokens: count(at(usage, fields.completion)),
    reasoningTokens: count(at(usage, fields.reasoning)),
  };
  const cost = at(usage, fields.cost);
  if (typeof cost === "number" && Number.isFinite(cost) && cost >= 0) result.upstreamCostUsd = cost;
  return result;
}

/** The Responses API's usage: on the response object, null until the response is complete. */
export function readResponsesApiUsage(response: JsonObject): Usage | undefined {
  const usage = objectOf(response.usage);
  return usage ? readUsageFields(usage, RESPONSES_USAGE) : undefined;
}

/** Sets the upstream's model id on a Responses API request (usage is always reported there). */
export function prepareResponsesModel(body: JsonObject, upstreamModel: string): boolean {
  if (body.model === upstreamModel) return false;
  body.model = upstreamModel;
  return true;
}

function count(v: unknown): number {
  return typeof v === "number" && Number.isFinite(v) && v > 0 ? Math.floor(v) : 0;
}

function objectOf(v: unknown): JsonObject | undefined {
  return typeof v === "object" && v !== null && !Array.isArray(v) ? (v as JsonObject) : undefined;
}

/** The OpenAI usage object, which OpenRouter extends with `cost` and cache-write counts. */
export function readOpenAiUsage(payload: JsonObject): Usage | undefined {
  const usage = objectOf(payload.usage);
  return usage ? readUsageFields(usage, CHAT_USAGE) : undefined;
}

export function bearer(key: string): Record<string, string> {
  return { authorization: `Bearer ${key}` };
}

/** Asks an OpenAI-compatible upstream for the usage frame on streams and sets its model id. */
export function prepareOpenAiChat(body: JsonObject, upstreamModel: string, stream: boolean): boolean {
  let changed = false;
  if (body.model !== upstreamModel) {
    body.model = upstreamModel;
    changed = true;
  }
  if (stream) {
    const options = objectOf(body.stream_options);
    if (options?.include_usage !== true) {
      body.stream_options = { ...options, include_usage: true };
      changed = true;
    }
  }
  return changed;
}
