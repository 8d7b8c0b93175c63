import type { Context } from "hono";
import { errorFrame, GatewayError, JSON_CONTENT_TYPE } from "../core/errors.ts";
import type { Admission, CallEnd, CallStart } from "../metering/meter.ts";
import { rateHeaders } from "../metering/rate-limit.ts";
import { formatUsd, usdNumber } from "../pricing/money.ts";
import { clientGone, type StreamSink, send, stream } from "./client-io.ts";
import type { JsonObject, ProviderAdapter, Usage } from "./providers/types.ts";
import { refusalError } from "./refusals.ts";
import type { Services } from "./services.ts";
import { isUsageOnlyFrame, SseTap } from "./sse.ts";
import { UpstreamError, type UpstreamResponse } from "./upstream.ts";

/** One model call, ready to go upstream. Built by the chat and apply routes. */
export interface PreparedCall {
  start: CallStart;
  provider: ProviderAdapter;
  /** Path under the provider's base URL, e.g. `/chat/completions`. */
  path: string;
  /** The exact bytes sent upstream. */
  payload: string | Uint8Array;
  apiKey: string | undefined;
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
  const { meter, upstream, calls } = services;
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
    let res: UpstreamResponse;
    try {
      res = await upstream.request({
        url: call.provider.baseUrl(services.config) + call.path,
        headers: {
          ...call.forwardHeaders,
          "content-type": "application/json",
          accept: call.start.stream ? "text/event-stream" : "application/json",
          ...(call.apiKey ? call.provider.authHeaders(call.apiKey) : {}),
        },
        body: call.payload,
        signal,
      });
    } catch (err) {
      end.upstreamError = true;
      throw upstreamFailure(err);
    }
    end.upstreamStatus = res.status;
    if (res.status >= 400) {
      end.upstreamError = true;
      throw await upstreamStatusError(res, call, services);
    }
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
          return relayStream(services, call, admission, res, sink, end, signal).finally(settle);
        },
      );
    }
    const bytes = await readAll(res, end);
    end.firstTokenAt = services.clock.now(); // a plain response's tokens all arrive with its body
    const body = parseObject(bytes);
    end.usage = body ? call.provider.readUsage(body) : undefined;
    if (!end.usage) end.responseText = Buffer.from(bytes).toString("utf8");
    const settlement = await settle();
    const cost = settlement?.cost ?? 0;
    let out: string | Uint8Array = bytes;
    if (body && typeof body.usage === "object" && body.usage !== null) {
      (body.usage as JsonObject).cost = usdNumber(cost);
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
  services.log.info("call", {
    requestId,
    orgId: org.id,
    route,
    model: model.id,
    provider: model.provider,
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
    provider: model.provider,
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

async function relayStream(
  services: Services,
  call: PreparedCall,
  admission: Admission,
  res: UpstreamResponse,
  sink: StreamSink,
  end: CallEnd,
  signal: AbortSignal,
): Promise<void> {
  const { meter, clock } = services;
  const tap = new SseTap((frame) => {
    const usage = call.provider.readUsage(frame);
    if (usage) end.usage = usage;
    if (!call.clientWantsUsage) {
      if (isUsageOnlyFrame(frame)) return { kind: "drop" };
      // Usage riding on a content frame (OpenRouter's older shape): the client did not ask for it,
      // and the provider's own `cost` in it is not what the gateway charges.
      delete frame.usage;
      return { kind: "replace", frame: `data: ${JSON.stringify(frame)}\n` };
    }
    if (!usage) return { kind: "forward" };
    (frame.usage as JsonObject).cost = usdNumber(meter.price(admission, usage as Usage));
    return { kind: "replace", frame: `data: ${JSON.stringify(frame)}\n` };
  });
  end.streamedText = () => tap.streamedText();
  try {
    await res.read((chunk) => {
      end.firstTokenAt ??= clock.now();
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
    sink.write(errorFrame(failure));
  } finally {
    sink.end();
  }
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
      provider: call.provider.name,
      upstreamStatus: res.status,
      detail: redactKeys(detail.slice(2)),
    });
    return new GatewayError(
      "upstream_auth_error",
      `the ${call.provider.name} integration is misconfigured on the gateway's side; this is not your key. Try again later`,
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
