import { Agent, request } from "undici";
import { classifyUpstreamError, type UpstreamClient } from "./upstream.ts";

/** undici's request API over one keep-alive pool shared by every provider. */
export function createNodeUpstream(opts: {
  headersTimeoutMs: number;
  idleTimeoutMs: number;
}): UpstreamClient {
  const dispatcher = new Agent({
    keepAliveTimeout: 30_000,
    keepAliveMaxTimeout: 600_000,
    headersTimeout: opts.headersTimeoutMs,
    bodyTimeout: opts.idleTimeoutMs,
    connect: { timeout: 10_000 },
  });
  return {
    async request(req) {
      try {
        const res = await request(req.url, {
          method: "POST",
          headers: req.headers,
          body: req.body,
          signal: req.signal,
          dispatcher,
        });
        const type = res.headers["content-type"];
        return {
          status: res.statusCode,
          contentType: (Array.isArray(type) ? type[0] : type) ?? "",
          body: wrapBody(res.body, req.signal),
          bytes: async () => {
            try {
              return await res.body.bytes();
            } catch (err) {
              throw classifyUpstreamError(err, req.signal);
            }
          },
        };
      } catch (err) {
        throw classifyUpstreamError(err, req.signal);
      }
    },
    close: () => dispatcher.close(),
  };
}

/** Iterates the body, turning the library's errors into the gateway's. */
async function* wrapBody(body: AsyncIterable<Uint8Array>, signal: AbortSignal): AsyncIterable<Uint8Array> {
  try {
    for await (const chunk of body) yield chunk;
  } catch (err) {
    throw classifyUpstreamError(err, signal);
  }
}
