import { Hono } from "hono";
import { toOpenAiModel } from "../../pricing/catalog.ts";
import type { Services } from "../services.ts";

/** `GET /v1/models`: the catalog with provider prices (USD per 1M tokens, before markup). */
export function modelRoutes(services: Services): Hono {
  const app = new Hono();
  const body = JSON.stringify({ object: "list", data: services.catalog.list().map(toOpenAiModel) });
  app.get("/models", (c) => c.body(body, 200, { "content-type": "application/json" }));
  return app;
}
