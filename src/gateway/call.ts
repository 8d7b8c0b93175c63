import type { Context } from "hono";
import { withinMs } from "../core/clock.ts";
import { errorFrame, GatewayError, JSON_CONTENT_TYPE } from "../core/errors.ts";
import type { Admission, CallEnd, CallStart } from "../metering/meter.ts";
import { rateHeaders } from "../metering/rate-limit.ts";
import type { CatalogModel } from "../pricing/catalog.ts";
import { formatUsd, usdNumber } from "../pricing/money.ts";
import { clientGone, type StreamSink, send, stream } from "./client-io.ts";
import type { JsonObject, ProviderAdapter, Usage } from "./providers/types.ts";
import { refusalError } from "./refusals.ts";
import type { Services } from "./services.ts";
import { isUsageOnlyFrame, SseTap } from "./sse.ts";
import { UpstreamError, type UpstreamResponse } from "./upstream.ts";

/** One way to serve a call: a provider, the model's price there, and the request shaped for it. */
export interface CallRoute {
  /** The model as this route serves and prices it (the catalogue model, or one of its fallbacks). */
  model: CatalogModel;
  provider: ProviderAdapter;
  /**
   * The exact bytes sent upstream. A function: a fallback's body is built only if the call gets to
   * it (a re-parse of the client's bytes, shaped for that provider), not on every call.
   */
  payload: () => string | Uint8Array;
  apiKey: string | undefined;
}

/** Where a wire format keeps usage, and how it reports a failure mid-stream. */
export interface Wire {
  /** Usage reported in a response body or stream frame, read by the serving provider. */
  readUsage(provider: ProviderAdapter, payload: JsonObject): Usage | undefined;
  /** The object of a body or frame that holds `usage` (where the gateway adds its `cost`). */
  usageHolder(payload: JsonObject): JsonObject | undefined;
  /** The frame that tells a streaming client the upstream failed, after `lastChunk` was relayed. */
  errorFrame(err: GatewayError, lastChunk?: Uint8Array): string;
}

/** Chat completions and Relace apply: usage at the top of the body or frame. */
export const chatWire: Wire = {
  readUsage: (provider, payload) => provider.readUsage(payload),
  usageHolder: (payload) => payload,
  errorFrame,
};

/** One model call, ready to go upstream. Built by the inference routes. */
export interface PreparedCall {
  start: CallStart;
  /** Tried in order until one answers: the model's own route, then its fallbacks. */
  routes: CallRoute[];
  /** Path under the provider's base URL, e.g. `/chat/completions`. */
  path: string;
  wire: Wire;
  /** Client headers the provider is given (an allow-list; never the client's key). */
  forwardHeaders: Record<string, string>;
  /** The client asked for the usage frame (it then gets it, with `cost` added). */
  clientWantsUsage: boolean;
}

/**
 * Runs an admitted call: sends it upstream, relays the answer, and settles the money exactly once,
 * whatever happened in between: in `finally`, or, once a stream's pump has started, when the pump
 * ends. On Node the pump ends before `stream()` returns; on web runtimes `stream()` returns the
 * Response at once and the pump fills it afterwards (kept alive by waitUntil), so settling in
 * `finally` there would charge a stream before a byte of it was read.
 */
