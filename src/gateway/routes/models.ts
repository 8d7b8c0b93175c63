import { Hono } from "hono";
import { toOpenAiModel } from "../../pricing/catalog.ts";
import { namespaceOf } from "../namespace.ts";
import type { Services } from "../services.ts";

/**
 * `GET /v1/models` (and `/<provider>/v1/models`): the catalogue as that base URL names its models,
 * with provider prices (USD per 1M tokens, before markup). Built per request: the catalogue is
 * reloaded with OpenRouter's list in the background.
 */
export function modelRoutes(services: Services): Hono {
  const app = new Hono();
  app.get("/models", (c) => {
    const namespace = namespaceOf(c);
    const data = services.catalog.list(namespace).map((m) => toOpenAiModel(m, namespace));
    return c.body(JSON.stringify({ object: "list", data }), 200, { "content-type": "application/json" });
  });
  return app;
}
