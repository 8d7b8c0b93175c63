import { EventEmitter } from "node:events";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import { openRouterModelList } from "./openrouter-models.ts";

/**
 * A stand-in for OpenAI, OpenRouter and Relace that speaks their wire formats, for the tests, the
 * benchmark and `npm run dev`. One node:http server serves all three under path prefixes:
 * `/openai/v1/chat/completions`, `/openrouter/v1/chat/completions`, `/relace/v1/code/apply`, plus
 * `GET /{openai,openrouter}/v1/models`.
 *
 * Wire shapes follow recorded traffic of the real services:
 * - OpenAI: every chunk carries `"usage":null` when `stream_options.include_usage` is set, then a
 *   usage-only chunk with `"choices":[]`; deltas carry `obfuscation` padding unless
 *   `stream_options.include_obfuscation` is false; a failure mid-stream is one `data: {"error":…}`
 *   frame and the stream closes without `[DONE]`.
 * - OpenRouter: `: OPENROUTER PROCESSING` comments, `provider` and `native_finish_reason` on every
 *   chunk, no `"usage":null`, and usage (with `cost` in USD) on every response whether or not the
 *   request asked: OpenRouter deprecated `usage:{include:true}` and `stream_options.include_usage`
 *   and always reports now. The usage chunk has `"choices":[]` (their current shape); the knob
 *   `usageOnChoice` sends the older shape, usage on a chunk that repeats the finish choice.
 *   A mid-stream failure is a chunk with a top-level `error` and `finish_reason:"error"`.
 * - The Responses API (`/openai/v1/responses`, `/openrouter/v1/responses`): a plain body is the
 *   response object, with `usage` in `input_tokens`/`output_tokens` and their details; a stream is
 *   `event:`-named SSE events numbered by `sequence_number` (`response.created`, `.in_progress`,
 *   `.output_item.added`, `.content_part.added`, `.output_text.delta`…, their `.done`s, then
 *   `response.completed` carrying the finished response and its usage) with no `[DONE]` after.
 *   A failure mid-stream is an `error` event. OpenRouter adds `cost` to the usage.
 * - Relace: `{initialCode, editSnippet}` (or the snake_case names of their newer docs) →
 *   `{mergedCode, usage}`. Its streaming format is not publicly documented; this mock sends SSE
 *   frames `{"mergedCode": <piece>}`, then `{"usage": …}`, then `[DONE]`.
 *
 * Knobs come per request in a `mock` object of the JSON body (the gateway passes unknown fields
 * through untouched): see MockKnobs.
 */
export interface MockKnobs {
  /** A name to find this request by (waitForRequest, waitForClientAbort); also fixes id and time. */
  tag?: string;
  /** Content chunks in a stream (default 20); each is one token, so completion_tokens = chunks. */
  chunks?: number;
  /** The text of one chunk (default " tok"). */
  chunkText?: string;
  /** Delay before each content chunk. */
  delayMs?: number;
  /** Delay before the status line (OpenRouter streams send headers and a comment first). */
  firstByteDelayMs?: number;
  /** Destroy the socket after this many content chunks: no finish, no usage, no [DONE]. A plain
   * (non-streamed) request is dropped without an answer. */
  abortAfterChunks?: number;
  /** Send the provider's mid-stream error frame after this many content chunks, then end. */
  errorAfterChunks?: number;
  /** Hold `data: [DONE]` back this long after the usage frame (a client may close in between). */
  doneDelayMs?: number;
  /** Never report usage, even when asked. */
  noUsage?: boolean;
  /** Answer with this HTTP status (>= 400) and the provider's error body. */
  status?: number;
  /** With `status`: only the first this many requests with the same tag fail; later ones are served. */
  failFirst?: number;
  /** With `status`: only requests to this provider fail (e.g. OpenAI down, OpenRouter fine). */
  failOn?: Flavour;
  /** With `status`: the error answer's `retry-after` header, in seconds. */
  retryAfter?: number;
  /** Accept the request and never answer. */
  hang?: boolean;
  /** OpenRouter only: put usage on a chunk that repeats the finish choice instead of `choices: []`. */
  usageOnChoice?: boolean;
  usage?: {
    prompt_tokens?: number;
    /** Includes reasoning tokens, as OpenAI counts them (default chunks + reasoning_tokens). */
    completion_tokens?: number;
    cached_tokens?: number;
    /** OpenRouter's prompt-cache writes. */
    cache_write_tokens?: number;
    reasoning_tokens?: number;
    /** OpenRouter's charge in USD (default prompt·1e-6 + completion·2e-6). */
    cost?: number;
  };
}

export type Flavour = "openai" | "openrouter" | "relace";

export interface MockRequestLog {
  flavour: Flavour;
  path: string;
  headers: IncomingMessage["headers"];
  /** The body's bytes as they arrived, for tests of byte-exact passthrough. */
  raw: Buffer;
  body: Record<string, unknown>;
  tag: string | undefined;
}

