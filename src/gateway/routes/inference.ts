import type { Context } from "hono";
import { Hono } from "hono";
import type { Config } from "../../config.ts";
import { GatewayError } from "../../core/errors.ts";
import type { CallStart, CallTags } from "../../metering/meter.ts";
import type { CatalogModel } from "../../pricing/catalog.ts";
import { type AuthVariables, requireApiKey } from "../auth.ts";
import { type CallRoute, chatWire, type PreparedCall, runCall, type Wire } from "../call.ts";
import { forEachRequestHeader, readBody } from "../client-io.ts";
import { chatTextBytes, refuseOverContextWindow } from "../context-window.ts";
import { namespaceOf } from "../namespace.ts";
import { type ProviderAdapter, providers } from "../providers/index.ts";
import type { JsonObject, ProviderName } from "../providers/types.ts";
import { requestIdOf } from "../request-id.ts";
import { responsesWire } from "../responses-wire.ts";
import type { Services } from "../services.ts";
import {
  optionalBoolean,
  optionalObject,
  optionalPositiveInt,
  parseJsonObject,
  requireMessages,
  requireString,
} from "../validate.ts";

type Env = { Variables: AuthVariables };

const TAG_HEADERS: ReadonlyArray<[keyof CallTags, string]> = [
  ["planId", "x-planto-plan-id"],
  ["planName", "x-planto-plan-name"],
  ["sessionId", "x-planto-session-id"],
  ["userId", "x-planto-user-id"],
  ["purpose", "x-planto-purpose"],
  ["modelRole", "x-planto-model-role"],
  ["modelPack", "x-planto-model-pack"],
];

function readTags(c: Context): CallTags {
  const tags: CallTags = {};
  for (const [name, header] of TAG_HEADERS) {
    const v = c.req.header(header);
    if (v) tags[name] = v.slice(0, 256);
  }
  return tags;
}

/** The BYO org's own provider key; integrated orgs pay with the gateway's. */
function providerKey(
  c: Context<Env>,
  integrated: string | undefined,
): {
  apiKey: string | undefined;
  byoKey: string | undefined;
} {
  const org = c.get("auth").org;
  if (org.billingMode !== "byo") return { apiKey: integrated, byoKey: undefined };
  const byoKey = c.req.header("x-planto-provider-key")?.trim();
  if (!byoKey) {
    throw new GatewayError(
      "invalid_request_error",
      "this org brings its own provider key: send x-planto-provider-key",
      {
        param: "x-planto-provider-key",
      },
    );
  }
  return { apiKey: byoKey, byoKey };
}

export function inferenceRoutes(services: Services): Hono<Env> {
  const app = new Hono<Env>();
  const { config, catalog, clock } = services;

  app.post("/chat/completions", async (c) => {
    const startedAt = clock.now();
    const raw = await readBody(c, config.MAX_BODY_BYTES);
    const body = parseJsonObject(raw);
    const modelId = requireString(body, "model");
    const messages = requireMessages(body);
    const stream = optionalBoolean(body, "stream") ?? false;
    const streamOptions = optionalObject(body, "stream_options");
    const maxTokens =
      optionalPositiveInt(body, "max_completion_tokens") ?? optionalPositiveInt(body, "max_tokens");
    const model = catalog.resolve(modelId, namespaceOf(c));
    if (!model)
      throw new GatewayError("model_not_found", `model '${modelId}' does not exist`, { param: "model" });
    if (!providers[model.provider].prepareChat) {
      throw new GatewayError("invalid_request_error", `model '${modelId}' does not serve chat completions`, {
        param: "model",
      });
    }
    refuseOverContextWindow(model, chatTextBytes(messages), "messages");
    const call = prepareCall(c, config, {
      route: "chat",
      path: "/chat/completions",
      wire: chatWire,
      model,
      // prepareChat touches only model and usage options; messages are as the client sent them.
      shape: (provider) =>
        provider.prepareChat &&
        ((b, upstreamModel) => provider.prepareChat?.(b, upstreamModel, stream) ?? false),
      body,
      raw,
      stream,
      maxTokens,
      startedAt,
      clientWantsUsage: stream && (streamOptions?.include_usage === true || wantsCost(c)),
    });
    return runCall(c, services, call);
  });

  // The Responses API: usage always comes in the response (`response.completed` when streamed),
  // and the gateway adds its `cost` to it.
  app.post("/responses", requireApiKey(services.keys), async (c) => {
    const startedAt = clock.now();
    const raw = await readBody(c, config.MAX_BODY_BYTES);
    const body = parseJsonObject(raw);
    const modelId = requireString(body, "model");
    const input = requireResponsesInput(body);
    const stream = optionalBoolean(body, "stream") ?? false;
    const maxTokens = optionalPositiveInt(body, "max_output_tokens");
    const model = catalog.resolve(modelId, namespaceOf(c));
    if (!model)
      throw new GatewayError("model_not_found", `model '${modelId}' does not exist`, { param: "model" });
    if (!providers[model.provider].prepareResponses) {
      throw new GatewayError("invalid_request_error", `model '${modelId}' does not serve the Responses API`, {
        param: "model",
      });
    }
    refuseOverContextWindow(model, responsesTextBytes(body, input), "input");
    const call = prepareCall(c, config, {
      route: "responses",
      path: "/responses",
      wire: responsesWire,
      model,
      shape: (provider) => provider.prepareResponses,
      body,
      raw,
      stream,
      maxTokens,
      startedAt,
      clientWantsUsage: true,
    });
    return runCall(c, services, call);
  });

  app.post("/code/apply", async (c) => {
    const startedAt = clock.now();
    const raw = await readBody(c, config.MAX_BODY_BYTES);
    const body = parseJsonObject(raw);
    const initialCode = requireString(body, "initialCode");
    const editSnippet = requireString(body, "editSnippet");
    const stream = optionalBoolean(body, "stream") ?? false;
    const modelId =
      body.model === undefined ? catalog.defaultApplyModel().upstreamModel : requireString(body, "model");
    const model = catalog.resolve(modelId, namespaceOf(c));
    if (model?.provider !== "relace") {
      throw new GatewayError("model_not_found", `apply model '${modelId}' does not exist`, {
        param: "model",
      });
    }
    refuseOverContextWindow(
      model,
      Buffer.byteLength(initialCode) + Buffer.byteLength(editSnippet),
      "initialCode",
    );
    const named = body.model !== undefined;
    const call = prepareCall(c, config, {
      route: "apply",
      path: "/code/apply",
      wire: chatWire,
      model,
      shape: () => (b, upstreamModel) => {
        if (!named || b.model === upstreamModel) return false;
        b.model = upstreamModel;
        return true;
      },
      body,
      raw,
      stream,
      maxTokens: undefined,
      startedAt,
      // Relace's own stream carries its usage frame; it reaches the client with `cost` added.
      clientWantsUsage: true,
    });
    return runCall(c, services, call);
  });

  return app;
}

