import { collectFrameText } from "../pricing/generated-text.ts";
import type { JsonObject } from "./providers/types.ts";

const NEWLINE = 0x0a;
/** Forwarded bytes a stream keeps as they are before it keeps only their generated text. */
const RETAIN_BYTES = 8 * 1024;
/** Windows of finished streams, reused: one per call would cost an 8 KB allocation each. */
const spareWindows: Buffer[] = [];
const MAX_SPARE_WINDOWS = 64;
const DATA_PREFIX = Buffer.from("data:");
/**
 * What the tap looks for, in one pass over a chunk: a usage object (`"usage":{`; every other chunk
 * carries `"usage":null` or no usage at all), an error key, and the end of the stream. One regular
 * expression over the chunk's bytes read as latin1 (one character per byte, so its indexes are the
 * bytes') costs ~0.13 µs for a one-frame chunk and ~1.6 µs for twenty frames, against ~1.0 and ~13
 * µs for a `Buffer.indexOf` per marker: V8 compiles the expression to machine code, while each
 * `indexOf` is a call into C++ and a pass of its own.
 */
const MARKERS = /"usage": ?\{|"error"|data: \[DONE\]/g;

/** What to do with a frame that carries a usage object. */
export type UsageFrameAction =
  | { kind: "forward" } // send the frame's bytes unchanged
  | { kind: "drop" } // the client did not ask for it
  | { kind: "replace"; frame: string }; // the frame with fields added (the gateway's `cost`)

/**
 * Taps an upstream SSE byte stream on its way to the client. Bytes of complete lines are passed on
 * as the same buffers they arrived in (sub-arrays, no copies); only an unfinished last line is held
 * back until its end arrives. A line is parsed only when it carries a usage object, so the JSON of
 * ordinary content chunks is never decoded on the hot path.
 *
 * Until a usage frame is seen, what was forwarded is kept, so that a stream that ends without one
 * (interrupted, cancelled, or a provider without usage) can still be counted from the text actually
 * sent: the bytes themselves while they fit in a window of RETAIN_BYTES, then only the generated
 * text decoded from them. A long stream thus keeps a few bytes a token, not every frame it sent.
 * The window is a copy: keeping the socket's own small read buffers alive scatters them over the
 * allocator's heap, which cost 70-110 MB of RSS with 2,000 slow streams open.
 */
export class SseTap {
  private pending: Buffer | null = null;
  /** Until a usage frame is seen: the forwarded bytes not yet digested into text. */
  private retaining = true;
  private window: Buffer | undefined;
  private windowBytes = 0;
  /** Generated text of the frames no longer retained. */
  private readonly digested: string[] = [];
  usageFrame: JsonObject | undefined;
  /** The upstream sent `data: [DONE]`: the stream ended as the provider meant it to. */
  done = false;
  /** The upstream sent an error frame mid-stream. */
  upstreamError: JsonObject | undefined;

  /**
   * @param usageHolder The object of a frame that carries its `usage`: the frame itself for chat
   *   (the default), the `response` of a Responses API event.
   */
  constructor(
    private readonly onUsage: (frame: JsonObject) => UsageFrameAction,
    private readonly usageHolder: (frame: JsonObject) => unknown = (frame) => frame,
  ) {}

  /** Feeds one upstream chunk; returns the buffers to write to the client, in order. */
  push(chunk: Uint8Array): Buffer[] {
    let data = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    if (this.pending) {
      data = Buffer.concat([this.pending, data]);
      this.pending = null;
    }
    const lastNewline = data.lastIndexOf(NEWLINE);
    if (lastNewline < 0) {
      this.pending = data;
      return [];
    }
    let complete = data;
    if (lastNewline + 1 < data.length) {
      this.pending = Buffer.from(data.subarray(lastNewline + 1));
      complete = data.subarray(0, lastNewline + 1);
    }
    const out = this.scan(complete);
    this.retain(out);
    return out;
  }

  /** Whatever is still held back when the upstream ends (a last line without its newline). */
  flush(): Buffer[] {
    if (!this.pending) return [];
    const rest = this.pending;
    this.pending = null;
    const out = this.scan(rest);
    this.retain(out);
    return out;
  }

  /** The text generated in everything forwarded so far; empty once a usage frame was seen. */
  streamedText(): string {
    if (!this.retaining) return "";
    this.digestWindow();
    this.releaseWindow(); // asked for at the end of the stream
    return this.digested.join("");
  }

  /** Copies forwarded bytes (whole lines) into the window, digesting it when they do not fit. */
  private retain(out: Buffer[]): void {
    if (!this.retaining) return;
    for (const b of out) {
      if (this.windowBytes + b.length > RETAIN_BYTES) {
        this.digestWindow();
        if (b.length > RETAIN_BYTES) {
          this.digest(b);
          continue;
        }
      }
      this.window ??= spareWindows.pop() ?? Buffer.allocUnsafeSlow(RETAIN_BYTES);
      b.copy(this.window, this.windowBytes);
      this.windowBytes += b.length;
    }
  }

  private releaseWindow(): void {
    if (this.window && spareWindows.length < MAX_SPARE_WINDOWS) spareWindows.push(this.window);
    this.window = undefined;
    this.windowBytes = 0;
  }

  private digestWindow(): void {
    if (!this.window || this.windowBytes === 0) return;
    this.digest(this.window.subarray(0, this.windowBytes));
    this.windowBytes = 0;
  }

  /**
   * Decodes the generated text of whole SSE lines into `digested`, as one string: a token's text
   * kept as a string of its own costs ~24 bytes of heap for a few characters (2,000 slow streams
   * held 248,000 of them, 5.8 MB, half-way through `npm run bench:memory`).
   */
  private digest(lines: Buffer): void {
    const pieces: string[] = [];
    for (const line of lines.toString("utf8").split("\n")) {
      if (line.startsWith("data:")) collectFrameText(line.slice(5).trimStart(), pieces);
    }
    if (pieces.length > 0) this.digested.push(pieces.join(""));
  }

  /**
   * Finds the lines that carry a usage object or an error with one pass of MARKERS over the whole
   * buffer (not per line: a chunk of twenty frames is one buffer), then acts on those lines only.
   */
  private scan(bytes: Buffer): Buffer[] {
    const lines = this.markedLines(bytes);
    if (lines === undefined) return [bytes];
    const out: Buffer[] = [];
    let kept = 0; // start of the run of bytes still to forward unchanged
    for (const { start, end, usage } of lines) {
      if (start < kept) continue;
      const action = this.inspectLine(bytes.subarray(start, end), usage);
      if (action.kind === "forward") continue;
      if (start > kept) out.push(bytes.subarray(kept, start));
      if (action.kind === "replace") out.push(Buffer.from(action.frame));
      kept = end;
      // A dropped frame takes its blank separator line with it.
      if (action.kind === "drop" && bytes[kept] === NEWLINE) kept += 1;
      else if (action.kind === "drop" && bytes[kept] === 0x0d && bytes[kept + 1] === NEWLINE) kept += 2;
    }
    if (kept === 0) return [bytes];
    if (kept < bytes.length) out.push(bytes.subarray(kept));
    return out;
  }

  private inspectLine(line: Buffer, hasUsage: boolean): UsageFrameAction {
    if (
      line.length < DATA_PREFIX.length ||
      line.compare(DATA_PREFIX, 0, DATA_PREFIX.length, 0, DATA_PREFIX.length) !== 0
    ) {
      return { kind: "forward" };
    }
    let frame: unknown;
    try {
      frame = JSON.parse(line.subarray(DATA_PREFIX.length).toString("utf8"));
    } catch {
      return { kind: "forward" };
    }
    if (typeof frame !== "object" || frame === null) return { kind: "forward" };
    const obj = frame as JsonObject;
    const error = frameError(obj);
    if (error) {
      this.upstreamError = error;
      return { kind: "forward" };
    }
    if (!hasUsage) return { kind: "forward" };
    const holder = this.usageHolder(obj) as JsonObject | undefined;
    if (typeof holder?.usage !== "object" || holder.usage === null) return { kind: "forward" };
    this.usageFrame = obj;
    this.retaining = false;
    this.releaseWindow();
    return this.onUsage(obj);
  }

  /**
   * The lines of `bytes` that hold a usage object or an error key, in order (undefined for none);
   * notes the end of the stream on the way.
   */
  private markedLines(bytes: Buffer): MarkedLine[] | undefined {
    const text = bytes.toString("latin1");
    let lines: MarkedLine[] | undefined;
    MARKERS.lastIndex = 0;
    for (let m = MARKERS.exec(text); m !== null; m = MARKERS.exec(text)) {
      const found = m[0];
      if (found.charCodeAt(0) === 0x64 /* d */) {
        this.done = true;
        continue;
      }
      const usage = found.charCodeAt(1) === 0x75; /* u */
      const start = text.lastIndexOf("\n", m.index) + 1;
      // Matches come in order: one on the line of the last marked line belongs to it.
      const last = lines?.[lines.length - 1];
      if (last?.start === start) {
        last.usage ||= usage;
        continue;
      }
      const newline = text.indexOf("\n", m.index);
      lines ??= [];
      lines.push({ start, end: newline < 0 ? bytes.length : newline + 1, usage });
    }
    return lines;
  }
}

interface MarkedLine {
  start: number;
  /** Just past the line's newline (or the end of the buffer). */
  end: number;
  /** The line carries a usage object (else only an error key). */
  usage: boolean;
}

/**
 * The error a frame reports, if any. OpenAI's chat error frame is `{error}` alone; OpenRouter's also
 * carries choices (finish_reason "error"); the Responses API sends an `error` event, or ends with
 * `response.failed` whose response holds the error.
 */
function frameError(frame: JsonObject): JsonObject | undefined {
  if (typeof frame.error === "object" && frame.error !== null) return frame.error as JsonObject;
  if (frame.type === "error") return frame;
  if (frame.type === "response.failed") {
    const error = (frame.response as JsonObject | undefined)?.error;
    return typeof error === "object" && error !== null ? (error as JsonObject) : frame;
  }
  return undefined;
}

/** True when a usage frame carries nothing but usage (OpenAI's `choices: []` frame). */
export function isUsageOnlyFrame(frame: JsonObject): boolean {
  return Array.isArray(frame.choices) && frame.choices.length === 0;
}
