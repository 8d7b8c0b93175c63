import { performance } from "node:perf_hooks";
import { type Dispatcher, Pool } from "undici";
import { parseUsd, usdNumberToNanos } from "../../src/pricing/money.ts";
import { type LoadtestOptions, modelSchedule } from "./options.ts";
import { errorCodeOf, SseScan } from "./sse-scan.ts";
import type { CallResult, Recorder, TimePoint } from "./stats.ts";

export interface RunTarget {
  /** Base URL of the gateway (may carry a path prefix). */
  url: string;
  key: string;
}

export interface RunShape
  extends Pick<
    LoadtestOptions,
    | "concurrency"
    | "requests"
    | "durationMs"
    | "rampMs"
    | "stream"
    | "models"
    | "promptBytes"
    | "maxTokens"
    | "timeoutMs"
    | "mock"
  > {
  /** Tags every call (x-planto-plan-id), so the run's spend can be found in the usage report. */
  runId: string;
}

export interface RunTotals {
  issued: number;
  completed: number;
  inFlight: number;
  errors: number;
  elapsedS: number;
}

export interface LoadRun {
  /** Stops sending new calls; those in flight finish. */
  stop(): void;
  /** `generatorCpu`: this process's CPU time over the run, in % of one core. */
  done: Promise<{ startedAt: Date; elapsedS: number; generatorCpu: number }>;
}

interface Watch {
  deadline: number;
  body: Dispatcher.ResponseData["body"];
  timedOut: boolean;
}

const SWEEP_MS = 100;

/** Feeds a response body to `onChunk`; rejects if it fails or closes before its end. */
function consume(body: Dispatcher.ResponseData["body"], onChunk: (chunk: Buffer) => void): Promise<void> {
  return new Promise((resolve, reject) => {
    let ended = false;
    body.on("data", onChunk);
    body.once("end", () => {
      ended = true;
      resolve();
    });
    body.once("error", reject);
    body.once("close", () => {
      if (!ended) reject(new Error("the response body closed before its end"));
    });
  });
}

const FILLER = "The quick brown fox jumps over the lazy dog while the gateway meters every token. ";

/** The user message of call `seq`: exactly `bytes` ASCII bytes, different in every call. */
export function promptOf(seq: number, bytes: number, filler: string): string {
  const label = `loadtest call ${seq}: `;
  return (label + filler).slice(0, Math.max(bytes, 1));
}

/** Request bodies per model, built once: only the prompt changes between calls. */
function bodyBuilder(shape: RunShape): (model: string, seq: number) => string {
  const filler = FILLER.repeat(Math.ceil((shape.promptBytes + 40) / FILLER.length));
  const mock = shape.mock ? `,"mock":${JSON.stringify(shape.mock)}` : "";
  const streamPart = shape.stream ? `"stream":true,"stream_options":{"include_usage":true},` : "";
  const heads = new Map<string, string>();
  for (const { model } of shape.models) {
    heads.set(
      model,
      `{"model":${JSON.stringify(model)},${streamPart}"max_tokens":${shape.maxTokens},"messages":[{"role":"user","content":"`,
    );
  }
  const tail = `"}]${mock}}`;
  return (model, seq) => `${heads.get(model)}${promptOf(seq, shape.promptBytes, filler)}${tail}`;
}

function transportCode(err: unknown, timedOut: boolean): string {
  if (timedOut) return "timeout";
  const code = (err as { code?: unknown } | null)?.code;
  if (
    code === "UND_ERR_HEADERS_TIMEOUT" ||
    code === "UND_ERR_BODY_TIMEOUT" ||
    code === "UND_ERR_CONNECT_TIMEOUT" ||
    code === "ETIMEDOUT"
  ) {
    return "timeout";
  }
  return "network";
}

/** The contract code of an error body: `error.code`, or `type` (Planto's envelope), or the status. */
export function errorBodyCode(status: number, text: string): string {
  try {
    const body = JSON.parse(text) as Record<string, unknown>;
    if (body && typeof body === "object") {
      if (body.error !== undefined) {
        const code = errorCodeOf(body.error);
        if (code !== "unknown_error") return code;
      }
      if (typeof body.type === "string" && body.type) return body.type;
    }
  } catch {
    // not JSON: the status is all there is
  }
  return `http_${status}`;
}

/**
 * Drives the load: `concurrency` workers (started one by one over the ramp), each sending its next
 * call when the last one ends, over one keep-alive undici Pool. Every call's outcome goes to the
 * recorder; `onTick` gets a TimePoint about once a second.
 */