export async function runCall(c: Context, services: Services, call: PreparedCall): Promise<Response> {
  const { meter, calls } = services;
  const admitted = await meter.admit(call.start);
  if (!admitted.ok) throw refusalError(admitted.refusal);
  const { admission } = admitted;
  calls.enter();
  const signal = clientGone(c);
  const end: CallEnd = {
    usage: undefined,
    upstreamStatus: undefined,
    firstTokenAt: undefined,
    endedAt: 0,
    stoppedEarly: false,
    clientCancelled: false,
    upstreamError: false,
  };
  let settled = false;
  let pumpSettles = false;
  let status = 200;
  const settle = async () => {
    if (settled) return undefined;
    settled = true;
    end.endedAt = services.clock.now();
    end.clientCancelled ||= signal.aborted;
    try {
      const settlement = await meter.settle(admission, end);
      record(
        services,
        call,
        end,
        status,
        settlement.cost > 0 && settlement.balance !== undefined ? settlement.cost : 0,
      );
      return settlement;
    } finally {
      calls.leave();
    }
  };

  try {
    const { res, route } = await connect(services, call, end, signal);
    const headers: Record<string, string> = admission.rate
      ? { "x-request-id": call.start.requestId, ...rateHeaders(admission.rate) }
      : { "x-request-id": call.start.requestId };
    if (call.start.stream && res.contentType.includes("text/event-stream")) {
      return await stream(
        c,
        200,
        {
          ...headers,
          "content-type": res.contentType,
          "cache-control": "no-cache",
          "x-accel-buffering": "no",
        },
        (sink) => {
          pumpSettles = true;
          return relayStream(services, call, route, admission, res, sink, end, signal).finally(async () => {
            // The response ends once its charge is applied (or after END_WAITS_FOR_SETTLE_MS): a
            // client that read it to the end sees its balance debited, and its next request on
            // this connection does not race this settle's store round trip, which added ~0.9 ms to
            // that request's time to first token (`npm run bench`).
            const settled = settle();
            await withinMs(settled, END_WAITS_FOR_SETTLE_MS, undefined);
            sink.end();
            await settled;
          });
        },
      );
    }
    const bytes = await readAll(res, end);
    end.firstTokenAt = services.clock.now(); // a plain response's tokens all arrive with its body
    const body = parseObject(bytes);
    end.usage = body ? call.wire.readUsage(route.provider, body) : undefined;
    if (!end.usage) end.responseText = Buffer.from(bytes).toString("utf8");
    const settlement = await settle();
    const cost = settlement?.cost ?? 0;
    let out: string | Uint8Array = bytes;
    const holder = body && call.wire.usageHolder(body);
    if (body && typeof holder?.usage === "object" && holder.usage !== null) {
      (holder.usage as JsonObject).cost = usdNumber(cost);
      out = JSON.stringify(body);
    }
    const costHeaders: Record<string, string> = { ...headers, "x-planto-cost": formatUsd(cost) };
    if (settlement?.balance !== undefined) costHeaders["x-planto-balance"] = formatUsd(settlement.balance);
    return send(c, 200, { ...costHeaders, "content-type": res.contentType || JSON_CONTENT_TYPE }, out);
  } catch (err) {
    status = err instanceof GatewayError ? err.status : 500;
    throw err;
  } finally {
    if (!pumpSettles) await settle();
  }
}

/** Counts the call and its timings, and logs its one line (never its key or prompt). */
function record(services: Services, call: PreparedCall, end: CallEnd, status: number, debited: number): void {
  const { metrics } = services;
  const { route, model, startedAt, requestId, org } = call.start;
  const provider = (end.servedBy ?? model).provider;
  services.log.info("call", {
    requestId,
    orgId: org.id,
    route,
    model: model.id,
    provider,
    attempts: end.attempts,
    stream: call.start.stream,
    status,
    promptTokens: end.usage?.promptTokens,
    completionTokens: end.usage?.completionTokens,
    cost: formatUsd(debited),
    ttftMs: end.firstTokenAt === undefined ? null : end.firstTokenAt - startedAt,
    totalMs: end.endedAt - startedAt,
    clientCancelled: end.clientCancelled,
    stoppedEarly: end.stoppedEarly,
  });
  metrics.recordCall({
    route,
    model: model.id,
    provider,
    status,
    durationSeconds: (end.endedAt - startedAt) / 1000,
    timeToFirstTokenSeconds:
      end.firstTokenAt === undefined ? undefined : (end.firstTokenAt - startedAt) / 1000,
  });
  if (debited > 0) {
    metrics.debits.inc();
    metrics.debitedUsd.inc(debited / 1e9);
  }
}

/** How long a streamed response's end waits for its settle (a slow or unreachable store: the journal keeps it). */
const END_WAITS_FOR_SETTLE_MS = 100;