export interface MockUpstream {
  /** http://host:port */
  url: string;
  /** The `/v1` base URL of each provider, e.g. http://127.0.0.1:P/openai/v1. */
  baseUrls: Record<Flavour, string>;
  /** The last 1000 requests, oldest first. */
  requests: MockRequestLog[];
  waitForRequest(tag: string, timeoutMs?: number): Promise<MockRequestLog>;
  /** Resolves when the client of the request tagged `tag` went away before the answer was complete
   * (the mock's own `abortAfterChunks` does not count). */
  waitForClientAbort(tag: string, timeoutMs?: number): Promise<void>;
  close(): Promise<void>;
}

type Json = Record<string, unknown>;

interface Knobs {
  tag: string | undefined;
  chunks: number;
  chunkText: string;
  delayMs: number;
  firstByteDelayMs: number;
  abortAfterChunks: number | undefined;
  errorAfterChunks: number | undefined;
  doneDelayMs: number;
  noUsage: boolean;
  status: number | undefined;
  failFirst: number | undefined;
  failOn: Flavour | undefined;
  retryAfter: number | undefined;
  hang: boolean;
  usageOnChoice: boolean;
  usage: Json;
}

interface UsageNumbers {
  prompt: number;
  completion: number;
  cached: number;
  cacheWrite: number;
  reasoning: number;
  cost: number;
}

/** What one streamed answer writes; frames are built once per request, never per chunk. */
interface StreamPlan {
  /** Written with the headers, before firstByteDelayMs (OpenRouter's processing comment). */
  early: string;
  /** Written before the first content chunk (OpenAI's role-only delta). */
  head: string;
  count: number;
  /** Content chunks [from, to) as one string. */
  frames(from: number, to: number): string;
  /** Finish and usage frames, without [DONE]. */
  tail: string;
  errorFrame: string;
}

/** Per response: whether the socket closed early, and whether the mock closed it on purpose. */
interface ResponseState {
  closed: boolean;
  selfDestroyed: boolean;
}

const MAX_LOG = 1000;
const FIXED_CREATED = 1_700_000_000;
const DONE = "data: [DONE]\n\n";
const OPENROUTER_COMMENT = ": OPENROUTER PROCESSING\n\n";
const FINGERPRINT = "fp_mock0000";
// OpenAI pads stream events with random characters against length side channels; a constant pad
// keeps two tagged calls byte-identical.
const OBFUSCATION = ',"obfuscation":"mOcKpAd"';
const ID_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const PREFIXES: ReadonlyArray<readonly [string, Flavour]> = [
  ["/openai/", "openai"],
  ["/openrouter/", "openrouter"],
  ["/relace/", "relace"],
];
const OPENROUTER_PROVIDERS: Record<string, string> = {
  anthropic: "Anthropic",
  google: "Google AI Studio",
  openai: "OpenAI",
  "meta-llama": "Together",
  deepseek: "DeepSeek",
  mistralai: "Mistral",
  "x-ai": "xAI",
};

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

const count = (v: unknown): number | undefined =>
  typeof v === "number" && Number.isFinite(v) && v >= 0 ? Math.floor(v) : undefined;

const objectOf = (v: unknown): Json | undefined =>
  typeof v === "object" && v !== null && !Array.isArray(v) ? (v as Json) : undefined;

function randomId(length: number): string {
  let out = "";
  for (let i = 0; i < length; i++) out += ID_CHARS[Math.floor(Math.random() * ID_CHARS.length)];
  return out;
}

function readKnobs(body: Json): Knobs {
  const m = objectOf(body.mock) ?? {};
  const status = count(m.status);
  return {
    tag: typeof m.tag === "string" ? m.tag : undefined,
    chunks: count(m.chunks) ?? 20,
    chunkText: typeof m.chunkText === "string" ? m.chunkText : " tok",
    delayMs: count(m.delayMs) ?? 0,
    firstByteDelayMs: count(m.firstByteDelayMs) ?? 0,
    abortAfterChunks: count(m.abortAfterChunks),
    errorAfterChunks: count(m.errorAfterChunks),
    doneDelayMs: count(m.doneDelayMs) ?? 0,
    noUsage: m.noUsage === true,
    status: status !== undefined && status >= 400 && status <= 599 ? status : undefined,
    failFirst: count(m.failFirst),
    failOn:
      m.failOn === "openai" || m.failOn === "openrouter" || m.failOn === "relace" ? m.failOn : undefined,
    retryAfter: count(m.retryAfter),
    hang: m.hang === true,
    usageOnChoice: m.usageOnChoice === true,
    usage: objectOf(m.usage) ?? {},
  };
}

function textLength(content: unknown): number {
  if (typeof content === "string") return content.length;
  if (!Array.isArray(content)) return 0;
  let n = 0;
  for (const part of content) {
    const text = objectOf(part)?.text;
    if (typeof text === "string") n += text.length;
  }
  return n;
}

function applyInput(body: Json): { initial: string; edit: string } {
  const initial = body.initialCode ?? body.initial_code;
  const edit = body.editSnippet ?? body.edit_snippet;
  return { initial: typeof initial === "string" ? initial : "", edit: typeof edit === "string" ? edit : "" };
}

