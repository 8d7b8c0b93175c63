import { EventEmitter } from "node:events";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";

/**
 * A stand-in for OpenAI, OpenRouter and Relace that speaks their wire formats, for the tests, the
 * benchmark and `npm run dev`. One server serves all three under path prefixes:
 * `/openai/v1/chat/completions`, `/openrouter/v1/chat/completions`, `/relace/v1/code/apply`.
 *
 * Knobs come per request in a `mock` object of the JSON body (the gateway passes unknown fields
 * through untouched): see MockKnobs.
 */
export interface MockKnobs {
  /** A name to find this request by (waitForRequest, waitForClientAbort). */
  tag?: string;
  /** Content chunks in a stream (default 20); each is one token. */
  chunks?: number;
  chunkText?: string;
  /** Delay between chunks, and before the first byte. */
  delayMs?: number;
  firstByteDelayMs?: number;
  /** Destroy the socket after this many chunks (no [DONE], no usage). */
  abortAfterChunks?: number;
  /** Send an error frame after this many chunks, then end. */
  errorAfterChunks?: number;
  /** Never report usage. */
  noUsage?: boolean;
  /** Answer with this HTTP status and the provider's error body. */
  status?: number;
  /** Accept the request and never answer. */
  hang?: boolean;
  usage?: {
    prompt_tokens?: number;
    completion_tokens?: number;
    cached_tokens?: number;
    cache_write_tokens?: number;
    reasoning_tokens?: number;
    /** OpenRouter's charge in USD. */
    cost?: number;
  };
}

export type Flavour = "openai" | "openrouter" | "relace";

export interface MockRequestLog {
  flavour: Flavour;
  path: string;
  headers: IncomingMessage["headers"];
  body: Record<string, unknown>;
  tag: string | undefined;
}

export interface MockUpstream {
  url: string;
  baseUrls: Record<Flavour, string>;
  requests: MockRequestLog[];
  waitForRequest(tag: string, timeoutMs?: number): Promise<MockRequestLog>;
  /** Resolves when the client of the request tagged `tag` went away before the answer was complete. */
  waitForClientAbort(tag: string, timeoutMs?: number): Promise<void>;
  close(): Promise<void>;
}

const MAX_LOG = 1000;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function promptTokensOf(body: Record<string, unknown>): number {
  if (Array.isArray(body.messages)) {
    let n = 3;
    for (const m of body.messages as Array<{ content?: unknown }>) {
      const text = typeof m?.content === "string" ? m.content : JSON.stringify(m?.content ?? "");
      n += 3 + Math.ceil(text.length / 4);
    }
    return n;
  }
  const code = `${String(body.initialCode ?? "")}${String(body.editSnippet ?? "")}`;
  return Math.ceil(code.length / 4);
}

interface UsageNumbers {
  prompt: number;
  completion: number;
  cached: number;
  cacheWrite: number;
  reasoning: number;
  cost: number;
}

function usageOf(body: Record<string, unknown>, knobs: MockKnobs, chunks: number): UsageNumbers {
  const u = knobs.usage ?? {};
  const prompt = u.prompt_tokens ?? promptTokensOf(body);
  const completion = u.completion_tokens ?? chunks;
  return {
    prompt,
    completion,
    cached: u.cached_tokens ?? 0,
    cacheWrite: u.cache_write_tokens ?? 0,
    reasoning: u.reasoning_tokens ?? 0,
    cost: u.cost ?? Number((prompt * 1e-6 + completion * 2e-6).toFixed(9)),
  };
}

function openAiUsage(n: UsageNumbers, flavour: Flavour): Record<string, unknown> {
  const usage: Record<string, unknown> = {
    prompt_tokens: n.prompt,
    completion_tokens: n.completion,
    total_tokens: n.prompt + n.completion,
    prompt_tokens_details: {
      cached_tokens: n.cached,
      ...(flavour === "openrouter" ? { cache_write_tokens: n.cacheWrite } : { audio_tokens: 0 }),
    },
    completion_tokens_details: {
      reasoning_tokens: n.reasoning,
      ...(flavour === "openai" ? { audio_tokens: 0 } : {}),
    },
  };
  if (flavour === "openrouter") usage.cost = n.cost;
  return usage;
}

function errorBody(status: number): string {
  const type =
    status === 429 ? "rate_limit_exceeded" : status >= 500 ? "server_error" : "invalid_request_error";
  return JSON.stringify({
    error: {
      message: `mock upstream answered ${status}`,
      type,
      param: null,
      code: status === 401 ? "invalid_api_key" : null,
    },
  });
}