async function relayStream(
  services: Services,
  call: PreparedCall,
  route: CallRoute,
  admission: Admission,
  res: UpstreamResponse,
  sink: StreamSink,
  end: CallEnd,
  signal: AbortSignal,
): Promise<void> {
  const { meter, clock } = services;
  const { wire } = call;
  const tap = new SseTap((frame) => {
    const usage = wire.readUsage(route.provider, frame);
    if (usage) end.usage = usage;
    if (!call.clientWantsUsage) {
      if (isUsageOnlyFrame(frame)) return { kind: "drop" };
      // Usage riding on a content frame (OpenRouter's older shape): the client did not ask for it,
      // and the provider's own `cost` in it is not what the gateway charges.
      delete frame.usage;
      return { kind: "replace", frame: `data: ${JSON.stringify(frame)}\n` };
    }
    const holder = wire.usageHolder(frame);
    if (!usage || !holder) return { kind: "forward" };
    (holder.usage as JsonObject).cost = usdNumber(meter.price(admission, usage, route.model));
    return { kind: "replace", frame: `data: ${JSON.stringify(frame)}\n` };
  }, wire.usageHolder);
  end.streamedText = () => tap.streamedText();
  let lastChunk: Uint8Array | undefined;
  try {
    await res.read((chunk) => {
      end.firstTokenAt ??= clock.now();
      lastChunk = chunk;
      let pending: Promise<void> | undefined;
      for (const out of tap.push(chunk)) pending = sink.write(out) ?? pending;
      return pending;
    });
    for (const out of tap.flush()) sink.write(out);
    end.stoppedEarly = !tap.done && !end.usage;
    if (tap.upstreamError) end.upstreamError = true;
  } catch (err) {
    end.stoppedEarly = true;
    if (signal.aborted) return;
    end.upstreamError = true;
    const failure = upstreamFailure(err);
    sink.write(wire.errorFrame(failure, lastChunk));
  }
}

/**
 * Sends the call upstream, route after route, until one answers. A refused or dropped connection,
 * a 429 or a 5xx is retried on the same route (UPSTREAM_ATTEMPTS tries, jittered exponential
 * backoff, or the provider's `retry-after` when it is within UPSTREAM_RETRY_MAX_MS), then the next
 * route is tried at once. All of this happens before the first byte reaches the client: once an
 * upstream answered with a success, the call is committed to it. Any other answer (a 4xx, a
 * timeout) is final: the provider looked at the request, and another try would be charged again.
 */
async function connect(
  services: Services,
  call: PreparedCall,
  end: CallEnd,
  signal: AbortSignal,
): Promise<{ res: UpstreamResponse; route: CallRoute }> {
  const { config, sleeper, log } = services;
  let failure: GatewayError | undefined;
  for (const route of call.routes) {
    for (let attempt = 1; attempt <= config.UPSTREAM_ATTEMPTS; attempt++) {
      const outcome = await attemptOnce(services, call, route, end, signal);
      if (outcome.ok) return { res: outcome.res, route };
      failure = outcome.failure;
      if (!outcome.retry) throw failure;
      log.warn("upstream attempt failed", {
        requestId: call.start.requestId,
        provider: route.provider.name,
        attempt: end.attempts,
        status: end.upstreamStatus,
        error: failure.message,
      });
      if (attempt === config.UPSTREAM_ATTEMPTS) break;
      const delay = outcome.retryAfterMs ?? backoff(attempt, config.UPSTREAM_RETRY_BASE_MS);
      // A provider that asks for a longer pause than a call may wait gets none: the next route.
      if (delay > config.UPSTREAM_RETRY_MAX_MS) break;
      await sleeper.sleep(delay, signal);
      if (signal.aborted) throw failure;
    }
  }
  throw failure ?? new GatewayError("upstream_error", "no provider route can serve this model");
}

type Attempt =
  | { ok: true; res: UpstreamResponse }
  | { ok: false; failure: GatewayError; retry: boolean; retryAfterMs?: number | undefined };

/** One request to one route; says whether its failure may be retried. */
async function attemptOnce(
  services: Services,
  call: PreparedCall,
  route: CallRoute,
  end: CallEnd,
  signal: AbortSignal,
): Promise<Attempt> {
  end.attempts = (end.attempts ?? 0) + 1;
  end.servedBy = route.model;
  end.upstreamStatus = undefined;
  end.upstreamError = true;
  let res: UpstreamResponse;
  try {
    res = await services.upstream.request({
      url: route.provider.baseUrl(services.config) + call.path,
      headers: {
        ...call.forwardHeaders,
        "content-type": "application/json",
        accept: call.start.stream ? "text/event-stream" : "application/json",
        ...(route.apiKey ? route.provider.authHeaders(route.apiKey) : {}),
      },
      body: route.payload(),
      signal,
    });
  } catch (err) {
    const retry = err instanceof UpstreamError && RETRIED_FAILURES.has(err.failure) && !signal.aborted;
    return { ok: false, failure: upstreamFailure(err), retry };
  }
  end.upstreamStatus = res.status;
  if (res.status < 400) {
    end.upstreamError = false;
    return { ok: true, res };
  }
  const retryAfterMs = retryAfter(res, services.clock.now());
  const failure = await upstreamStatusError(res, call, route, services);
  return { ok: false, failure, retry: res.status === 429 || res.status >= 500, retryAfterMs };
}

