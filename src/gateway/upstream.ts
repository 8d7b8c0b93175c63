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

/**
 * The Workers (and any fetch runtime) client. `headersTimeoutMs` bounds the wait for the response
 * headers only; after them, the body may take as long as it keeps talking, and fails only after
 * `idleTimeoutMs` without a byte (a stream of a long answer runs for minutes).
 */
export function createFetchUpstream(opts: {
  headersTimeoutMs: number;
  idleTimeoutMs: number;
}): UpstreamClient {
  return {
    async request(req) {
      const stop = new AbortController();
      let timedOut = false;
      let timer: ReturnType<typeof setTimeout> | undefined;
      /** (Re)starts the one timer: for the headers first, then for each wait on the body. */
      const arm = (ms: number) => {
        clearTimeout(timer);
        timer = setTimeout(() => {
          timedOut = true;
          stop.abort();
        }, ms);
      };
      const failure = (err: unknown) =>
        timedOut && !req.signal.aborted
          ? new UpstreamError("timeout", "upstream timed out")
          : classifyUpstreamError(err, req.signal);
      const signal = AbortSignal.any([req.signal, stop.signal]);
      let res: Response;
      arm(opts.headersTimeoutMs);
      try {
        const body = req.body as string | Uint8Array<ArrayBuffer>;
        res = await fetch(req.url, { method: "POST", headers: req.headers, body, signal });
      } catch (err) {
        throw failure(err);
      } finally {
        clearTimeout(timer);
      }
      const body = res.body;
      const read = async (onChunk: (chunk: Uint8Array) => Promise<void> | undefined) => {
        if (!body) return;
        const reader = body.getReader();
        try {
          for (;;) {
            arm(opts.idleTimeoutMs);
            const { done, value } = await reader.read();
            clearTimeout(timer);
            if (done) return;
            const pending = onChunk(value);
            if (pending) await pending; // a slow client is not upstream silence
          }
        } catch (err) {
          throw failure(err);
        } finally {
          clearTimeout(timer);
          reader.releaseLock();
        }
      };
      return {
        status: res.status,
        contentType: res.headers.get("content-type") ?? "",
        header: (name) => res.headers.get(name) ?? undefined,
        read,
        async bytes() {
          const chunks: Uint8Array[] = [];
          let size = 0;
          await read((chunk) => {
            chunks.push(chunk);
            size += chunk.byteLength;
            return undefined;
          });
          const out = new Uint8Array(size);
          let at = 0;
          for (const chunk of chunks) {
            out.set(chunk, at);
            at += chunk.byteLength;
          }
          return out;
        },
      };
    },
    async close() {},
  };
}