/** Deterministic from the request: 3 + Σ (3 + ⌈chars/4⌉) over messages; ⌈chars/4⌉ of the code for Relace. */
function promptTokensOf(flavour: Flavour, body: Json): number {
  if (flavour === "relace") {
    const { initial, edit } = applyInput(body);
    return Math.ceil((initial.length + edit.length) / 4);
  }
  let n = 3;
  if (Array.isArray(body.messages)) {
    for (const m of body.messages) n += 3 + Math.ceil(textLength(objectOf(m)?.content) / 4);
  }
  // The Responses API: `input` is a string or a list of items, `instructions` a system message.
  if (typeof body.input === "string") n += 3 + Math.ceil(body.input.length / 4);
  if (Array.isArray(body.input)) {
    for (const item of body.input) n += 3 + Math.ceil(textLength(objectOf(item)?.content) / 4);
  }
  if (typeof body.instructions === "string") n += 3 + Math.ceil(body.instructions.length / 4);
  return n;
}

function usageNumbers(flavour: Flavour, body: Json, knobs: Knobs): UsageNumbers {
  const u = knobs.usage;
  const reasoning = count(u.reasoning_tokens) ?? 0;
  const prompt = count(u.prompt_tokens) ?? promptTokensOf(flavour, body);
  const completion = count(u.completion_tokens) ?? knobs.chunks + reasoning;
  const cost =
    typeof u.cost === "number" && Number.isFinite(u.cost) ? u.cost : (prompt + 2 * completion) / 1e6;
  return {
    prompt,
    completion,
    cached: count(u.cached_tokens) ?? 0,
    cacheWrite: count(u.cache_write_tokens) ?? 0,
    reasoning,
    cost,
  };
}

function openAiUsage(n: UsageNumbers): string {
  return (
    `{"prompt_tokens":${n.prompt},"completion_tokens":${n.completion},"total_tokens":${n.prompt + n.completion},` +
    `"prompt_tokens_details":{"cached_tokens":${n.cached},"audio_tokens":0},` +
    `"completion_tokens_details":{"reasoning_tokens":${n.reasoning},"audio_tokens":0,` +
    `"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}`
  );
}

function openRouterUsage(n: UsageNumbers): string {
  return (
    `{"prompt_tokens":${n.prompt},"completion_tokens":${n.completion},"total_tokens":${n.prompt + n.completion},` +
    `"cost":${n.cost},"is_byok":false,` +
    `"prompt_tokens_details":{"cached_tokens":${n.cached},"cache_write_tokens":${n.cacheWrite},"audio_tokens":0,"video_tokens":0},` +
    `"cost_details":{"upstream_inference_cost":${n.cost},"upstream_inference_prompt_cost":${n.prompt / 1e6},` +
    `"upstream_inference_completions_cost":${(2 * n.completion) / 1e6}},` +
    `"completion_tokens_details":{"reasoning_tokens":${n.reasoning},"image_tokens":0,"audio_tokens":0}}`
  );
}

/** The Responses API's usage; OpenRouter adds its charge as on chat. */
function responsesUsage(flavour: Flavour, n: UsageNumbers): string {
  const cost = flavour === "openrouter" ? `"cost":${n.cost},"is_byok":false,` : "";
  return (
    `{"input_tokens":${n.prompt},"input_tokens_details":{"cached_tokens":${n.cached}},` +
    `"output_tokens":${n.completion},"output_tokens_details":{"reasoning_tokens":${n.reasoning}},` +
    `${cost}"total_tokens":${n.prompt + n.completion}}`
  );
}

function relaceUsage(n: UsageNumbers): string {
  return `{"prompt_tokens":${n.prompt},"completion_tokens":${n.completion},"total_tokens":${n.prompt + n.completion}}`;
}

/** The provider's error body for an HTTP status: OpenAI's four fields, OpenRouter's numeric code. */
function errorBody(flavour: Flavour, status: number, message?: string): string {
  if (flavour === "openrouter") {
    const text = message ?? (status === 402 ? "Insufficient credits" : `Mock upstream answered ${status}`);
    return `{"error":{"code":${status},"message":${JSON.stringify(text)}},"user_id":"user_mock"}`;
  }
  const [type, code, text] =
    status === 401
      ? ["invalid_request_error", "invalid_api_key", "Incorrect API key provided."]
      : status === 404
        ? [
            "invalid_request_error",
            "model_not_found",
            "The model does not exist or you do not have access to it.",
          ]
        : status === 429
          ? ["requests", "rate_limit_exceeded", "Rate limit reached. Please try again in 1s."]
          : status >= 500
            ? [
                "server_error",
                null,
                "The server had an error while processing your request. Sorry about that!",
              ]
            : ["invalid_request_error", null, `Mock upstream answered ${status}`];
  return JSON.stringify({ error: { message: message ?? text, type, param: null, code } });
}

function sendJson(
  res: ServerResponse,
  status: number,
  payload: string,
  extra?: Record<string, string>,
): void {
  res.writeHead(status, {
    "content-type": "application/json",
    "content-length": Buffer.byteLength(payload),
    ...extra,
  });
  res.end(payload);
}