/**
 * Shapes a request body for a provider, in place, for the given upstream model; says whether it
 * changed. A shape sets top-level fields; it never changes a nested value in place (it sets a new
 * object instead), which is what lets shapedPayload tell what changed.
 */
type Shape = (body: JsonObject, upstreamModel: string) => boolean;

/**
 * The bytes to send for a body a shape changed. When the shape only added fields the client did
 * not send (the usual change: `stream_options` asking for the usage frame), they go in before the
 * client's closing brace, and every other byte is the client's own. When it changed a field the
 * client sent (the model's id), the body is serialized again: for a 64 KB prompt, JSON.stringify
 * and encoding the string cost ~100 µs, and the garbage ~130 KB.
 */
function shapedPayload(raw: Uint8Array, sent: JsonObject, body: JsonObject): string | Uint8Array {
  let added = "";
  let kept = 0;
  for (const key of Object.keys(body)) {
    const value = body[key];
    if (Object.hasOwn(sent, key)) {
      if (value !== sent[key]) return JSON.stringify(body);
      kept++;
    } else if (value === undefined) {
      return JSON.stringify(body); // which leaves it out
    } else {
      added += `,${JSON.stringify(key)}:${JSON.stringify(value)}`;
    }
  }
  const fields = Object.keys(sent).length;
  // A field removed, or a change this cannot see (against the rule above): serialized, to be safe.
  if (kept !== fields || added === "") return JSON.stringify(body);
  // The client's text is an object: its last `}` closes it, and only whitespace follows.
  const bytes = Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength);
  const close = bytes.lastIndexOf(0x7d);
  const insert = Buffer.from(fields === 0 ? added.slice(1) : added);
  return Buffer.concat([bytes.subarray(0, close), insert, bytes.subarray(close)]);
}

/** `x-planto-include-cost: 1`: a stream ends with a usage frame carrying `cost`, asked for or not. */
function wantsCost(c: Context): boolean {
  const v = c.req.header("x-planto-include-cost")?.trim().toLowerCase();
  return v === "1" || v === "true";
}

/** The Responses API's `input`: a string, or a non-empty array of items (objects). */
function requireResponsesInput(body: JsonObject): string | JsonObject[] {
  const v = body.input;
  if (v === undefined || v === null) {
    throw new GatewayError("invalid_request_error", "missing required parameter: 'input'", {
      param: "input",
    });
  }
  if (typeof v === "string") return v;
  if (!Array.isArray(v) || v.length === 0) {
    throw new GatewayError(
      "invalid_request_error",
      "'input' must be a string or a non-empty array of items",
      {
        param: "input",
      },
    );
  }
  v.forEach((item, i) => {
    if (typeof item !== "object" || item === null || Array.isArray(item)) {
      throw new GatewayError("invalid_request_error", `'input[${i}]' must be an object`, {
        param: `input[${i}]`,
      });
    }
  });
  return v as JsonObject[];
}

