import type { Context } from "hono";
import { Hono } from "hono";
import type { Config } from "../../config.ts";
import { GatewayError } from "../../core/errors.ts";
import type { CallStart, CallTags } from "../../metering/meter.ts";
import type { CatalogModel } from "../../pricing/catalog.ts";
import type { AuthVariables } from "../auth.ts";
import { type PreparedCall, runCall } from "../call.ts";
import { readBody } from "../client-io.ts";
import { chatTextBytes, refuseOverContextWindow } from "../context-window.ts";
import { namespaceOf } from "../namespace.ts";
import { providers } from "../providers/index.ts";
import type { JsonObject, ProviderName } from "../providers/types.ts";
import { requestIdOf } from "../request-id.ts";
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
    const provider = providers[model.provider];
    if (!provider.prepareChat) {
      throw new GatewayError("invalid_request_error", `model '${modelId}' does not serve chat completions`, {
        param: "model",
      });
    }
    refuseOverContextWindow(model, chatTextBytes(messages), "messages");
    const changed = provider.prepareChat(body, model.upstreamModel, stream);
    const call = prepareCall(c, config, {
      route: "chat",
      path: "/chat/completions",
      model,
      // prepareChat touched only model and usage options; messages are as the client sent them.
      body,
      raw,
      changed,
      stream,
      maxTokens,
      startedAt,
      clientWantsUsage: stream && streamOptions?.include_usage === true,
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
    const changed = body.model !== undefined && body.model !== model.upstreamModel;
    if (changed) body.model = model.upstreamModel;
    const call = prepareCall(c, config, {
      route: "apply",
      path: "/code/apply",
      model,
      body,
      raw,
      changed,
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

/** A validated request, shaped for its provider, with everything the meter needs to know. */
function prepareCall(
  c: Context<Env>,
  config: Config,
  p: {
    route: CallStart["route"];
    path: string;
    model: CatalogModel;
    body: JsonObject;
    raw: Uint8Array;
    changed: boolean;
    stream: boolean;
    maxTokens: number | undefined;
    startedAt: number;
    clientWantsUsage: boolean;
  },
): PreparedCall {
  const provider = providers[p.model.provider];
  const keys = providerKey(c, provider.integratedKey(config));
  const { org, keyId, keyRateLimits } = c.get("auth");
  return {
    start: {
      requestId: requestIdOf(c),
      org,
      keyId,
      keyRateLimits,
      model: p.model,
      byoKey: keys.byoKey,
      route: p.route,
      stream: p.stream,
      request: p.body,
      requestBytes: p.raw.byteLength,
      maxTokens: p.maxTokens,
      tags: readTags(c),
      startedAt: p.startedAt,
    },
    provider,
    path: p.path,
    payload: p.changed ? JSON.stringify(p.body) : p.raw,
    apiKey: keys.apiKey,
    forwardHeaders: forwardedHeaders(c, provider.name, keys.byoKey !== undefined),
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
  c.req.raw.headers.forEach((value, name) => {
    if ((provider === "openrouter" && OPENROUTER_HEADERS.test(name)) || (byo && BYO_HEADERS.test(name))) {
      out[name] = value;
    }
  });
  return out;
}