/** A function call the mock makes instead of answering with text. */
interface ToolCall {
  id: string;
  name: string;
  arguments: string;
}

/** A value of a JSON-schema property's type, for made-up call arguments. */
function sampleValue(schema: Json | undefined): unknown {
  if (Array.isArray(schema?.enum) && schema.enum.length > 0) return schema.enum[0];
  switch (schema?.type) {
    case "number":
    case "integer":
      return 1;
    case "boolean":
      return true;
    case "array":
      return [];
    case "object":
      return {};
    default:
      return "mock";
  }
}

/**
 * When the request offers `tools` (and `tool_choice` is not "none"), the mock calls one, as the
 * providers do: the function `tool_choice` names, else the first, with arguments made from its
 * schema's required properties. A conversation whose last message is a tool's result gets text,
 * so an agent loop tried against the mock (`npm run dev`) ends.
 */
function toolCallOf(body: Json, callId: string): ToolCall | undefined {
  const tools = Array.isArray(body.tools) ? body.tools : [];
  if (tools.length === 0 || body.tool_choice === "none") return undefined;
  const messages = Array.isArray(body.messages) ? body.messages : [];
  if (objectOf(messages.at(-1))?.role === "tool") return undefined;
  const wanted = objectOf(objectOf(body.tool_choice)?.function)?.name;
  const fn = tools
    .map((t) => objectOf(objectOf(t)?.function))
    .find((f) => typeof f?.name === "string" && (wanted === undefined || f.name === wanted));
  if (!fn) return undefined;
  const params = objectOf(fn.parameters);
  const properties = objectOf(params?.properties) ?? {};
  const required = Array.isArray(params?.required)
    ? params.required.filter((r): r is string => typeof r === "string")
    : Object.keys(properties);
  const args: Json = {};
  for (const name of required) args[name] = sampleValue(objectOf(properties[name]));
  return { id: callId, name: fn.name as string, arguments: JSON.stringify(args) };
}

/** The call's arguments in `count` pieces, as a stream sends them. */
function argumentPieces(call: ToolCall, chunks: number): string[] {
  const count = Math.max(1, Math.min(chunks, call.arguments.length));
  const size = Math.ceil(call.arguments.length / count);
  return Array.from({ length: count }, (_, i) => call.arguments.slice(i * size, (i + 1) * size));
}

function chatPlan(
  flavour: "openai" | "openrouter",
  id: string,
  created: number,
  modelJson: string,
  provider: string,
  body: Json,
  knobs: Knobs,
  numbers: UsageNumbers,
  call: ToolCall | undefined,
): StreamPlan {
  const contentJson = JSON.stringify(knobs.chunkText);
  // A tool call streams as its id and name first, then its arguments piece by piece.
  const pieces = call ? argumentPieces(call, knobs.chunks) : [];
  const callHead = call
    ? `"tool_calls":[{"index":0,"id":"${call.id}","type":"function","function":{"name":${JSON.stringify(call.name)},"arguments":""}}]`
    : "";
  const argumentDelta = (piece: string) =>
    `{"tool_calls":[{"index":0,"function":{"arguments":${JSON.stringify(piece)}}}]}`;
  const finishReason = call ? '"tool_calls"' : '"stop"';
  if (flavour === "openai") {
    const options = objectOf(body.stream_options);
    const includeUsage = options?.include_usage === true;
    const obfuscation = options?.include_obfuscation === false ? "" : OBFUSCATION;
    const head = `data: {"id":"${id}","object":"chat.completion.chunk","created":${created},"model":${modelJson},"service_tier":"default","system_fingerprint":"${FINGERPRINT}","choices":[`;
    const end = `${includeUsage ? ',"usage":null' : ""}${obfuscation}}\n\n`;
    const frame = (delta: string, finish: string) =>
      `${head}{"index":0,"delta":${delta},"logprobs":null,"finish_reason":${finish}}]${end}`;
    const content = frame(`{"content":${contentJson}}`, "null");
    const usage =
      includeUsage && !knobs.noUsage ? `${head}],"usage":${openAiUsage(numbers)}${obfuscation}}\n\n` : "";
    return {
      early: "",
      head: call
        ? frame(`{"role":"assistant","content":null,${callHead},"refusal":null}`, "null")
        : frame('{"role":"assistant","content":"","refusal":null}', "null"),
      count: call ? pieces.length : knobs.chunks,
      frames: call
        ? (from, to) =>
            pieces
              .slice(from, to)
              .map((p) => frame(argumentDelta(p), "null"))
              .join("")
        : (from, to) => content.repeat(to - from),
      tail: frame("{}", finishReason) + usage,
      errorFrame:
        'data: {"error":{"message":"The server had an error while processing your request. Sorry about that!","type":"server_error","param":null,"code":null}}\n\n',
    };
  }
  const head = `data: {"id":"${id}","object":"chat.completion.chunk","created":${created},"model":${modelJson},"provider":"${provider}","choices":[`;
  const choice = (delta: string, finish: string) =>
    `{"index":0,"delta":${delta},"finish_reason":${finish},"native_finish_reason":${finish},"logprobs":null}`;
  const content = `${head}${choice(`{"role":"assistant","content":${contentJson}}`, "null")}]}\n\n`;
  const finishChoice = choice('{"role":"assistant","content":""}', finishReason);
  const usageJson = openRouterUsage(numbers);
  const usage = knobs.noUsage
    ? ""
    : knobs.usageOnChoice
      ? `${head}${finishChoice}],"usage":${usageJson}}\n\n`
      : `${head}],"usage":${usageJson}}\n\n`;
  const chunk = (delta: string) => `${head}${choice(delta, "null")}]}\n\n`;
  return {
    early: OPENROUTER_COMMENT,
    head: call ? chunk(`{"role":"assistant","content":"",${callHead}}`) : "",
    count: call ? pieces.length : knobs.chunks,
    frames: call
      ? (from, to) =>
          pieces
            .slice(from, to)
            .map((p) => chunk(argumentDelta(p)))
            .join("")
      : (from, to) => content.repeat(to - from),
    tail: `${head}${finishChoice}]}\n\n${usage}`,
    errorFrame: `${head.slice(0, -'"choices":['.length)}"error":{"code":"server_error","message":"Provider disconnected unexpectedly"},"choices":[${choice('{"content":""}', '"error"')}]}\n\n`,
  };
}

