import type { IncomingMessage, ServerResponse } from "node:http";
import { RESPONSE_ALREADY_SENT } from "@hono/node-server/utils/response";
import type { Context } from "hono";
import { GatewayError } from "../core/errors.ts";

/**
 * The client side of a call. Under @hono/node-server the request body is read straight off the
 * socket and the response written to Node's ServerResponse, which keeps the proxy within a few
 * percent of a bare `node:http` pipe; elsewhere (Workers, `app.request()` in tests) the same calls
 * go through web streams. The choice is made per request from the bindings the runtime passed in.
 */
export interface StreamSink {
  /** Resolves when the chunk is handed to the socket; waits for drain when the client is slow. */
  write(chunk: Uint8Array | string): Promise<void> | undefined;
  end(): void;
}

/** How long a streamed response's headers may wait for its first chunk to go out with. */
const HEADERS_ALONE_AFTER_MS = 20;

type NodeBindings = { incoming: IncomingMessage; outgoing: ServerResponse };

function nodeBindings(c: Context): NodeBindings | undefined {
  const env = c.env as Partial<NodeBindings> | undefined;
  return env?.outgoing && env.incoming ? (env as NodeBindings) : undefined;
}

/** Reads the request body, refusing more than `limit` bytes. */
export async function readBody(c: Context, limit: number): Promise<Uint8Array> {
  const declared = Number(c.req.header("content-length") ?? Number.NaN);
  if (declared > limit) throw tooLarge(limit);
  const node = nodeBindings(c);
  if (!node) {
    const bytes = new Uint8Array(await c.req.arrayBuffer());
    if (bytes.byteLength > limit) throw tooLarge(limit);
    return bytes;
  }
  // Events, not `for await`: an async iterator costs a promise per chunk and a few objects per call.
  const incoming = node.incoming;
  return new Promise<Uint8Array>((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        done();
        incoming.resume(); // drain the rest unread
        reject(tooLarge(limit));
        return;
      }
      chunks.push(chunk);
    };
    const onEnd = () => {
      done();
      resolve(chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks, size));
    };
    const onError = (err: Error) => {
      done();
      reject(err);
    };
    const done = () => {
      incoming.off("data", onData);
      incoming.off("end", onEnd);
      incoming.off("error", onError);
    };
    if (incoming.readableEnded) return resolve(new Uint8Array(0));
    incoming.on("data", onData);
    incoming.on("end", onEnd);
    incoming.on("error", onError);
  });
}

function tooLarge(limit: number): GatewayError {
  return new GatewayError("invalid_request_error", `request body is larger than ${limit} bytes`);
}

/**
 * Calls `fn` with each request header (lower-case name, value). On Node it reads the parsed
 * `IncomingMessage.headers`: iterating the request's `Headers` would first build a full WHATWG
 * Headers object from the raw headers, validating each one, on every call.
 */
export function forEachRequestHeader(c: Context, fn: (name: string, value: string) => void): void {
  const node = nodeBindings(c);
  if (!node) {
    c.req.raw.headers.forEach((value, name) => {
      fn(name, value);
    });
    return;
  }
  const headers = node.incoming.headers;
  for (const name in headers) {
    const value = headers[name];
    if (value !== undefined) fn(name, Array.isArray(value) ? value.join(", ") : value);
  }
}

/** An AbortSignal that fires when the client goes away before its response is complete. */
export function clientGone(c: Context): AbortSignal {
  const controller = new AbortController();
  const node = nodeBindings(c);
  if (node) {
    node.outgoing.once("close", () => {
      if (!node.outgoing.writableFinished) controller.abort();
    });
  } else {
    const signal = c.req.raw.signal;
    if (signal.aborted) controller.abort();
    else signal.addEventListener("abort", () => controller.abort(), { once: true });
  }
  return controller.signal;
}

/** Sends a complete response. */
export function send(
  c: Context,
  status: number,
  headers: Record<string, string>,
  body: string | Uint8Array,
): Response {
  const node = nodeBindings(c);
  if (!node) return new Response(body as string | Uint8Array<ArrayBuffer>, { status, headers });
  node.outgoing.writeHead(status, headers);
  node.outgoing.end(body);
  return RESPONSE_ALREADY_SENT;
}

/**
 * Starts a streamed response and runs `pump` to fill it. On Node the pump runs to completion before
 * this resolves (the response is already on the wire); on web runtimes the Response is returned at
 * once and the pump fills its body.
 */
export async function stream(
  c: Context,
  status: number,
  headers: Record<string, string>,
  pump: (sink: StreamSink) => Promise<void>,
): Promise<Response> {
  const node = nodeBindings(c);
  if (node) {
    const res = node.outgoing;
    res.writeHead(status, headers);
    // The headers leave with the first chunk, in one write: a separate write for them cost a
    // syscall (and a wake-up of the client) per call. An upstream slow to send its first chunk gets
    // them sent alone after HEADERS_ALONE_AFTER_MS, so the client still sees the response begin.
    let headersTimer: NodeJS.Timeout | undefined = setTimeout(() => {
      headersTimer = undefined;
      if (!res.destroyed) res.flushHeaders();
    }, HEADERS_ALONE_AFTER_MS);
    const firstWrite = () => {
      clearTimeout(headersTimer);
      headersTimer = undefined;
    };
    // Writes are corked until the loop's check phase: what the upstream sent in one read (and the
    // end of the response, whose chunked terminator was a write of its own) leaves in one writev.
    const socket = res.socket;
    let corked = false;
    const uncork = () => {
      corked = false;
      // end() already uncorked the socket fully; a keep-alive socket may be corked by the next
      // response on it by now.
      if (!res.writableEnded) socket?.uncork();
    };
    await pump({
      write(chunk) {
        if (headersTimer) firstWrite();
        if (res.destroyed) return undefined;
        if (!corked && socket) {
          corked = true;
          socket.cork();
          setImmediate(uncork);
        }
        if (res.write(chunk)) return undefined;
        return new Promise<void>((resolve) => {
          const done = () => {
            res.off("drain", done);
            res.off("close", done);
            resolve();
          };
          res.on("drain", done);
          res.on("close", done);
        });
      },
      end() {
        if (headersTimer) firstWrite();
        if (!res.destroyed) res.end();
      },
    });
    return RESPONSE_ALREADY_SENT;
  }
  const { readable, writable } = new TransformStream<Uint8Array, Uint8Array>();
  const writer = writable.getWriter();
  const encoder = new TextEncoder();
  let closed = false;
  const sink: StreamSink = {
    write(chunk) {
      if (closed) return undefined;
      return writer.write(typeof chunk === "string" ? encoder.encode(chunk) : chunk).catch(() => {
        closed = true;
      });
    },
    end() {
      if (closed) return;
      closed = true;
      writer.close().catch(() => {});
    },
  };
  const done = pump(sink)
    .catch(() => {})
    .finally(() => sink.end());
  // Workers must keep the isolate alive until the money is settled after the body completes.
  const executionCtx = safeExecutionCtx(c);
  executionCtx?.waitUntil(done);
  return new Response(readable, { status, headers });
}

function safeExecutionCtx(c: Context): { waitUntil(p: Promise<unknown>): void } | undefined {
  try {
    return c.executionCtx;
  } catch {
    return undefined;
  }
}
