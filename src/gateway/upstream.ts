/**
 * How the gateway talks to providers. On Node this is undici's request API over a keep-alive pool
 * (the global `fetch()` costs about two thirds of the throughput); on Workers it is `fetch()`.
 */
export interface UpstreamRequest {
  url: string;
  headers: Record<string, string>;
  body: string | Uint8Array;
  signal: AbortSignal;
}

export interface UpstreamResponse {
  status: number;
  contentType: string;
  /** A response header by its lower-case name (e.g. `retry-after` on a 429). */
  header(name: string): string | undefined;
  /**
   * Reads the body to its end, handing each chunk to `onChunk` as it arrives; when `onChunk`
   * returns a promise (the client is slow), reading pauses until it settles. Rejects with an
   * UpstreamError if the body fails or is aborted.
   */
  read(onChunk: (chunk: Uint8Array) => Promise<void> | undefined): Promise<void>;
  bytes(): Promise<Uint8Array>;
}

/** Why an upstream call failed before or while its body arrived. */
export type UpstreamFailure = "timeout" | "refused" | "aborted" | "network";

export class UpstreamError extends Error {
  override name = "UpstreamError";
  constructor(
    readonly failure: UpstreamFailure,
    message: string,
  ) {
    super(message);
  }
}

export interface UpstreamClient {
  request(req: UpstreamRequest): Promise<UpstreamResponse>;
  close(): Promise<void>;
}

/** Maps a client library's error to the failure the gateway reports. */
export function classifyUpstreamError(err: unknown, signal?: AbortSignal): UpstreamError {
  if (err instanceof UpstreamError) return err;
  if (signal?.aborted) return new UpstreamError("aborted", "request aborted");
  const code = (err as { code?: unknown })?.code;
  const name = (err as { name?: unknown })?.name;
  const message = err instanceof Error ? err.message : String(err);
  if (
    code === "UND_ERR_HEADERS_TIMEOUT" ||
    code === "UND_ERR_BODY_TIMEOUT" ||
    code === "UND_ERR_CONNECT_TIMEOUT"
  ) {
    return new UpstreamError("timeout", "upstream timed out");
  }
  if (name === "TimeoutError") return new UpstreamError("timeout", "upstream timed out");
  if (name === "AbortError") return new UpstreamError("aborted", "request aborted");
  const cause = (err as { cause?: { code?: unknown } })?.cause?.code;
  if (code === "ECONNREFUSED" || cause === "ECONNREFUSED") {
    return new UpstreamError("refused", "upstream refused the connection");
  }
  return new UpstreamError("network", `upstream connection failed: ${message}`);
}

/** The Workers (and any fetch runtime) client. */
export function createFetchUpstream(opts: { headersTimeoutMs: number }): UpstreamClient {
  return {
    async request(req) {
      const timeout = AbortSignal.timeout(opts.headersTimeoutMs);
      const signal = AbortSignal.any([req.signal, timeout]);
      let res: Response;
      try {
        const body = req.body as string | Uint8Array<ArrayBuffer>;
        res = await fetch(req.url, { method: "POST", headers: req.headers, body, signal });
      } catch (err) {
        if (timeout.aborted && !req.signal.aborted) throw new UpstreamError("timeout", "upstream timed out");
        throw classifyUpstreamError(err, req.signal);
      }
      const body = res.body;
      return {
        status: res.status,
        contentType: res.headers.get("content-type") ?? "",
        header: (name) => res.headers.get(name) ?? undefined,
        async read(onChunk) {
          if (!body) return;
          const reader = body.getReader();
          try {
            for (;;) {
              const { done, value } = await reader.read();
              if (done) return;
              const pending = onChunk(value);
              if (pending) await pending;
            }
          } catch (err) {
            throw classifyUpstreamError(err, req.signal);
          } finally {
            reader.releaseLock();
          }
        },
        bytes: async () => new Uint8Array(await res.arrayBuffer()),
      };
    },
    async close() {},
  };
}