/** Failures before any answer, where the provider cannot have started the work. */
const RETRIED_FAILURES: ReadonlySet<UpstreamError["failure"]> = new Set(["refused", "network"]);

/** Full jitter over an exponential ceiling: retries of many calls do not arrive together. */
function backoff(attempt: number, baseMs: number): number {
  return Math.floor(Math.random() * baseMs * 2 ** (attempt - 1));
}

/** The provider's `retry-after-ms` (OpenAI) or `retry-after` (seconds or an HTTP date), in ms. */
function retryAfter(res: UpstreamResponse, now: number): number | undefined {
  const ms = Number(res.header("retry-after-ms"));
  if (res.header("retry-after-ms") && Number.isFinite(ms) && ms >= 0) return Math.ceil(ms);
  const value = res.header("retry-after");
  if (!value) return undefined;
  const seconds = Number(value);
  if (Number.isFinite(seconds) && seconds >= 0) return Math.ceil(seconds * 1000);
  const date = Date.parse(value);
  return Number.isNaN(date) ? undefined : Math.max(0, date - now);
}

async function readAll(res: UpstreamResponse, end: CallEnd): Promise<Uint8Array> {
  try {
    return await res.bytes();
  } catch (err) {
    end.upstreamError = true;
    end.stoppedEarly = true;
    throw upstreamFailure(err);
  }
}

function upstreamFailure(err: unknown): GatewayError {
  if (err instanceof GatewayError) return err;
  if (err instanceof UpstreamError) return new GatewayError("upstream_error", err.message);
  return new GatewayError("upstream_error", "upstream request failed");
}

/**
 * The upstream's 4xx (and 429) pass through with its status; anything else is a 502. A 401 or 403
 * on an integrated call means the provider refused the gateway's own key: the caller did nothing
 * wrong and must not read the provider's text (it quotes the key's last characters), so it gets a
 * 502 `upstream_auth_error` and the text goes to the log, redacted. A BYO call's 401 is about the
 * caller's own key and passes through as it is.
 */
async function upstreamStatusError(
  res: UpstreamResponse,
  call: PreparedCall,
  route: CallRoute,
  services: Services,
): Promise<GatewayError> {
  let detail = "";
  try {
    const body = parseObject(await res.bytes());
    const error = body?.error;
    if (typeof error === "object" && error !== null && typeof (error as JsonObject).message === "string") {
      detail = `: ${(error as JsonObject).message as string}`;
    } else if (typeof error === "string") {
      detail = `: ${error}`;
    }
  } catch {
    // the status alone says enough
  }
  if ((res.status === 401 || res.status === 403) && call.start.byoKey === undefined) {
    services.log.error("the provider refused the gateway's key", {
      requestId: call.start.requestId,
      provider: route.provider.name,
      upstreamStatus: res.status,
      detail: redactKeys(detail.slice(2)),
    });
    return new GatewayError(
      "upstream_auth_error",
      `the ${route.provider.name} integration is misconfigured on the gateway's side; this is not your key. Try again later`,
    );
  }
  const status = res.status >= 400 && res.status < 500 ? res.status : 502;
  return new GatewayError("upstream_error", `upstream answered ${res.status}${detail}`, { status });
}

/** Masks anything shaped like an api key (`sk-…a111`, bearer tokens) in a provider's text. */
export function redactKeys(text: string): string {
  return text
    .replace(/\b(sk|rk|pk|rlc|sk-or|sk-proj)[-_][A-Za-z0-9*_.…-]{2,}/gi, "[redacted key]")
    .replace(/\bBearer\s+\S+/gi, "Bearer [redacted]");
}

function parseObject(bytes: Uint8Array): JsonObject | undefined {
  try {
    const value: unknown = JSON.parse(
      Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("utf8"),
    );
    return typeof value === "object" && value !== null && !Array.isArray(value)
      ? (value as JsonObject)
      : undefined;
  } catch {
    return undefined;
  }
}