export async function startMockUpstream(opts: { port?: number; host?: string } = {}): Promise<MockUpstream> {
  const requests: MockRequestLog[] = [];
  const events = new EventEmitter();
  events.setMaxListeners(0);
  const aborted = new Set<string>();

  async function chat(
    flavour: Flavour,
    body: Record<string, unknown>,
    knobs: MockKnobs,
    res: ServerResponse,
  ) {
    const model = String(body.model ?? "unknown");
    const stream = body.stream === true;
    const chunks = knobs.chunks ?? 20;
    const text = knobs.chunkText ?? " tok";
    // A tagged request gets a fixed id and time, so tests can compare bytes across two calls.
    const id = knobs.tag
      ? `chatcmpl-${knobs.tag}`
      : `chatcmpl-mock${Math.random().toString(36).slice(2, 12)}`;
    const created = knobs.tag ? 1_700_000_000 : Math.floor(Date.now() / 1000);
    const numbers = usageOf(body, knobs, chunks);
    const streamOptions = body.stream_options as { include_usage?: boolean } | undefined;
    const usageRequested =
      streamOptions?.include_usage === true ||
      (flavour === "openrouter" && (body.usage as { include?: boolean } | undefined)?.include === true);
    if (!stream) {
      const completion = {
        id,
        object: "chat.completion",
        created,
        model,
        choices: [
          {
            index: 0,
            message: { role: "assistant", content: text.repeat(chunks), refusal: null, annotations: [] },
            logprobs: null,
            finish_reason: "stop",
          },
        ],
        ...(knobs.noUsage ? {} : { usage: openAiUsage(numbers, flavour) }),
        service_tier: "default",
        system_fingerprint: "fp_mock",
      };
      const payload = JSON.stringify(completion);
      res.writeHead(200, {
        "content-type": "application/json",
        "content-length": Buffer.byteLength(payload),
      });
      res.end(payload);
      return;
    }
    res.writeHead(200, {
      "content-type": "text/event-stream",
      "cache-control": "no-cache",
      connection: "keep-alive",
    });
    const usageNull = usageRequested && flavour === "openai" ? ',"usage":null' : "";
    const head = `data: {"id":"${id}","object":"chat.completion.chunk","created":${created},"model":${JSON.stringify(model)},"system_fingerprint":"fp_mock","choices":[`;
    const frame = (delta: string, finish: string | null) =>
      `${head}{"index":0,"delta":${delta},"logprobs":null,"finish_reason":${finish === null ? "null" : `"${finish}"`}}]${usageNull}}\n\n`;
    const contentFrame = frame(`{"content":${JSON.stringify(text)}}`, null);
    if (flavour === "openrouter") res.write(": OPENROUTER PROCESSING\n\n");
    res.write(frame('{"role":"assistant","content":"","refusal":null}', null));
    for (let i = 0; i < chunks; i++) {
      if (knobs.abortAfterChunks !== undefined && i >= knobs.abortAfterChunks) {
        res.destroy();
        return;
      }
      if (knobs.errorAfterChunks !== undefined && i >= knobs.errorAfterChunks) {
        res.end(
          `data: ${JSON.stringify({ error: { message: "mock upstream failed mid-stream", type: "server_error", param: null, code: null } })}\n\n`,
        );
        return;
      }
      if (knobs.delayMs) await sleep(knobs.delayMs);
      if (res.destroyed) return;
      res.write(contentFrame);
    }
    res.write(frame("{}", "stop"));
    if (usageRequested && !knobs.noUsage) {
      res.write(`${head}],"usage":${JSON.stringify(openAiUsage(numbers, flavour))}}\n\n`);
    }
    res.end("data: [DONE]\n\n");
  }

  async function apply(body: Record<string, unknown>, knobs: MockKnobs, res: ServerResponse) {
    const merged = `${String(body.initialCode ?? "")}\n${String(body.editSnippet ?? "")}`;
    const chunks = knobs.chunks ?? 20;
    const numbers = usageOf(body, knobs, chunks);
    const usage = {
      prompt_tokens: numbers.prompt,
      completion_tokens: numbers.completion,
      total_tokens: numbers.prompt + numbers.completion,
    };
    if (body.stream !== true) {
      const payload = JSON.stringify({ mergedCode: merged, ...(knobs.noUsage ? {} : { usage }) });
      res.writeHead(200, {
        "content-type": "application/json",
        "content-length": Buffer.byteLength(payload),
      });
      res.end(payload);
      return;
    }
    res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
    const size = Math.max(1, Math.ceil(merged.length / chunks));
    for (let i = 0; i < chunks; i++) {
      if (knobs.abortAfterChunks !== undefined && i >= knobs.abortAfterChunks) {
        res.destroy();
        return;
      }
      if (knobs.delayMs) await sleep(knobs.delayMs);
      if (res.destroyed) return;
      res.write(`data: ${JSON.stringify({ mergedCode: merged.slice(i * size, (i + 1) * size) })}\n\n`);
    }
    if (!knobs.noUsage) res.write(`data: ${JSON.stringify({ usage })}\n\n`);
    res.end("data: [DONE]\n\n");
  }

  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const path = req.url ?? "/";
      const flavour = (["openai", "openrouter", "relace"] as const).find((f) => path.startsWith(`/${f}/`));
      const route = flavour ? path.slice(flavour.length + 1) : path;
      if (req.method === "GET" && flavour && route === "/v1/models") {
        res.writeHead(200, { "content-type": "application/json" });
        res.end('{"object":"list","data":[]}');
        return;
      }
      const known =
        req.method === "POST" &&
        ((flavour !== "relace" && flavour !== undefined && route === "/v1/chat/completions") ||
          (flavour === "relace" && route === "/v1/code/apply"));
      if (!known || !flavour) {
        res.writeHead(404, { "content-type": "application/json" });
        res.end(errorBody(404));
        return;
      }
      let body: Record<string, unknown>;
      try {
        body = JSON.parse(Buffer.concat(chunks).toString("utf8")) as Record<string, unknown>;
      } catch {
        res.writeHead(400, { "content-type": "application/json" });
        res.end(errorBody(400));
        return;
      }
      const knobs = (body.mock ?? {}) as MockKnobs;
      const entry: MockRequestLog = { flavour, path, headers: req.headers, body, tag: knobs.tag };
      requests.push(entry);
      if (requests.length > MAX_LOG) requests.shift();
      if (knobs.tag) {
        const tag = knobs.tag;
        res.on("close", () => {
          if (!res.writableFinished) {
            aborted.add(tag);
            events.emit(`abort:${tag}`);
          }
        });
        events.emit(`request:${tag}`, entry);
      }
      if (knobs.hang) return;
      if (knobs.status && knobs.status >= 400) {
        res.writeHead(knobs.status, { "content-type": "application/json" });
        res.end(errorBody(knobs.status));
        return;
      }
      const run = async () => {
        if (knobs.firstByteDelayMs) await sleep(knobs.firstByteDelayMs);
        if (flavour === "relace") await apply(body, knobs, res);
        else await chat(flavour, body, knobs, res);
      };
      run().catch(() => res.destroy());
    });
  });
  server.keepAliveTimeout = 60_000;
  await new Promise<void>((resolve) => server.listen(opts.port ?? 0, opts.host ?? "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  const url = `http://${opts.host ?? "127.0.0.1"}:${port}`;

  const waitFor = <T>(event: string, done: () => T | undefined, timeoutMs: number): Promise<T> =>
    new Promise((resolve, reject) => {
      const now = done();
      if (now !== undefined) return resolve(now);
      const timer = setTimeout(() => {
        events.off(event, listener);
        reject(new Error(`mock upstream: timed out waiting for ${event}`));
      }, timeoutMs);
      const listener = () => {
        const value = done();
        if (value === undefined) return;
        clearTimeout(timer);
        events.off(event, listener);
        resolve(value);
      };
      events.on(event, listener);
    });

  return {
    url,
    baseUrls: { openai: `${url}/openai/v1`, openrouter: `${url}/openrouter/v1`, relace: `${url}/relace/v1` },
    requests,
    waitForRequest: (tag, timeoutMs = 5_000) =>
      waitFor(`request:${tag}`, () => requests.findLast((r) => r.tag === tag), timeoutMs),
    waitForClientAbort: (tag, timeoutMs = 5_000) =>
      waitFor(`abort:${tag}`, () => (aborted.has(tag) ? true : undefined), timeoutMs).then(() => undefined),
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const { values } = parseArgs({ options: { port: { type: "string" }, json: { type: "boolean" } } });
  const mock = await startMockUpstream({ port: Number(values.port ?? 9999) });
  if (values.json) process.stdout.write(`${JSON.stringify({ url: mock.url, ...mock.baseUrls })}\n`);
  else process.stdout.write(`mock upstream on ${mock.url}\n  ${Object.values(mock.baseUrls).join("\n  ")}\n`);
  const stop = () => mock.close().then(() => process.exit(0));
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}
