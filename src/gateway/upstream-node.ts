import type { Readable } from "node:stream";
import { Agent } from "undici";
import { classifyUpstreamError, type UpstreamClient, UpstreamError } from "./upstream.ts";

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
  // undici's `request(url, …)` parses the URL and copies the options on every call; the agent's own
  // `request` takes the origin and path, parsed here once per URL (a provider's base URL and route).
  const targets = new Map<string, { origin: string; path: string }>();
  const target = (url: string) => {
    let t = targets.get(url);
    if (!t) {
      const parsed = new URL(url);
      t = { origin: parsed.origin, path: `${parsed.pathname}${parsed.search}` };
      if (targets.size >= 256) targets.clear();
      targets.set(url, t);
    }
    return t;
  };
  return {
    async request(req) {
      try {
        const { origin, path } = target(req.url);
        const res = await dispatcher.request({
          origin,
          path,
          method: "POST",
          headers: req.headers,
          body: req.body,
          signal: req.signal,
        });
        const type = res.headers["content-type"];
        return {
          status: res.statusCode,
          contentType: (Array.isArray(type) ? type[0] : type) ?? "",
          header: (name) => {
            const value = res.headers[name];
            return Array.isArray(value) ? value[0] : value;
          },
          read: (onChunk) => readBody(res.body, onChunk, req.signal),
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

/**
 * Reads the body by its events rather than an async iterator (which costs a few promises per
 * chunk, and a stream is hundreds of chunks), pausing while the client is slow, and turning the
 * library's errors into the gateway's.
 */
function readBody(
  body: Readable,
  onChunk: (chunk: Uint8Array) => Promise<void> | undefined,
  signal: AbortSignal,
): Promise<void> {
  return new Promise((resolve, reject) => {
    const finish = (err?: unknown) => {
      body.off("data", onData);
      body.off("end", onEnd);
      body.off("error", onError);
      body.off("close", onClose);
      // Destroying the body (below, when the consumer failed) emits an error after this: without a
      // listener left, Node would throw it and take every other call in the process down with it.
      body.on("error", ignore);
      if (err === undefined) resolve();
      else reject(classifyUpstreamError(err, signal));
    };
    const onData = (chunk: Buffer) => {
      let pending: Promise<void> | undefined;
      try {
        pending = onChunk(chunk);
      } catch (err) {
        finish(err);
        body.destroy();
        return;
      }
      if (!pending) return;
      body.pause();
      pending.then(
        () => body.resume(),
        (err: unknown) => {
          finish(err);
          body.destroy();
        },
      );
    };
    const onEnd = () => finish();
    const onError = (err: Error) => finish(err);
    // Closed without its end (aborted, or the connection dropped without an error event).
    const onClose = () =>
      finish(
        signal.aborted
          ? new UpstreamError("aborted", "request aborted")
          : new UpstreamError("network", "upstream closed the response early"),
      );
    body.on("data", onData);
    body.once("end", onEnd);
    body.once("error", onError);
    body.once("close", onClose);
  });
}

function ignore(): void {}