/** One Responses API stream event, named on its `event:` line as OpenAI sends them. */
function responsesEvent(type: string, sequence: number, fields: string): string {
  return `event: ${type}\ndata: {"type":"${type}","sequence_number":${sequence}${fields ? `,${fields}` : ""}}\n\n`;
}

/**
 * A Responses API answer. `response(status, output, usage)` is the response object as the plain
 * body, `response.created` (in progress, no output, null usage) and `response.completed` carry it.
 */
function responsesParts(
  flavour: "openai" | "openrouter",
  id: string,
  created: number,
  modelJson: string,
  body: Json,
  knobs: Knobs,
  numbers: UsageNumbers,
) {
  const messageId = `msg_${id.slice("resp_".length)}`;
  const text = JSON.stringify(knobs.chunkText.repeat(knobs.chunks));
  const instructions = typeof body.instructions === "string" ? JSON.stringify(body.instructions) : "null";
  const maxOutput = count(body.max_output_tokens) ?? "null";
  const usage = knobs.noUsage ? "null" : responsesUsage(flavour, numbers);
  const part = (t: string) => `{"type":"output_text","annotations":[],"logprobs":[],"text":${t}}`;
  const message = (status: string, content: string) =>
    `{"id":"${messageId}","type":"message","status":"${status}","content":[${content}],"role":"assistant"}`;
  const response = (status: string, output: string, usageJson: string) =>
    `{"id":"${id}","object":"response","created_at":${created},"status":"${status}","background":false,` +
    `"error":null,"incomplete_details":null,"instructions":${instructions},"max_output_tokens":${maxOutput},` +
    `"max_tool_calls":null,"model":${modelJson},"output":[${output}],"parallel_tool_calls":true,` +
    `"previous_response_id":null,"prompt_cache_key":null,"reasoning":{"effort":null,"summary":null},` +
    `"safety_identifier":null,"service_tier":"default","store":true,"temperature":1.0,` +
    `"text":{"format":{"type":"text"},"verbosity":"medium"},"tool_choice":"auto","tools":[],` +
    `"top_logprobs":0,"top_p":1.0,"truncation":"disabled","usage":${usageJson},"user":null,"metadata":{}}`;
  return { messageId, text, part, message, response, usage };
}

function responsesPlan(
  flavour: "openai" | "openrouter",
  r: ReturnType<typeof responsesParts>,
  knobs: Knobs,
): StreamPlan {
  const item = `"output_index":0,"item_id":"${r.messageId}"`;
  const content = `${item},"content_index":0`;
  const inProgress = r.response("in_progress", "", "null");
  const head =
    responsesEvent("response.created", 0, `"response":${inProgress}`) +
    responsesEvent("response.in_progress", 1, `"response":${inProgress}`) +
    responsesEvent(
      "response.output_item.added",
      2,
      `"output_index":0,"item":${r.message("in_progress", "")}`,
    ) +
    responsesEvent("response.content_part.added", 3, `${content},"part":${r.part('""')}`);
  const first = 4; // sequence number of the first delta
  const delta = `${content},"delta":${JSON.stringify(knobs.chunkText)},"logprobs":[]${OBFUSCATION}`;
  const stopAt = Math.min(
    knobs.chunks,
    knobs.abortAfterChunks ?? knobs.chunks,
    knobs.errorAfterChunks ?? knobs.chunks,
  );
  const done = first + knobs.chunks;
  const completed = r.message("completed", r.part(r.text));
  return {
    early: flavour === "openrouter" ? OPENROUTER_COMMENT : "",
    head,
    count: knobs.chunks,
    frames(from, to) {
      let out = "";
      for (let i = from; i < to; i++) out += responsesEvent("response.output_text.delta", first + i, delta);
      return out;
    },
    tail:
      responsesEvent("response.output_text.done", done, `${content},"text":${r.text},"logprobs":[]`) +
      responsesEvent("response.content_part.done", done + 1, `${content},"part":${r.part(r.text)}`) +
      responsesEvent("response.output_item.done", done + 2, `"output_index":0,"item":${completed}`) +
      responsesEvent(
        "response.completed",
        done + 3,
        `"response":${r.response("completed", completed, r.usage)}`,
      ),
    errorFrame: responsesEvent(
      "error",
      first + stopAt,
      '"code":"server_error","message":"The server had an error while processing your request. Sorry about that!","param":null',
    ),
  };
}