export function startLoad(
  target: RunTarget,
  shape: RunShape,
  recorder: Recorder,
  onTick: (point: TimePoint, totals: RunTotals) => void,
): LoadRun {
  const base = new URL(target.url);
  const prefix = base.pathname.replace(/\/+$/, "");
  const path = `${prefix}/v1/chat/completions`;
  const pool = new Pool(base.origin, {
    connections: shape.concurrency,
    pipelining: 1,
    keepAliveTimeout: 30_000,
    headersTimeout: shape.timeoutMs,
    bodyTimeout: shape.timeoutMs,
  });
  const headers = {
    authorization: `Bearer ${target.key}`,
    "content-type": "application/json",
    accept: shape.stream ? "text/event-stream" : "application/json",
    "x-planto-plan-id": shape.runId,
    "x-planto-plan-name": "loadtest",
    "x-planto-purpose": "loadtest",
  };
  const schedule = modelSchedule(shape.models);
  const body = bodyBuilder(shape);
  let issued = 0;
  let inFlight = 0;
  let peakInFlight = 0; // since the last tick
  let stopped = false;
  const startedAt = new Date();
  const t0 = performance.now();
  const cpu0 = process.cpuUsage();
  const deadline = shape.durationMs === undefined ? Number.POSITIVE_INFINITY : t0 + shape.durationMs;
  const elapsedS = () => (performance.now() - t0) / 1000;

  const mayIssue = () =>
    !stopped && (shape.requests === undefined ? performance.now() < deadline : issued < shape.requests);

  // The per-call limit: until the headers, undici's headersTimeout; after them, one sweep over the
  // calls in flight (a timer and an AbortController per call cost more than the SSE scan).
  const watched = new Set<Watch>();
  const sweeper = setInterval(() => {
    const now = performance.now();
    for (const w of watched) {
      if (now < w.deadline) continue;
      w.timedOut = true;
      watched.delete(w);
      w.body.destroy(new Error("the call took longer than --timeout"));
    }
  }, SWEEP_MS);

  const call = async (seq: number, model: string): Promise<CallResult> => {
    const started = performance.now();
    let watch: Watch | undefined;
    const result: CallResult = {
      model,
      status: 0,
      errorCode: undefined,
      requestId: undefined,
      ttftMs: undefined,
      totalMs: 0,
      cost: null,
    };
    try {
      const res = await pool.request({
        path,
        method: "POST",
        headers,
        body: body(model, seq),
      });
      watch = { deadline: started + shape.timeoutMs, body: res.body, timedOut: false };
      watched.add(watch);
      result.status = res.statusCode;
      const id = res.headers["x-request-id"];
      result.requestId = typeof id === "string" ? id : undefined;
      if (res.statusCode !== 200) {
        result.errorCode = errorBodyCode(res.statusCode, await res.body.text());
      } else if (shape.stream) {
        const scan = new SseScan();
        await consume(res.body, (chunk) => scan.push(chunk, performance.now()));
        scan.end(performance.now());
        if (scan.firstContentAt !== undefined) result.ttftMs = scan.firstContentAt - started;
        if (scan.usage?.cost !== undefined) result.cost = usdNumberToNanos(scan.usage.cost);
        if (scan.error !== undefined) result.errorCode = `${scan.error} (in stream)`;
        else if (!scan.done) result.errorCode = "stream_truncated";
        else if (!scan.usage) result.errorCode = "no_usage_frame";
      } else {
        result.ttftMs = performance.now() - started;
        const cost = res.headers["x-planto-cost"];
        result.cost = typeof cost === "string" ? parseUsd(cost) : null;
        await res.body.arrayBuffer();
      }
    } catch (err) {
      result.errorCode = transportCode(err, watch?.timedOut === true);
      // A body that broke off after a 200 cost what the gateway decided; the caller was not told.
      result.cost = null;
    } finally {
      if (watch) watched.delete(watch);
    }
    result.totalMs = performance.now() - started;
    return result;
  };

  const worker = async (index: number): Promise<void> => {
    const startAt = shape.rampMs > 0 ? (shape.rampMs * index) / shape.concurrency : 0;
    if (startAt > 0) {
      await new Promise((resolve) => setTimeout(resolve, startAt));
    }
    while (mayIssue()) {
      const seq = issued++;
      inFlight += 1;
      if (inFlight > peakInFlight) peakInFlight = inFlight;
      const result = await call(seq, schedule[seq % schedule.length] ?? "");
      inFlight -= 1;
      recorder.record(result);
    }
  };

  const totals = (): RunTotals => ({
    issued,
    completed: recorder.completed,
    inFlight,
    errors: recorder.errors,
    elapsedS: elapsedS(),
  });
  let lastTick = 0;
  const tick = (at: number, extend = false) => {
    lastTick = at;
    onTick(recorder.tick(at, peakInFlight, extend), totals());
    peakInFlight = inFlight;
  };
  const ticker = setInterval(() => tick(elapsedS()), 1000);

  const done = (async () => {
    let end: number;
    try {
      await Promise.all(Array.from({ length: shape.concurrency }, (_, i) => worker(i)));
    } finally {
      end = elapsedS();
      clearInterval(ticker);
      clearInterval(sweeper);
      await pool.close().catch(() => undefined);
    }
    // The last, partial interval: its own point when it is long enough to have a rate, else
    // folded into the one before.
    tick(end, end - lastTick < 0.25);
    const cpu = process.cpuUsage(cpu0);
    const generatorCpu = Math.round(((cpu.user + cpu.system) / 1e3 / (end * 1000)) * 1000) / 10;
    return { startedAt, elapsedS: end, generatorCpu };
  })();

  return {
    stop() {
      stopped = true;
    },
    done,
  };
}