/** Text bytes of a Responses prompt: `instructions`, and `input` as a string or message-like items. */
function responsesTextBytes(body: JsonObject, input: string | JsonObject[]): number {
  const instructions = typeof body.instructions === "string" ? Buffer.byteLength(body.instructions) : 0;
  return instructions + (typeof input === "string" ? Buffer.byteLength(input) : chatTextBytes(input));
}

/**
 * The routes a call may take: the model's own provider, then (for calls paid with the gateway's
 * keys) each fallback whose provider serves this API and has a key. A BYO call stays on its
 * provider: the org's key is for that one only. Each route gets its own copy of the body.
 */
function callRoutes(
  c: Context<Env>,
  config: Config,
  model: CatalogModel,
  shape: (provider: ProviderAdapter) => Shape | undefined,
  body: JsonObject,
  raw: Uint8Array,
): { routes: CallRoute[]; byoKey: string | undefined } {
  const provider = providers[model.provider];
  const keys = providerKey(c, provider.integratedKey(config));
  const fallbacks = keys.byoKey === undefined ? model.fallbacks : [];
  const sent = { ...body };
  const changed = shape(provider)?.(body, model.upstreamModel) ?? false;
  const payload = changed ? shapedPayload(raw, sent, body) : raw;
  const routes: CallRoute[] = [{ model, provider, payload: () => payload, apiKey: keys.apiKey }];
  for (const fallback of fallbacks) {
    const other = providers[fallback.provider];
    const shapeFor = shape(other);
    const apiKey = other.integratedKey(config);
    if (!shapeFor || !apiKey) continue;
    // Most calls never reach a fallback: its body is made when it is first tried, from the
    // client's own bytes (a clone and a serialization of a 100 KB prompt cost ~140 µs per call).
    let shaped: string | Uint8Array | undefined;
    const fallbackPayload = () => {
      if (shaped === undefined) {
        const copy = parseJsonObject(raw);
        const client = { ...copy };
        shaped = shapeFor(copy, fallback.upstreamModel) ? shapedPayload(raw, client, copy) : raw;
      }
      return shaped;
    };
    routes.push({ model: fallback, provider: other, payload: fallbackPayload, apiKey });
  }
  return { routes, byoKey: keys.byoKey };
}

/** A validated request, shaped for its routes, with everything the meter needs to know. */
function prepareCall(
  c: Context<Env>,
  config: Config,
  p: {
    route: CallStart["route"];
    path: string;
    wire: Wire;
    model: CatalogModel;
    shape: (provider: ProviderAdapter) => Shape | undefined;
    body: JsonObject;
    raw: Uint8Array;
    stream: boolean;
    maxTokens: number | undefined;
    startedAt: number;
    clientWantsUsage: boolean;
  },
): PreparedCall {
  const { routes, byoKey } = callRoutes(c, config, p.model, p.shape, p.body, p.raw);
  const raw = p.raw; // not `p`, which holds the parsed body: the call keeps only the bytes
  const { org, keyId, keyRateLimits } = c.get("auth");
  return {
    start: {
      requestId: requestIdOf(c),
      org,
      keyId,
      keyRateLimits,
      model: p.model,
      byoKey,
      route: p.route,
      stream: p.stream,
      request: () => parseJsonObject(raw),
      requestBytes: p.raw.byteLength,
      maxTokens: p.maxTokens,
      tags: readTags(c),
      startedAt: p.startedAt,
    },
    routes,
    path: p.path,
    wire: p.wire,
    // Allowed client headers for the model's own provider (fallbacks get the same ones).
    forwardHeaders: forwardedHeaders(c, p.model.provider, byoKey !== undefined),
    clientWantsUsage: p.clientWantsUsage,
  };
}

/** What a provider wants to see of the client's own headers: OpenRouter's attribution and routing. */
const OPENROUTER_HEADERS = /^(http-referer|x-title|x-or-.+)$/;
/** A BYO org's OpenAI account scoping, which only the key's owner can ask for. */
const BYO_HEADERS = /^(openai-organization|openai-project)$/;

/**
 * The client headers that go upstream, from an allow-list: never `authorization` (the gateway's or
 * the BYO key is set apart) nor any `x-planto-*`.
 */
function forwardedHeaders(c: Context, provider: ProviderName, byo: boolean): Record<string, string> {
  const out: Record<string, string> = {};
  if (provider !== "openrouter" && !byo) return out;
  forEachRequestHeader(c, (name, value) => {
    if ((provider === "openrouter" && OPENROUTER_HEADERS.test(name)) || (byo && BYO_HEADERS.test(name))) {
      out[name] = value;
    }
  });
  return out;
}