/** An OpenAI-shaped route's answer (chat completions or Responses), written to `res`. */
type OpenAiShapedAnswer = (
  flavour: "openai" | "openrouter",
  body: Json,
  knobs: Knobs,
  res: ServerResponse,
  state: ResponseState,
) => Promise<void>;

/**
 * What every OpenAI-shaped answer is made from: the model, its time and its usage. A tagged
 * request gets a fixed id and time, so tests can compare the bytes of two calls.
 */
function answerBasis(flavour: "openai" | "openrouter", body: Json, knobs: Knobs) {
  const model = typeof body.model === "string" ? body.model : "unknown";
  return {
    model,
    modelJson: JSON.stringify(model),
    created: knobs.tag ? FIXED_CREATED : Math.floor(Date.now() / 1000),
    numbers: usageNumbers(flavour, body, knobs),
  };
}

const answerResponses: OpenAiShapedAnswer = async (flavour, body, knobs, res, state) => {
  const { modelJson, created, numbers } = answerBasis(flavour, body, knobs);
  const id = `resp_${knobs.tag ?? randomId(48)}`;
  const r = responsesParts(flavour, id, created, modelJson, body, knobs, numbers);
  if (body.stream === true) {
    const headers = { "content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache" };
    return sendStream(res, state, knobs, responsesPlan(flavour, r, knobs), headers, false);
  }
  if (!(await beforePlainAnswer(knobs, res, state))) return;
  sendJson(res, 200, r.response("completed", r.message("completed", r.part(r.text)), r.usage));
};

function applyPlan(merged: string, knobs: Knobs, numbers: UsageNumbers): StreamPlan {
  const pieces = Math.max(1, Math.min(knobs.chunks, merged.length));
  const size = Math.ceil(merged.length / pieces);
  return {
    early: "",
    head: "",
    count: pieces,
    frames(from, to) {
      let out = "";
      for (let i = from; i < to; i++) {
        out += `data: {"mergedCode":${JSON.stringify(merged.slice(i * size, (i + 1) * size))}}\n\n`;
      }
      return out;
    },
    tail: knobs.noUsage ? "" : `data: {"usage":${relaceUsage(numbers)}}\n\n`,
    errorFrame:
      'data: {"error":{"message":"The server had an error while processing your request.","type":"server_error","param":null,"code":null}}\n\n',
  };
}

/** Writes a planned stream, honouring the delay, abort and error knobs. */
async function sendStream(
  res: ServerResponse,
  state: ResponseState,
  knobs: Knobs,
  plan: StreamPlan,
  headers: Record<string, string>,
  /** Chat streams end with `[DONE]`; Responses API streams end with their last event. */
  sendDone = true,
): Promise<void> {
  const selfDestroy = (pending: string) => {
    const destroy = () => {
      state.selfDestroyed = true;
      res.destroy();
    };
    if (pending) res.write(pending, destroy);
    else destroy();
  };
  const abortAt = knobs.abortAfterChunks;
  const errorAt = knobs.errorAfterChunks;
  const stopAt = Math.min(
    plan.count,
    abortAt ?? Number.POSITIVE_INFINITY,
    errorAt ?? Number.POSITIVE_INFINITY,
  );
  const stoppedBy = stopAt === abortAt ? "abort" : stopAt === errorAt ? "error" : undefined;

  if (plan.early) {
    res.writeHead(200, headers);
    res.write(plan.early);
  }
  if (knobs.firstByteDelayMs) {
    await sleep(knobs.firstByteDelayMs);
    if (state.closed) return;
  }
  if (!res.headersSent) res.writeHead(200, headers);

  const done = async () => {
    if (knobs.doneDelayMs) {
      await sleep(knobs.doneDelayMs);
      if (state.closed) return;
    }
    res.end(sendDone ? DONE : "");
  };
  if (!knobs.delayMs) {
    // One write for the whole answer: the benchmark measures the gateway, not this mock.
    const body = plan.head + plan.frames(0, stopAt);
    if (stoppedBy === "abort") return selfDestroy(body);
    if (stoppedBy === "error") return void res.end(body + plan.errorFrame);
    res.write(body + plan.tail);
    return done();
  }
  if (plan.head) res.write(plan.head);
  for (let i = 0; i < stopAt; i++) {
    await sleep(knobs.delayMs);
    if (state.closed) return;
    res.write(plan.frames(i, i + 1));
  }
  if (stoppedBy === "abort") return selfDestroy("");
  if (stoppedBy === "error") return void res.end(plan.errorFrame);
  res.write(plan.tail);
  return done();
}

