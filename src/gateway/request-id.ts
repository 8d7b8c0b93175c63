import { RESPONSE_ALREADY_SENT } from "@hono/node-server/utils/response";
import type { Context, MiddlewareHandler } from "hono";

declare module "hono" {
  interface ContextVariableMap {
    requestId: string;
  }
}

export function newRequestId(): string {
  return `req_${crypto.randomUUID().replaceAll("-", "")}`;
}

/** This request's id: the one its usage record, its log line and its `x-request-id` carry. */
export function requestIdOf(c: Context): string {
  let id = c.get("requestId");
  if (!id) {
    id = newRequestId();
    c.set("requestId", id);
  }
  return id;
}

/**
 * Every response carries `x-request-id`, errors included, so a customer can quote it and support
 * can find the call's record. Responses written straight to Node's socket set it themselves.
 */
export function requestIds(): MiddlewareHandler {
  return async (c, next) => {
    const id = requestIdOf(c);
    await next();
    if (c.res === RESPONSE_ALREADY_SENT || c.res.headers.has("x-request-id")) return;
    try {
      c.res.headers.set("x-request-id", id);
    } catch {
      // an immutable Response (passed through as is): copy it with the header
      const res = new Response(c.res.body, c.res);
      res.headers.set("x-request-id", id);
      c.res = res;
    }
  };
}
