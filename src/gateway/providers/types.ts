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
  if (!usage) return undefined;
  const prompt = objectOf(usage.prompt_tokens_details);
  const completion = objectOf(usage.completion_tokens_details);
  const result: Usage = {
    promptTokens: count(usage.prompt_tokens),
    cachedTokens: count(prompt?.cached_tokens),
    cacheWriteTokens: count(prompt?.cache_write_tokens),
    completionTokens: count(usage.completion_tokens),
    reasoningTokens: count(completion?.reasoning_tokens),
  };
  if (typeof usage.cost === "number" && Number.isFinite(usage.cost) && usage.cost >= 0) {
    result.upstreamCostUsd = usage.cost;
  }
  return result;
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