const answerChat: OpenAiShapedAnswer = async (flavour, body, knobs, res, state) => {
  const { model, modelJson, created, numbers } = answerBasis(flavour, body, knobs);
  const id =
    flavour === "openai"
      ? `chatcmpl-${knobs.tag ?? randomId(29)}`
      : `gen-${created}-${knobs.tag ?? randomId(20)}`;
  const provider = OPENROUTER_PROVIDERS[model.split("/")[0] ?? ""] ?? "Mock";
  const extra: Record<string, string> = flavour === "openrouter" ? { "x-generation-id": id } : {};
  const call = toolCallOf(body, `call_${knobs.tag ?? randomId(24)}`);

  if (body.stream === true) {
    const plan = chatPlan(flavour, id, created, modelJson, provider, body, knobs, numbers, call);
    const headers = { "content-type": "text/event-stream", "cache-control": "no-cache", ...extra };
    return sendStream(res, state, knobs, plan, headers);
  }
  if (!(await beforePlainAnswer(knobs, res, state))) return;
  const content = call ? "null" : JSON.stringify(knobs.chunkText.repeat(knobs.chunks));
  const toolCalls = call
    ? `,"tool_calls":[{"id":"${call.id}","type":"function","function":{"name":${JSON.stringify(call.name)},"arguments":${JSON.stringify(call.arguments)}}}]`
    : "";
  const finish = call ? "tool_calls" : "stop";
  const payload =
    flavour === "openai"
      ? `{"id":"${id}","object":"chat.completion","created":${created},"model":${modelJson},` +
        `"choices":[{"index":0,"message":{"role":"assistant","content":${content}${toolCalls},"refusal":null,"annotations":[]},` +
        `"logprobs":null,"finish_reason":"${finish}"}]${knobs.noUsage ? "" : `,"usage":${openAiUsage(numbers)}`},` +
        `"service_tier":"default","system_fingerprint":"${FINGERPRINT}"}`
      : `{"id":"${id}","object":"chat.completion","created":${created},"model":${modelJson},"provider":"${provider}",` +
        `"system_fingerprint":null,"choices":[{"index":0,"logprobs":null,"finish_reason":"${finish}","native_finish_reason":"${finish}",` +
        `"message":{"role":"assistant","content":${content}${toolCalls},"refusal":null,"reasoning":null}}]` +
        `${knobs.noUsage ? "" : `,"usage":${openRouterUsage(numbers)}`}}`;
  sendJson(res, 200, payload, extra);
};

/** The plain answers' knobs: wait for the first byte, or drop the socket unanswered. Says whether to answer. */
async function beforePlainAnswer(knobs: Knobs, res: ServerResponse, state: ResponseState): Promise<boolean> {
  if (knobs.firstByteDelayMs) {
    await sleep(knobs.firstByteDelayMs);
    if (state.closed) return false;
  }
  if (knobs.abortAfterChunks !== undefined) {
    state.selfDestroyed = true;
    res.destroy();
    return false;
  }
  return true;
}

async function answerApply(
  body: Json,
  knobs: Knobs,
  res: ServerResponse,
  state: ResponseState,
): Promise<void> {
  const { initial, edit } = applyInput(body);
  const merged = `${initial}\n${edit}`;
  const numbers = usageNumbers("relace", body, knobs);
  if (body.stream === true) {
    const headers = { "content-type": "text/event-stream", "cache-control": "no-cache" };
    return sendStream(res, state, knobs, applyPlan(merged, knobs, numbers), headers);
  }
  if (!(await beforePlainAnswer(knobs, res, state))) return;
  const usage = knobs.noUsage ? "" : `,"usage":${relaceUsage(numbers)}`;
  sendJson(res, 200, `{"mergedCode":${JSON.stringify(merged)}${usage}}`);
}

function modelsList(flavour: Flavour): string {
  if (flavour === "openrouter") return openRouterModelList();
  const ids = ["gpt-4.1", "gpt-4.1-mini", "gpt-4.1-nano", "o3", "o4-mini"];
  return JSON.stringify({
    object: "list",
    data: ids.map((id) => ({ id, object: "model", created: FIXED_CREATED, owned_by: "system" })),
  });
}

