import type { Context } from "hono";
import type { Namespace } from "../pricing/catalog.ts";

/** The path parameter of a provider-scoped base URL: `/:provider/v1/*`. */
export const NAMESPACE_PARAM = "provider";

/** Which base URL the request came in on: `/v1` is Planto's, `/<provider>/v1` that provider's. */
export function namespaceOf(c: Context): Namespace {
  const provider = c.req.param(NAMESPACE_PARAM);
  return provider === "openai" || provider === "openrouter" || provider === "relace" ? provider : "planto";
}