export async function startMockUpstream(opts: { port?: number; host?: string } = {}): Promise<MockUpstream> {
  const requests: MockRequestLog[] = [];
  const events = new EventEmitter();
  events.setMaxListeners(0);
  const aborted = new Set<string>();
  /** Per tag: how many requests the `failFirst` knob has failed so far. */
  const failed = new Map<string, number>();
  const fails = (flavour: Flavour, knobs: Knobs): boolean => {
    if (knobs.failOn !== undefined && knobs.failOn !== flavour) return false;
    if (knobs.failFirst === undefined) return true;
    const key = knobs.tag ?? "";
    const n = failed.get(key) ?? 0;
    if (n >= knobs.failFirst) return false;
    failed.set(key, n + 1);
    if (failed.size > MAX_LOG) failed.delete(failed.keys().next().value as string);
    return true;
  };

  const handle = (req: IncomingMessage, res: ServerResponse, raw: Buffer) => {
    const url = req.url ?? "/";
    const q = url.indexOf("?");
    const path = q < 0 ? url : url.slice(0, q);
    const match = PREFIXES.find(([prefix]) => path.startsWith(prefix));
    const flavour = match?.[1];
    const route = match ? path.slice(match[0].length - 1) : path;
    if (req.method === "GET" && flavour && flavour !== "relace" && route === "/v1/models") {
      return sendJson(res, 200, modelsList(flavour));
    }
    const known =
      req.method === "POST" &&
      flavour !== undefined &&
      (flavour === "relace"
        ? route === "/v1/code/apply"
        : route === "/v1/chat/completions" || route === "/v1/responses");
    if (!known || !flavour) {
      const message = JSON.stringify(`Invalid URL (${req.method} ${route})`);
      return sendJson(
        res,
        404,
        `{"error":{"message":${message},"type":"invalid_request_error","param":null,"code":null}}`,
      );
    }
    let body: Json;
    try {
      const parsed: unknown = JSON.parse(raw.toString("utf8"));
      const asObject = objectOf(parsed);
      if (!asObject) throw new SyntaxError("not an object");
      body = asObject;
    } catch {
      return sendJson(res, 400, errorBody(flavour, 400, "We could not parse the JSON body of your request."));
    }
    const knobs = readKnobs(body);
    const entry: MockRequestLog = { flavour, path, headers: req.headers, raw, body, tag: knobs.tag };
    requests.push(entry);
    if (requests.length > MAX_LOG) requests.shift();

    const state: ResponseState = { closed: false, selfDestroyed: false };
    res.on("close", () => {
      state.closed = true;
      const tag = knobs.tag;
      if (tag === undefined || res.writableFinished || state.selfDestroyed) return;
      aborted.add(tag);
      if (aborted.size > MAX_LOG) aborted.delete(aborted.values().next().value as string);
      events.emit(`abort:${tag}`);
    });
    if (knobs.tag !== undefined) events.emit(`request:${knobs.tag}`);

    if (knobs.hang) return;
    const answer = async () => {
      if (knobs.status !== undefined && fails(flavour, knobs)) {
        if (knobs.firstByteDelayMs) await sleep(knobs.firstByteDelayMs);
        // OpenAI's 401 quotes the end of the key it was given, as the real one does.
        const presented = /^Bearer (.+)$/.exec(String(req.headers.authorization ?? ""))?.[1];
        const message =
          knobs.status === 401 && flavour === "openai" && presented
            ? `Incorrect API key provided: ${presented.slice(0, 3)}*****${presented.slice(-4)}. You can find your API key at https://platform.openai.com/account/api-keys.`
            : undefined;
        const extra: Record<string, string> =
          knobs.retryAfter !== undefined ? { "retry-after": String(knobs.retryAfter) } : {};
        if (!state.closed) sendJson(res, knobs.status, errorBody(flavour, knobs.status, message), extra);
        return;
      }
      if (flavour === "relace") await answerApply(body, knobs, res, state);
      else if (route === "/v1/responses") await answerResponses(flavour, body, knobs, res, state);
      else await answerChat(flavour, body, knobs, res, state);
    };
    answer().catch(() => res.destroy());
  };

  const server = createServer((req, res) => {
    const parts: Buffer[] = [];
    req.on("data", (chunk: Buffer) => parts.push(chunk));
    req.on("end", () => handle(req, res, parts.length === 1 ? (parts[0] as Buffer) : Buffer.concat(parts)));
  });
  server.keepAliveTimeout = 60_000;
  const host = opts.host ?? "127.0.0.1";
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(opts.port ?? 0, host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const { port } = server.address() as AddressInfo;
  const url = `http://${host.includes(":") ? `[${host}]` : host}:${port}`;

  const waitFor = <T>(event: string, current: () => T | undefined, timeoutMs: number): Promise<T> =>
    new Promise((resolve, reject) => {
      const now = current();
      if (now !== undefined) return resolve(now);
      const listener = () => {
        const value = current();
        if (value === undefined) return;
        clearTimeout(timer);
        events.off(event, listener);
        resolve(value);
      };
      const timer = setTimeout(() => {
        events.off(event, listener);
        reject(new Error(`mock upstream: timed out after ${timeoutMs}ms waiting for ${event}`));
      }, timeoutMs);
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
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const { values } = parseArgs({
    options: { port: { type: "string" }, host: { type: "string" }, json: { type: "boolean" } },
  });
  const mock = await startMockUpstream({ port: Number(values.port ?? 9999), host: values.host });
  if (values.json) process.stdout.write(`${JSON.stringify({ url: mock.url, ...mock.baseUrls })}\n`);
  else process.stdout.write(`mock upstream on ${mock.url}\n  ${Object.values(mock.baseUrls).join("\n  ")}\n`);
  const stop = () => mock.close().then(() => process.exit(0));
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}
